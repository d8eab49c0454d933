"""Where a run's windows come from: the dataset of each ``data.type`` and the deterministic
batch stream that makes resuming exact."""

from __future__ import annotations

from malenia.model import MaleniaConfig
from malenia.training.config import TrainConfig


def make_dataset(config: TrainConfig, model_config: MaleniaConfig, seed_offset: int = 0):
    kind = config.data.get("type", "synthetic")
    if kind == "synthetic":
        from malenia.synth import SyntheticLesionDataset

        return SyntheticLesionDataset(
            config.category_names(), seed=config.seed + seed_offset, length=10**9,
            shape=model_config.patch_size, spacing=model_config.spacing_mm,
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.0),
        )  # fmt: skip
    if kind == "real_mix":
        from malenia.data.real_mix import RealMixDataset

        return RealMixDataset(
            config.category_names(), seed=config.seed + seed_offset, shape=model_config.patch_size,
            spacing=model_config.spacing_mm, mix=config.data.get("mix"),
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.5),
            lung_contact_share=config.data.get("lung_contact_share", 0.0),
            keep_scanner_noise=config.data.get("keep_scanner_noise", False),
            phantom_scanner_noise=config.data.get("phantom_scanner_noise", False),
            slice_profile=config.data.get("slice_profile", False),
            real_synthetic_categories=config.data.get("real_synthetic_categories"),
        )  # fmt: skip
    if kind in ("msd", "kits23"):
        from malenia.data import RealLesionDataset

        return RealLesionDataset(
            config.data["root"], layout=kind, patch=model_config.patch_size, spacing=model_config.spacing_mm,
            seed=config.seed + seed_offset, categories=config.category_names(),
        )  # fmt: skip
    raise ValueError(f"unknown data type {kind!r} (synthetic | real_mix | msd | kits23)")


def make_anatomy_dataset(config: TrainConfig, model_config: MaleniaConfig):
    """The location head's windows: phantoms (data.type "synthetic", the default) or the real
    training scans' organs mixed with phantoms ("real_anatomy")."""
    kind = config.data.get("type", "synthetic")
    if kind == "synthetic":
        from malenia.synth.dataset import AnatomyDataset

        return AnatomyDataset(
            config.category_names(), config.seed, model_config.patch_size, model_config.spacing_mm,
            config.anatomy_windows,
        )  # fmt: skip
    if kind == "real_anatomy":
        from malenia.data.real_anatomy import RealAnatomyDataset

        return RealAnatomyDataset(
            config.category_names(), config.seed, model_config.patch_size, model_config.spacing_mm,
            phantom_share=config.data.get("phantom_share", 0.3),
            organ_share=config.data.get("organ_share", 0.7), distinct=config.anatomy_windows,
        )  # fmt: skip
    raise ValueError(f"unknown data type {kind!r} for the anatomy task (synthetic | real_anatomy)")


class Batches:
    """Deterministic stream: item j of step s on rank r is dataset[(s * world + r) * B + j]."""

    def __init__(self, dataset, batch_size: int, rank: int, world: int, num_workers: int) -> None:
        self.dataset, self.batch_size, self.rank, self.world = dataset, batch_size, rank, world
        self.pool = None
        if num_workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(num_workers)
        self._pending: dict[int, object] = {}

    def _indices(self, step: int) -> list[int]:
        base = (step * self.world + self.rank) * self.batch_size
        return [base + j for j in range(self.batch_size)]

    def _load(self, step: int):
        return [self.dataset[i] for i in self._indices(step)]

    def get(self, step: int) -> list[dict]:
        if self.pool is None:
            return self._load(step)
        future = self._pending.pop(step, None) or self.pool.submit(self._load, step)
        self._pending[step + 1] = self.pool.submit(self._load, step + 1)  # prefetch
        return future.result()
