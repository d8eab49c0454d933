"""`malenia train --config FILE`: train MaleniaNet on the synthetic world or real datasets.

One CPU, one GPU, or many GPUs / nodes through torchrun (torch.distributed DDP; gloo on CPU,
NCCL on GPU). Checkpoints every N steps and at --max-minutes: weights as safetensors with a
model card, optimizer state as safetensors + JSON. Resuming continues the exact sample
stream, so a run can be cut into short chunks.

The parts live in ``malenia.training`` (config, data, the tasks "lesions" and "anatomy",
checkpoints, the loop); this module is the command and the names scripts import.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from malenia.training.config import TrainConfig, learning_rate
from malenia.training.data import Batches, make_anatomy_dataset, make_dataset
from malenia.training.lesions import compute_loss, freeze_parameters, validate
from malenia.training.loop import TASKS, train

__all__ = [
    "TASKS", "Batches", "TrainConfig", "compute_loss", "freeze_parameters", "learning_rate",
    "make_anatomy_dataset", "make_dataset", "train", "validate",
]  # fmt: skip


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train MaleniaNet (torchrun for several GPUs)")
    parser.add_argument(
        "--config", type=Path, required=True, help="training config JSON (see configs/)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="checkpoint and stop after this long"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the config's total steps")
    parser.add_argument("--out", default=None, help="override the config's output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    config = TrainConfig.load(args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.out is not None:
        config.out = args.out
    train(config, max_minutes=args.max_minutes, device=args.device)
    return 0
