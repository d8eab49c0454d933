"""Seconds per training step on this machine: float32 against bfloat16 autocast, same run.

    python benchmarks/bench_training_step.py [--config configs/tiny_cpu_real24.json] [--steps 8]

Both precisions start from the same weights and see the same batches of the config's own
data (made before timing, so only the model's forward, backward and optimizer step are timed).
It prints seconds per step for each, their ratio, and how far the bfloat16 loss of the first
batch lies from the float32 one. On CPUs with AMX or AVX512-BF16 (``lscpu`` flags amx_bf16,
avx512_bf16) oneDNN runs bfloat16 convolutions natively; elsewhere bfloat16 may be slower.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))


def _cpu_flags() -> str:
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags)


def time_steps(task, model, batches: list, config) -> tuple[float, float]:
    """(seconds per step after the first, loss of the first batch) at ``config.precision``,
    each step the training loop's own ``training_step``."""
    from malenia.training.config import autocast
    from malenia.training.loop import make_optimizer, training_step

    optimizer = make_optimizer(model, config)
    amp = autocast(config, "cpu")
    times, first_loss = [], None
    for step, batch in enumerate(batches):
        torch.manual_seed(step)
        tick = time.perf_counter()
        parts = training_step(task, model, model, optimizer, batch, step, amp)
        times.append(time.perf_counter() - tick)
        if first_loss is None:
            first_loss = parts["total"]
    return sum(times[1:]) / max(len(times) - 1, 1), first_loss


def main() -> None:
    from malenia.model import MaleniaNet
    from malenia.training.config import TrainConfig
    from malenia.training.data import Batches
    from malenia.training.loop import make_task, model_config_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny_cpu_real24.json")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per precision")
    args = parser.parse_args()

    config = TrainConfig.load(args.config)
    model_config = model_config_of(config)
    device = torch.device("cpu")
    task = make_task(config, device)
    task.configure(model_config)
    torch.manual_seed(0)
    start = MaleniaNet(model_config)
    task.prepare_model(start)
    stream = Batches(task.dataset(model_config), config.batch_size, 0, 1, 0)
    batches = [stream.get(step) for step in range(args.steps + 1)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: {_cpu_flags()}"
    )
    print(f"config {args.config.name}: batch {config.batch_size}, window {model_config.patch_size}")
    results = {}
    for precision in ("float32", "bfloat16"):
        model = copy.deepcopy(start).train()
        run = dataclasses.replace(config, precision=precision)
        results[precision] = time_steps(task, model, batches, run)
        seconds, loss = results[precision]
        print(f"{precision:>9}: {seconds:.2f} s / step, first-batch loss {loss:.4f}")
    (fp32, fp32_loss), (bf16, bf16_loss) = results["float32"], results["bfloat16"]
    print(
        f"bfloat16 / float32 time: {bf16 / fp32:.2f} ({fp32 / bf16:.2f}x the steps per hour); "
        f"first-batch loss differs by {abs(bf16_loss - fp32_loss) / abs(fp32_loss):.1%}"
    )


if __name__ == "__main__":
    main()
