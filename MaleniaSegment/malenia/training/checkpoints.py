"""Checkpoints that resume a run exactly (weights + model card, optimizer state as safetensors
and JSON; never pickles) and the model card a checkpoint carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from malenia.model import MaleniaNet, count_parameters
from malenia.preprocessing import HU_WINDOW
from malenia.weights import load_weights, save_weights

if TYPE_CHECKING:
    from malenia.training.config import TrainConfig


def save_checkpoint(
    out: Path,
    model: MaleniaNet,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    history: dict,
) -> None:
    card = model_card(model, config, step, history)
    save_weights(model, out / "last.safetensors", card)
    tensors, scalars = (
        {},
        {"step": step, "param_groups": optimizer.state_dict()["param_groups"], "state": {}},
    )
    for index, state in optimizer.state_dict()["state"].items():
        scalars["state"][str(index)] = {}
        for name, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars["state"][str(index)][name] = float(value)
    save_file(tensors, str(out / "optimizer.safetensors"))
    (out / "optimizer.json").write_text(json.dumps(scalars), encoding="utf-8")


def load_checkpoint(out: Path, model: MaleniaNet, optimizer: torch.optim.Optimizer, device) -> int:
    loaded, _ = load_weights(out / "last.safetensors", device)
    model.load_state_dict(loaded.state_dict())
    scalars = json.loads((out / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(str(out / "optimizer.safetensors"))
    state = {}
    for index, values in scalars["state"].items():
        entry = {name: torch.tensor(value) for name, value in values.items()}
        for key, tensor in tensors.items():
            param, name = key.split(".", 1)
            if param == index:
                entry[name] = tensor.to(device)
        state[int(index)] = entry
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    return int(scalars["step"])


def model_card(model: MaleniaNet, config: TrainConfig, step: int, history: dict) -> dict:
    from malenia.text import TEXT_ENCODER_NAME, load_embedding_table

    return {
        "name": f"malenia-{model.config.name}",
        "parameters": count_parameters(model),
        "spacing_mm": list(model.config.spacing_mm),
        "patch_size": list(model.config.patch_size),
        "hu_window": list(HU_WINDOW),
        "text_encoder": TEXT_ENCODER_NAME,
        "embedding_table_sha256": load_embedding_table().sha256,
        "training": {
            "task": config.task,
            "data": config.data
            if config.task == "lesions"
            else {
                **config.data,
                "type": f"{config.data.get('type', 'synthetic')} anatomy",
                "windows": config.anatomy_windows,
                "targets": "organ masks of the locations each scan labels completely "
                "(no lesion labels)",
                "lesions": "training-category lesions, some moved into other organs in view",
                "coordinate_jitter_mm": list(config.coordinate_jitter_mm),
            },
            "categories": list(config.category_names()),
            "steps": step,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "seed": config.seed,
            "last_losses": history.get("last", {}),
            "validation_dice": history.get("val", {}),
            "initialised_from": _init_summary(config.init_from),
        },
    }


def _init_summary(path: str | None) -> dict | None:
    """Which weights a run started from (name, sha256, their own steps), for the card."""
    if not path:
        return None
    from malenia.weights import read_card

    card = read_card(Path(path))
    return {
        "file": Path(path).name,
        "sha256": card.get("sha256"),
        "steps": card.get("training", {}).get("steps"),
        "initialised_from": card.get("training", {}).get("initialised_from"),
    }
