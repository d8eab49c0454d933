"""The parts of ``malenia train`` (``malenia/train.py``: config, data, loop, CLI): prompts,
the location head's anatomy task, checkpoints."""
