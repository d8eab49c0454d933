"""The training loop: set up (device, ranks, model, resume), then step, log and checkpoint.

Task-specific work (what learns, the data, the loss, validation) is the task's
(``malenia.training.task``); this file has no branch on the task.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from malenia.model import MaleniaConfig, MaleniaNet, count_parameters
from malenia.training.anatomy import AnatomyTask
from malenia.training.checkpoints import load_checkpoint, save_checkpoint
from malenia.training.config import TrainConfig, autocast, learning_rate
from malenia.training.data import Batches
from malenia.training.lesions import LesionTask
from malenia.training.task import Task
from malenia.weights import load_weights

TASKS: dict[str, type[Task]] = {task.name: task for task in (LesionTask, AnatomyTask)}


def make_task(config: TrainConfig, device) -> Task:
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r} ({' | '.join(TASKS)})")
    return TASKS[config.task](config, device)


def _setup_distributed(device_request: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def model_config_of(config: TrainConfig) -> MaleniaConfig:
    """The network a config asks for: a named size ("tiny") or a dict of its fields."""
    if isinstance(config.model, dict):
        return MaleniaConfig.from_dict(config.model)
    return getattr(MaleniaConfig, config.model)()


def _initialise(model: MaleniaNet, config: TrainConfig, task: Task, device) -> None:
    """Start from ``init_from``; only parameters the task may start fresh can be missing."""
    start, _ = load_weights(Path(config.init_from), device)
    missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
    new = [k for k in missing if not task.may_start_fresh(k)]
    if new or unexpected:
        raise ValueError(
            f"{config.init_from} does not fit this model: missing {new[:5]}, unexpected {unexpected[:5]}"
        )


def make_optimizer(model: MaleniaNet, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters the task left trainable."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )


def training_step(
    task: Task, model: MaleniaNet, trained, optimizer, batch, step: int, amp
) -> dict[str, float]:
    """One optimizer step: the task's loss under ``amp`` (the config's precision), backward,
    gradients clipped to norm 1, step. ``trained`` is ``model`` or its DDP wrapper. Returns the
    loss parts the log records. The benchmark times this very function."""
    with amp:
        loss, parts = task.loss(model, trained, batch, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return parts


class TrainingLog:
    """log.csv, one row per step: "step", the task's columns, "lr", "seconds", "val_dice".
    A resumed run appends under the file's own header (a column it lacks is left out, one it
    has that this run does not fill stays empty), so an older log stays readable."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        header = None
        if path.is_file() and path.stat().st_size:
            with open(path, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), None)
        self.handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.writer = csv.writer(self.handle)
        self.header = header or ["step", *columns, "lr", "seconds", "val_dice"]
        if header is None:
            self.writer.writerow(self.header)

    def write(self, values: dict) -> None:
        self.writer.writerow([values.get(column, "") for column in self.header])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def train(config: TrainConfig, max_minutes: float | None = None, device: str = "auto") -> dict:
    rank, world, torch_device = _setup_distributed(device)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = model_config_of(config)
    task = make_task(config, torch_device)
    task.configure(model_config)
    model = MaleniaNet(model_config).to(torch_device)
    task.prepare_model(model)
    optimizer = make_optimizer(model, config)
    step = 0
    if (out / "last.safetensors").is_file() and (out / "optimizer.json").is_file():
        step = load_checkpoint(out, model, optimizer, torch_device)
        if rank == 0:
            print(f"resumed from {out} at step {step}")
    elif config.init_from:
        _initialise(model, config, task, torch_device)
        if rank == 0:
            print(f"initialised from {config.init_from} (fresh optimizer)")
    if world > 1:
        for parameter in model.parameters():  # identical start on every rank
            dist.broadcast(parameter.data, 0)
    trained = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    batches = Batches(
        task.dataset(model_config), config.batch_size, rank, world, config.num_workers
    )
    amp = autocast(config, torch_device.type)
    history: dict = {"val": {}}
    started = time.time()
    progress, log = None, None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=step, desc="training", unit="step")
        log = TrainingLog(out / "log.csv", task.log_columns)
    try:
        while step < config.steps:
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(config.seed * 100_003 + step)
            batch = batches.get(step)
            tick = time.time()
            parts = training_step(task, model, trained, optimizer, batch, step, amp)
            step += 1
            history["last"] = {k: round(v, 4) for k, v in parts.items()}
            val = ""
            if rank == 0 and config.validate_every and step % config.validate_every == 0:
                val = round(task.validate(model), 4)
                history["val"][str(step)] = val
            if rank == 0:
                log.write({
                    "step": step, **{k: round(v, 5) for k, v in parts.items()}, "lr": lr,
                    "seconds": round(time.time() - tick, 3), "val_dice": val,
                })  # fmt: skip
                progress.update(1)
                progress.set_postfix(
                    loss=f"{parts['total']:.3f}",
                    **{task.headline: f"{parts.get(task.headline, math.nan):.3f}"},
                )
            out_of_time = max_minutes is not None and (time.time() - started) > max_minutes * 60
            if rank == 0 and (
                step % config.checkpoint_every == 0 or step == config.steps or out_of_time
            ):
                save_checkpoint(out, model, optimizer, step, config, history)
            if out_of_time:
                break
    finally:
        if log is not None:
            log.close()
        if progress is not None:
            progress.close()
    if world > 1:
        dist.barrier()
    history["step"] = step
    history["parameters"] = count_parameters(model)
    history["model"] = model
    if not math.isfinite(history["last"]["total"]):
        raise RuntimeError("training diverged (non-finite loss); lower the learning rate")
    return history
