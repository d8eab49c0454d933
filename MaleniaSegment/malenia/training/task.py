"""What the training loop asks of a task (nnU-Net's trainer hooks, one object per task).

``malenia.training.loop.train`` knows nothing task-specific: the task says how the model is
prepared (what learns, what stays frozen), where its windows come from, its loss and log
columns, and how it is validated. A new task is a new subclass in ``TASKS``.
"""

from __future__ import annotations

from malenia.model import MaleniaConfig, MaleniaNet
from malenia.training.config import TrainConfig
from malenia.training.prompts import Vocabulary


class Task:
    name = ""
    # log.csv columns after "step" (then lr, seconds, val_dice); ``loss`` fills them.
    log_columns: tuple[str, ...] = ("total",)
    headline = "total"  # the part the progress bar shows beside the total

    def __init__(self, config: TrainConfig, device) -> None:
        self.config, self.device = config, device
        self.vocabulary = Vocabulary(device)

    def configure(self, model_config: MaleniaConfig) -> None:
        """Change the architecture before the model is built (default: as configured)."""

    def prepare_model(self, model: MaleniaNet) -> None:
        """Before the weights load: which parameters learn."""

    def may_start_fresh(self, key: str) -> bool:
        """Whether ``init_from`` may lack this parameter (it then keeps its initial value)."""
        return key.startswith(MaleniaNet.NEUTRAL_MODULES)

    def dataset(self, model_config: MaleniaConfig):
        raise NotImplementedError

    def loss(self, model: MaleniaNet, trained, batch: list[dict], step: int):
        """(loss, parts) of one batch; ``trained`` is ``model``, DDP-wrapped on several ranks."""
        raise NotImplementedError

    def validate(self, model: MaleniaNet) -> float:
        raise NotImplementedError
