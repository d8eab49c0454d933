"""The location head's training: organ targets from label maps (organs in view, sometimes one
that is not), the scanner coordinates it sees, its loss and its validation Dice."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from malenia.losses import organ_loss
from malenia.model import MaleniaNet
from malenia.training.config import step_rng
from malenia.training.task import Task

if TYPE_CHECKING:
    from malenia.training.config import TrainConfig
    from malenia.training.prompts import Vocabulary


def joint_anatomy_loss(core, out, batch, vocabulary, config, rng, device):
    """Organ loss of the location head on the shared image pass, for the items that carry
    organ labels (asked only for their ``known_locations``); None when no item has any."""
    losses = []
    for b, item in enumerate(batch):
        if "labels" not in item:
            continue
        names, targets = _asked(item, config, rng)
        if not names:
            continue
        coordinates = _coordinates(core, [item], config.coordinate_jitter_mm, rng).to(device)
        features = core.location_feature_map(out["features"].f2[b : b + 1], coordinates)
        size = tuple(item["image"].shape[1:])
        logits = _organ_logits(core, vocabulary, names, features, size)
        losses.append(organ_loss(logits, torch.from_numpy(targets).to(device)))
    return torch.stack(losses).mean() if losses else None


def _asked(item: dict, config: TrainConfig, rng: random.Random) -> tuple[list[str], np.ndarray]:
    """The locations asked of one window (only those its scan labels completely) and their
    organ masks, as the training config says."""
    return anatomy_targets(
        item["labels"], rng, config.locations_per_item, config.absent_location_prob,
        known=item.get("known_locations"),
    )  # fmt: skip


def anatomy_targets(
    labels: np.ndarray,
    rng: random.Random,
    count: int,
    absent_prob: float,
    masks: dict | None = None,
    known=None,
) -> tuple[list[str], np.ndarray]:
    """Locations to ask for in one window and their organ masks: mostly organs in view,
    sometimes one that is not (its answer is empty). ``masks`` memoises organ masks;
    ``known`` limits the question to the locations whose labels are complete."""
    from malenia.synth.anatomy import LOCATION_LABEL, organ_mask

    present_ids = set(np.unique(labels).tolist())
    askable = [n for n in LOCATION_LABEL if known is None or n in known]
    present = sorted(name for name in askable if LOCATION_LABEL[name] in present_ids)
    absent = sorted(name for name in askable if name not in present)
    if not askable:
        return [], np.zeros((0, *labels.shape), np.float32)
    chosen = rng.sample(present, min(count, len(present)))
    if absent and (rng.random() < absent_prob or not chosen):
        chosen.append(rng.choice(absent))
    masks = {} if masks is None else masks
    for name in chosen:
        if name not in masks:
            masks[name] = organ_mask(labels, name)
    return chosen, np.stack([masks[name] for name in chosen]).astype(np.float32)


def _coordinates(
    model: MaleniaNet, batch: list[dict], jitter_mm=(0.0, 0.0), rng: random.Random | None = None
) -> torch.Tensor:
    """Plane coordinates of each window from its body-frame origin (phantom centre = 0),
    each shifted by up to ``jitter_mm`` (y, x)."""
    from malenia.model.network import plane_coordinates

    spacing, shape = model.config.spacing_mm, model.config.patch_size
    rng = rng or random.Random(0)
    coordinates = []
    for item in batch:
        z, y, x = item["origin_mm"]
        shift = [rng.uniform(-j, j) for j in jitter_mm]
        origin = (z, y + shift[0], x + shift[1])
        coordinates.append(plane_coordinates(origin, spacing, shape))
    return torch.stack(coordinates)


def _organ_logits(model: MaleniaNet, vocabulary, names: list[str], location_features, size):
    """[len(names), *size] organ logits of several location phrases on one window's
    location features [1, C, ...]."""
    embeddings = torch.stack([vocabulary.table.value_embedding("location", n) for n in names])
    return model.location_logits(
        embeddings.to(location_features.device),
        location_features.expand(len(names), -1, -1, -1, -1),
        size,
    )


def compute_anatomy_loss(
    model: MaleniaNet,
    batch: list[dict],
    vocabulary: Vocabulary,
    config: TrainConfig,
    step: int,
    device,
) -> tuple[torch.Tensor, dict]:
    """Location head on frozen image features: each location phrase -> its organ's mask."""
    rng = step_rng(config, step)
    # The encoder is frozen: a kept window's F2 is computed once and stored (float16) in the
    # item the dataset keeps, in place of its image; its organ masks are not kept (a
    # comparison is cheap, hundreds of kept windows' masks are gigabytes).
    for item in batch:
        if "_f2" not in item:
            with torch.no_grad():
                image = torch.from_numpy(item["image"][None]).to(device)
                item["_f2"] = model.encode_image(image).f2[0].half()
            item["_size"] = tuple(item.pop("image").shape[1:])
    f2 = torch.stack([item["_f2"] for item in batch]).float()
    coordinates = _coordinates(model, batch, config.coordinate_jitter_mm, rng)
    location_features = model.location_feature_map(f2, coordinates)
    size = batch[0]["_size"]
    losses = []
    for b, item in enumerate(batch):
        names, targets = _asked(item, config, rng)
        if not names:
            continue
        logits = _organ_logits(model, vocabulary, names, location_features[b : b + 1], size)
        losses.append(organ_loss(logits, torch.from_numpy(targets).to(device)))
    if not losses:  # no window of this batch labels any askable organ
        zero = sum(p.sum() for p in model.location_head.parameters()) * 0.0
        return zero, {"total": 0.0, "organ": 0.0}
    loss = torch.stack(losses).mean()
    value = float(loss.detach())
    return loss, {"total": value, "organ": value}


@torch.no_grad()
def validate_anatomy(
    model: MaleniaNet, config: TrainConfig, vocabulary: Vocabulary, device
) -> float:
    """Mean organ Dice of the location head over every organ in view of fixed held-out windows."""
    from malenia.synth.dataset import AnatomyDataset

    dataset = AnatomyDataset(
        config.category_names(),
        config.seed + 999_983,
        model.config.patch_size,
        model.config.spacing_mm,
    )
    rng = random.Random(0)
    scores = []
    for index in range(config.val_samples):
        item = dataset[index]
        names, targets = anatomy_targets(item["labels"], rng, 99, 0.0)
        image = torch.from_numpy(item["image"][None]).to(device)
        location_features = model.location_feature_map(
            model.encode_image(image).f2, _coordinates(model, [item])
        )
        logits = _organ_logits(model, vocabulary, names, location_features, tuple(image.shape[2:]))
        for pred, target in zip((logits > 0).cpu().numpy(), targets > 0, strict=True):
            scores.append(2 * (pred & target).sum() / max(pred.sum() + target.sum(), 1))
    return float(np.mean(scores))


# What the anatomy task trains, and the buffer it sets (the location phrases' mean embedding).
LOCATION_HEAD_PARAMETERS = ("location_head.", "location_features.")
LOCATION_CENTRE = "location_centre"


class AnatomyTask(Task):
    """Task "anatomy": only the location head learns, on organ masks; everything else stays
    as ``init_from`` left it (the lesion behaviour is bit-identical)."""

    name = "anatomy"
    log_columns = ("total", "organ")
    headline = "organ"

    def configure(self, model_config) -> None:
        model_config.location_head = True

    def prepare_model(self, model: MaleniaNet) -> None:
        from malenia.attributes.schema import ATTRIBUTE_KEYS

        table = self.vocabulary.matrices[ATTRIBUTE_KEYS.index("location")]
        model.location_centre.copy_(table.mean(0))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(LOCATION_HEAD_PARAMETERS))

    def may_start_fresh(self, key: str) -> bool:
        return key.startswith(
            (*MaleniaNet.NEUTRAL_MODULES, *LOCATION_HEAD_PARAMETERS, LOCATION_CENTRE)
        )

    def dataset(self, model_config):
        from malenia.training.data import make_anatomy_dataset

        return make_anatomy_dataset(self.config, model_config)

    def loss(self, model, trained, batch, step):
        return compute_anatomy_loss(model, batch, self.vocabulary, self.config, step, self.device)

    def validate(self, model: MaleniaNet) -> float:
        return validate_anatomy(model, self.config, self.vocabulary, self.device)
