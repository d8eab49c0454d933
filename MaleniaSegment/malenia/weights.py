"""Weights as safetensors + a JSON model card. Never pickle; always verify the hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from malenia.errors import WeightsError
from malenia.inference.lesion_rules import DENSITY_SIDES, KEEP_MEASURES
from malenia.model import MaleniaConfig, MaleniaNet


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(
    model: MaleniaNet, path: Path, card: dict | None = None, half: bool = False
) -> Path:
    """Write ``path`` (.safetensors) and its model card (.json, with the file's sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    temporary = path.with_suffix(".tmp")
    save_file(state, str(temporary), metadata={"format": "pt", "architecture": "MaleniaNet"})
    temporary.replace(path)
    write_card(model, path, card, "float16" if half else "float32")
    return path


def write_card(model: MaleniaNet, path: Path, card: dict | None, dtype: str) -> None:
    """The model card of the weights file ``path`` as it is on disk (its sha256 included)."""
    full_card = dict(card or {})
    full_card["architecture"] = "MaleniaNet"
    full_card["config"] = model.config.to_dict()
    full_card["dtype"] = dtype
    full_card["weights_file"] = Path(path).name
    full_card["sha256"] = sha256_of(path)
    card_path(path).write_text(json.dumps(full_card, indent=1), encoding="utf-8")


def read_card(path: Path) -> dict:
    card_file = card_path(path)
    if not card_file.is_file():
        raise WeightsError(
            f"Model card {card_file} is missing; weights and card must be copied together."
        )
    try:
        return json.loads(card_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise WeightsError(
            f"Model card {card_file} is not valid JSON ({error}); reinstall the weights."
        ) from error


# The card's calibrated cuts (``malenia calibrate``), each a probability when present.
CARD_THRESHOLDS = (
    "threshold", "roi_threshold", "lung_threshold", "unlocated_threshold", "organ_lesion_threshold",
)  # fmt: skip


# The card's calibrated lesion rules (``malenia.inference.lesion_rules``): (low, high] each.
CARD_RULES = {
    "lung_keep_share": (0.0, 1.0), "organ_growth_mm": (0.0, 100.0), "organ_fat_hu": (-500.0, 0.0),
    "organ_density_contrast_hu": (-100.0, 100.0),
}  # fmt: skip
# The card's rule options that are a choice, not a number: the choices of each.
CARD_CHOICES = {
    "lung_keep_by": KEEP_MEASURES, "organ_lesion_faint_only": (True, False),
    "organ_density_sides": DENSITY_SIDES,
}  # fmt: skip


def check_card_thresholds(card: dict, path: Path) -> None:
    """Refuse a card whose calibrated cuts are not probabilities, or whose lesion rules are
    out of range, at load rather than at the first query (the sha256 guards the tensors, not
    the card's own fields)."""
    postprocess = card.get("postprocess") or {}
    for key, choices in CARD_CHOICES.items():
        value = postprocess.get(key)
        same_kind = isinstance(value, bool) == isinstance(choices[0], bool)  # 1 is not True
        if value is not None and not (same_kind and value in choices):
            raise WeightsError(
                f"The model card of {path} sets postprocess.{key} to {value!r}, but it must be one "
                f"of {list(choices)}: reinstall the weights, or calibrate them again "
                "(`malenia calibrate`) and republish them."
            )
    bounds = {key: (0.0, 1.0) for key in CARD_THRESHOLDS} | CARD_RULES
    for key, (low, high) in bounds.items():
        value = postprocess.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        closed = key in CARD_RULES  # a rule may take its highest setting, a cut not 1
        inside = (
            number
            and low < float(value)
            and (float(value) <= high if closed else float(value) < high)
        )
        if not inside:
            kind = "a threshold lies strictly between 0 and 1" if key in CARD_THRESHOLDS else (
                f"it lies in ({low:g}, {high:g}]")  # fmt: skip
            raise WeightsError(
                f"The model card of {path} sets postprocess.{key} to {value!r}, but {kind}: "
                "reinstall the weights, or calibrate them again (`malenia calibrate`) and "
                "republish them."
            )


def load_weights(path: Path, device: str | torch.device = "cpu") -> tuple[MaleniaNet, dict]:
    """Load a model and its card; refuse missing, corrupt or tampered files."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"No model weights at {path}. The bundled weights live in Resources/Weights/; "
            "train your own with `malenia train` or pass --weights PATH."
        )
    card = read_card(path)
    check_card_thresholds(card, path)
    actual = sha256_of(path)
    if card.get("sha256") != actual:
        raise WeightsError(
            f"Weights file {path} does not match its model card (sha256 {actual[:12]}... != "
            f"{str(card.get('sha256'))[:12]}...): the file is corrupt or was replaced. Reinstall it."
        )
    try:
        state = load_file(str(path))
        model = MaleniaNet(MaleniaConfig.from_dict(card["config"]))
        missing, unexpected = model.load_state_dict(
            {k: v.float() for k, v in state.items()}, strict=False
        )
        missing = [k for k in missing if k not in MaleniaNet.OPTIONAL_KEYS]
        if missing or unexpected:
            raise ValueError(f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    except Exception as error:
        raise WeightsError(
            f"Weights file {path} cannot be loaded into MaleniaNet ({error})."
        ) from error
    return model.to(device).eval(), card
