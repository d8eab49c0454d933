"""Organ maps from the frozen Astra encoder and a small trained head.

Stages, each a function below: (1) ``encoder_grid``: the CT resampled to the encoder's
1.5 x 1.5 x 3 mm grid (Merlin's abdominal preprocessing: RAS axis order, HU window
-1000..1000 scaled to 0..1, three channels); (2) one forward through layer3
(``EncoderFeatures``); (3) the head, a standardised MLP 1536 -> 64 -> one logit per canonical
location, evaluated on a 6 mm feature grid: its first layer is linear, so it is applied to the
layer2 and layer3 maps at their own resolution and the 64 hidden channels are upsampled,
which equals upsampling all 1536 feature channels first; (4) each location's logits resampled
onto the caller's grid (the engine's model grid) and squashed to a probability.

The head is trained by ``scripts/train_astra_organ_heads.py`` on the training scans of the
real-CT split (``malenia.data.real_ct``) and ships as ``Resources/Weights/astra-organ-heads``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from malenia.astra.encoder import CHANNELS_L2, I3ResNet152, load_encoder
from malenia.errors import WeightsError

NET_SPACING_XYZ = (1.5, 1.5, 3.0)
HU_WINDOW = (-1000.0, 1000.0)
AIR_HU = -1024.0
# Feature-grid step in input voxels, network axis order (Z, X, Y): layer2 (stride 4, 8, 8)
# upsampled twice, i.e. 6 mm in every direction.
FEATURE_STEP = (2, 4, 4)
HEADS_NAME = "astra-organ-heads"
OUTSIDE_LOGIT = -20.0  # beyond the feature grid: no organ


def default_heads_path() -> Path:
    from malenia.inference.engine import default_weights_path

    return default_weights_path().parent / f"{HEADS_NAME}.safetensors"


def encoder_grid(reference: sitk.Image) -> sitk.Image:
    """The encoder's grid over ``reference``'s extent: same origin and direction (the
    engine's LPS model grid), 1.5 x 1.5 x 3 mm."""
    size = [
        max(1, math.ceil(n * s / t))
        for n, s, t in zip(
            reference.GetSize(), reference.GetSpacing(), NET_SPACING_XYZ, strict=True
        )
    ]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(NET_SPACING_XYZ)
    grid.SetOrigin(reference.GetOrigin())
    grid.SetDirection(reference.GetDirection())
    return grid


def encoder_input(ct: sitk.Image, grid: sitk.Image) -> torch.Tensor:
    """[1, 3, Z, X, Y]: the CT resampled onto ``grid`` (``encoder_tensor``)."""
    hu = sitk.GetArrayFromImage(
        sitk.Resample(
            sitk.Cast(ct, sitk.sitkFloat32),
            grid,
            sitk.Transform(),
            sitk.sitkLinear,
            AIR_HU,
            sitk.sitkFloat32,
        )  # fmt: skip
    )
    return encoder_tensor(hu)


def encoder_tensor(hu_zyx: np.ndarray) -> torch.Tensor:
    """LPS [z, y, x] HU -> [1, 3, Z, X, Y] in RAS order (x and y flipped), window -> 0..1."""
    ras = np.ascontiguousarray(hu_zyx[:, ::-1, ::-1].transpose(0, 2, 1))
    lo, hi = HU_WINDOW
    scaled = torch.from_numpy(((np.clip(ras, lo, hi) - lo) / (hi - lo)).astype(np.float32))
    return scaled[None, None].expand(1, 3, *scaled.shape).contiguous()


def _upsample(x: torch.Tensor, factor: int, size: tuple[int, ...]) -> torch.Tensor:
    """[C, ...] -> [C, *size]: trilinear with corners aligned, so index n lands on n / factor
    of ``x``; cut or edge-padded to ``size`` (layer3 is one step shorter than layer2 at odd
    sizes)."""
    full = [factor * (n - 1) + 1 for n in x.shape[1:]]
    up = F.interpolate(x[None], size=full, mode="trilinear", align_corners=True)[0]
    up = up[:, : size[0], : size[1], : size[2]]
    pad = [
        p for n, s in zip(reversed(up.shape[1:]), reversed(size), strict=True) for p in (0, s - n)
    ]
    return F.pad(up[None], pad, mode="replicate")[0] if any(pad) else up


@dataclass
class EncoderFeatures:
    """Layer2 and layer3 maps of one CT (network axis order) and the grid it was run on."""

    l2: torch.Tensor  # [512, Z2, X2, Y2]
    l3: torch.Tensor  # [1024, Z3, X3, Y3]
    grid: sitk.Image

    @classmethod
    @torch.inference_mode()
    def of(cls, encoder: I3ResNet152, ct: sitk.Image, reference: sitk.Image) -> EncoderFeatures:
        grid = encoder_grid(reference)
        l2, l3 = encoder.forward_to_layer3(encoder_input(ct, grid))
        return cls(l2[0], l3[0], grid)

    @property
    def size(self) -> tuple[int, int, int]:
        """Feature-grid size, network axis order."""
        return tuple(2 * (n - 1) + 1 for n in self.l2.shape[1:])  # type: ignore[return-value]

    def upsampled(self, weight_l2: torch.Tensor, weight_l3: torch.Tensor) -> torch.Tensor:
        """[H, *size]: ``weight_l2 @ layer2 + weight_l3 @ layer3`` on the feature grid."""
        low2 = torch.einsum("hc,czxy->hzxy", weight_l2, self.l2)
        low3 = torch.einsum("hc,czxy->hzxy", weight_l3, self.l3)
        return _upsample(low2, 2, self.size) + _upsample(low3, 4, self.size)

    def to_lps(self, maps: torch.Tensor) -> np.ndarray:
        """[C, Z, X, Y] network order -> [C, z, y, x] LPS order (numpy)."""
        return np.ascontiguousarray(maps.permute(0, 1, 3, 2).flip(2, 3).numpy())

    def lps_image(self) -> sitk.Image:
        """An empty image with the feature grid's geometry, for LPS-ordered arrays: voxel j
        of the flipped x axis is input voxel nx - 1 - 4 (Xf - 1 - j)."""
        zf, xf, yf = self.size
        nx, ny, _ = self.grid.GetSize()
        step_z, step_x, step_y = FEATURE_STEP
        corner = (nx - 1 - step_x * (xf - 1), ny - 1 - step_y * (yf - 1), 0)
        image = sitk.Image([xf, yf, zf], sitk.sitkFloat32)
        sx, sy, sz = NET_SPACING_XYZ
        image.SetSpacing((sx * step_x, sy * step_y, sz * step_z))
        image.SetOrigin(
            self.grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        )
        image.SetDirection(self.grid.GetDirection())
        return image


class OrganMapper:
    """The encoder and the head: ``maps(ct, reference)`` answers every location of one CT."""

    def __init__(self, encoder: I3ResNet152, head: dict[str, torch.Tensor], card: dict):
        self.encoder, self.card = encoder, card
        self.locations: tuple[str, ...] = tuple(card["locations"])
        # Standardisation folded into the first layer: W (x - m) / s = (W / s) x - W (m / s).
        w1 = head["w1"] / head["std"]
        self.bias1 = head["b1"] - w1 @ head["mean"]
        self.w1_l2, self.w1_l3 = w1[:, :CHANNELS_L2], w1[:, CHANNELS_L2:]
        self.w2, self.b2 = head["w2"], head["b2"]

    @property
    def source(self) -> str:
        return f"astra-i3resnet152 + {HEADS_NAME}@{self.card.get('sha256', '')[:12]}"

    @torch.inference_mode()
    def maps(self, ct: sitk.Image, reference: sitk.Image) -> OrganMaps:
        features = EncoderFeatures.of(self.encoder, ct, reference)
        hidden = torch.relu_(
            features.upsampled(self.w1_l2, self.w1_l3) + self.bias1[:, None, None, None]
        )
        logits = torch.einsum("kh,hzxy->kzxy", self.w2, hidden) + self.b2[:, None, None, None]
        return OrganMaps(self.locations, features.to_lps(logits), features.lps_image(), reference)


class OrganMaps:
    """One CT's location logits on the 6 mm feature grid; probabilities on ``reference``."""

    def __init__(self, locations, logits: np.ndarray, geometry: sitk.Image, reference: sitk.Image):
        self.locations, self.logits = tuple(locations), logits
        self.geometry, self.reference = geometry, reference

    def probability(self, location: str) -> np.ndarray:
        """[z, y, x] on the reference grid (float32)."""
        image = sitk.GetImageFromArray(self.logits[self.locations.index(location)])
        image.CopyInformation(self.geometry)
        resampled = sitk.Resample(image, self.reference, sitk.Transform(), sitk.sitkLinear,
                                  OUTSIDE_LOGIT, sitk.sitkFloat32)  # fmt: skip
        return torch.sigmoid(torch.from_numpy(sitk.GetArrayFromImage(resampled))).numpy()


def load_heads(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The head's tensors and its card (the JSON beside it), checked against each other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from malenia.weights import sha256_of

    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise WeightsError(f"The Astra organ head is missing ({path}, {card_path.name}): "
                           "reinstall MaleniaSegment or train it with "
                           "`python scripts/train_astra_organ_heads.py`.")  # fmt: skip
    card = json.loads(card_path.read_text())
    if card.get("sha256") != sha256_of(path):
        raise WeightsError(f"{path} does not match the checksum in {card_path.name}: the file is "
                           "corrupt or from another training run; reinstall it.")  # fmt: skip
    try:
        head = {k: v.float() for k, v in load_file(str(path)).items()}
    except SafetensorError as error:
        raise WeightsError(f"{path} cannot be read ({error}); reinstall it.") from None
    if head["w2"].shape[0] != len(card["locations"]):
        raise WeightsError(
            f"{path}: {head['w2'].shape[0]} outputs for {len(card['locations'])} locations."
        )
    return head, card


def load_organ_mapper(heads: Path | None = None) -> OrganMapper:
    """The installed encoder with the bundled head (``WeightsError`` saying what to do when
    either is missing or corrupt)."""
    head, card = load_heads(Path(heads) if heads else default_heads_path())
    return OrganMapper(load_encoder(), head, card)
