"""Parameter counts, forward time per window and training throughput of MaleniaNet.

python benchmarks/bench_model.py
"""

from __future__ import annotations

import time

import torch
from malenia.model import MaleniaConfig, MaleniaNet, count_parameters


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for config in (MaleniaConfig.tiny(), MaleniaConfig.base()):
        model = MaleniaNet(config).eval()
        patch = tuple(config.patch_size)
        image = torch.randn(1, 1, *patch)
        attributes = torch.randn(1, 8, 384)
        with torch.no_grad():
            model(image, attributes)
            start = time.perf_counter()
            for _ in range(3):
                features = model.encode_image(image)
                tokens = model.mask_tokens(features)[-1]
            encode = (time.perf_counter() - start) / 3
            start = time.perf_counter()
            for _ in range(10):
                model.vector_logits(
                    model.prompt_vectors(tokens, attributes)["ensemble"], features.f4
                )
            query = (time.perf_counter() - start) / 10
        print(
            f"{config.name}: {count_parameters(model) / 1e6:.2f} M parameters; {patch} window: encode {encode:.2f} s, prompt query {query * 1000:.0f} ms"
        )
        if config.name == "tiny":
            model.train()
            optimizer = torch.optim.AdamW(model.parameters())
            start = time.perf_counter()
            for _ in range(3):
                out = model(image, attributes)
                loss = out["prompt_logits"]["ensemble"].mean() + sum(
                    m.mean() for m in out["block_masks"]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            print(
                f"tiny training step (forward + backward, batch 1): {(time.perf_counter() - start) / 3:.2f} s"
            )


if __name__ == "__main__":
    main()
