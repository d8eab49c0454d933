"""The parts of ``malenia train`` (the command is ``malenia/train.py``), one per stage of a run:

config.py       TrainConfig (configs/*.json) and the learning-rate schedule
data.py         the dataset of each data.type; the deterministic batch stream
task.py         what the loop asks of a task: prepare the model, data, loss, validation
lesions.py      task "lesions": mask tokens, alignment, prompted masks, contrast prompts
anatomy.py      task "anatomy": the location head on organ masks (and its joint loss)
prompts.py      prompt choice and targets, contrast prompts, the attribute embeddings
checkpoints.py  exact resume, weights + model card
loop.py         train(): set up, step, log, checkpoint (no branch on the task)
"""
