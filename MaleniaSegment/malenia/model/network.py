"""MaleniaNet: image encoder-decoder + mask tokens aligned with attributes + CMKI.

    image -> U-Net (MONAI blocks) -> F1 (1/8), F2 (1/4), F3 (1/2), F4 (full res)
    N mask tokens -> 3 blocks [cross-attn to F1 | F2 | F3, self-attn, FFN]
                     -> after each block: masks (token x F4), objectness, attribute logits
    prompt (8 attribute embeddings) -> projection -> attribute tokens
    CMKI x3: tokens <-> attribute tokens (cross-attn both ways, residual, self-attn)
    mask branch (prompt-weighted tokens) + text branch (fused attribute tokens) -> ensembled

A prompt's mask is one vector dotted with F4 per voxel, so once F4 and the tokens of a
window are cached, a new description costs a few small matrix products (encode once,
query many).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.blocks import UnetResBlock, UnetUpBlock
from torch import nn

from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.model.config import MaleniaConfig


@dataclass
class ImageFeatures:
    """Multi-scale decoder features of one batch of windows."""

    f1: torch.Tensor  # [B, C1, d/8...]
    f2: torch.Tensor
    f3: torch.Tensor
    f4: torch.Tensor  # [B, mask_dim, D, H, W] mask features


LOCATION_STRIDE = 4  # location features live on the 1/4 grid of the decoder map F2
COORDINATE_SCALE_MM = 100.0


def plane_coordinates(origin_zyx, spacing_zyx, shape_zyx) -> torch.Tensor:
    """[2, D/4, H/4, W/4] LPS (y, x) in units of 100 mm at the centres of the location grid.

    Scanners put the patient at the gantry centre, so x is the offset from the midline
    (left or right kidney?) and y the anterior-posterior offset; z (table position) carries
    no anatomy and is left out. A window alone cannot tell left from right."""
    axes = []
    for axis in (1, 2):
        n = shape_zyx[axis] // LOCATION_STRIDE
        centres = (np.arange(n) * LOCATION_STRIDE + (LOCATION_STRIDE - 1) / 2) * spacing_zyx[axis]
        axes.append((origin_zyx[axis] + centres) / COORDINATE_SCALE_MM)
    depth = shape_zyx[0] // LOCATION_STRIDE
    y = np.broadcast_to(axes[0][None, :, None], (depth, len(axes[0]), len(axes[1])))
    x = np.broadcast_to(axes[1][None, None, :], y.shape)
    return torch.from_numpy(np.stack([y, x]).astype(np.float32))


def _coords(shape, device) -> torch.Tensor:
    axes = [torch.linspace(-1, 1, s, device=device) for s in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


class TokenBlock(nn.Module):
    """Cross-attention from tokens to one feature scale, then self-attention and an MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        tokens = self.norms[0](tokens + self.cross(tokens, memory, memory, need_weights=False)[0])
        tokens = self.norms[1](
            tokens + self.self_attn(tokens, tokens, tokens, need_weights=False)[0]
        )
        return self.norms[2](tokens + self.mlp(tokens))


class CMKILayer(nn.Module):
    """One round of cross-modal knowledge injection, both ways."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.mask_from_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mask_self = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_from_mask = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_self = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(
        self, tokens: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fused_tokens = self.norms[0](
            tokens + self.mask_from_text(tokens, text, text, need_weights=False)[0]
        )
        fused_tokens = self.norms[1](
            fused_tokens
            + self.mask_self(fused_tokens, fused_tokens, fused_tokens, need_weights=False)[0]
        )
        fused_text = self.norms[2](
            text + self.text_from_mask(text, tokens, tokens, need_weights=False)[0]
        )
        fused_text = self.norms[3](
            fused_text + self.text_self(fused_text, fused_text, fused_text, need_weights=False)[0]
        )
        return fused_tokens, fused_text


class MaleniaNet(nn.Module):
    # Parameters added after weights were first published; a file without them loads with
    # their initial values (zero), which leaves the older model's function unchanged.
    OPTIONAL_KEYS = ("prompt_direct.weight", "prompt_direct.bias")
    # Modules that start as the identity of an older model (their last layer is zero), so
    # training may start from weights without them (``malenia train`` with ``init_from``).
    NEUTRAL_MODULES = ("soft_tissue.",)

    def __init__(self, config: MaleniaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MaleniaConfig.tiny()
        f = config.filters
        e, norm = config.token_dim, "instance"
        self.enc0 = UnetResBlock(3, 1, f[0], 3, 1, norm)
        self.soft_tissue = None
        if config.soft_tissue_window is not None:
            # The soft-tissue view enters next to the first encoder block; zero last layer:
            # the older model's function until training gives it weight.
            self.soft_tissue = nn.Sequential(
                nn.Conv3d(1, f[0], 3, padding=1),
                nn.InstanceNorm3d(f[0], affine=True),
                nn.LeakyReLU(0.01),
                nn.Conv3d(f[0], f[0], 1),
            )
            nn.init.zeros_(self.soft_tissue[-1].weight)
            nn.init.zeros_(self.soft_tissue[-1].bias)
        self.enc1 = UnetResBlock(3, f[0], f[1], 3, 2, norm)
        self.enc2 = UnetResBlock(3, f[1], f[2], 3, 2, norm)
        self.enc3 = UnetResBlock(3, f[2], f[3], 3, 2, norm)
        self.up2 = UnetUpBlock(3, f[3], f[2], 3, 2, 2, norm)
        self.up1 = UnetUpBlock(3, f[2], f[1], 3, 2, 2, norm)
        self.up0 = UnetUpBlock(3, f[1], f[0], 3, 2, 2, norm)
        self.mask_features = nn.Conv3d(f[0], config.mask_dim, 1)
        self.memory_proj = nn.ModuleList(nn.Conv3d(c, e, 1) for c in (f[3], f[2], f[1]))
        self.position = nn.Linear(3, e)
        self.scale_embedding = nn.Parameter(torch.zeros(3, e))

        self.tokens = nn.Parameter(torch.randn(config.num_tokens, e) * 0.1)
        self.blocks = nn.ModuleList(TokenBlock(e, config.num_heads) for _ in range(3))
        self.mask_head = nn.Sequential(nn.Linear(e, e), nn.GELU(), nn.Linear(e, config.mask_dim))
        self.objectness = nn.Linear(e, 1)

        # Attribute side: frozen text embeddings -> learned projection (MiniLM alone barely
        # separates opposite values), one alignment head per attribute key.
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, e), nn.GELU(), nn.Linear(e, e))
        self.key_embedding = nn.Parameter(torch.zeros(len(ATTRIBUTE_KEYS), e))
        self.align_heads = nn.ModuleList(nn.Linear(e, e) for _ in ATTRIBUTE_KEYS)
        self.logit_scale = nn.Parameter(torch.tensor(1.0 / config.temperature).log())

        self.cmki = nn.ModuleList(CMKILayer(e, config.num_heads) for _ in range(config.cmki_layers))
        self.relevance = nn.Linear(e, 1)
        self.text_mask_head = nn.Sequential(
            nn.Linear(e, e), nn.GELU(), nn.Linear(e, config.mask_dim)
        )
        # Direct path from the 8 attribute embeddings to a mask vector. The fused paths above
        # learned to ignore the prompt (MiniLM embeddings of different values differ little
        # next to the token norms); this linear map gives the prompt a gradient from step one.
        # Zero at start, so adding it to a trained model changes nothing until it is trained.
        self.prompt_direct = nn.Linear(len(ATTRIBUTE_KEYS) * config.text_dim, config.mask_dim)
        nn.init.zeros_(self.prompt_direct.weight)
        nn.init.zeros_(self.prompt_direct.bias)
        # Anatomy grounding: location phrase -> (vector, bias) dotted with location features
        # computed from the 1/4-resolution decoder map (organs are large; F4 is tuned to
        # lesions). Lesion masks of the training categories only ever lie in a few organs;
        # this head learns every organ from organ masks, so a description can point at one
        # no training lesion was in.
        if config.location_head:
            self.location_features = nn.Sequential(
                nn.Conv3d(f[2] + 2, e, 3, padding=1),
                nn.GELU(),
                nn.Conv3d(e, e, 3, padding=1),
                nn.GELU(),
                nn.Conv3d(e, config.mask_dim, 1),
            )
            self.location_head = nn.Sequential(
                nn.Linear(config.text_dim, e), nn.GELU(), nn.Linear(e, config.mask_dim + 1)
            )
            # Mean embedding of the location vocabulary, taken off every location phrase:
            # MiniLM embeddings of organ names share most of their direction (mean cosine
            # 0.57), what tells them apart is the rest. Set when the head is trained.
            self.register_buffer("location_centre", torch.zeros(config.text_dim))
        else:
            self.location_features = self.location_head = None

    # ----------------------------------------------------------------- image side (heavy)
    def soft_tissue_view(self, image: torch.Tensor) -> torch.Tensor:
        """The input (``normalize_ct``: -1..1 over HU_WINDOW) in the soft-tissue window."""
        from malenia.preprocessing import hu_from_normalized

        low, high = self.config.soft_tissue_window  # type: ignore[misc]
        hu = hu_from_normalized(image)
        return ((hu - low) * (2.0 / (high - low)) - 1.0).clamp(-1.0, 1.0)

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        x0 = self.enc0(image)
        if self.soft_tissue is not None:
            x0 = x0 + self.soft_tissue(self.soft_tissue_view(image))
        x1 = self.enc1(x0)
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        d2 = self.up2(x3, x2)
        d1 = self.up1(d2, x1)
        d0 = self.up0(d1, x0)
        return ImageFeatures(f1=x3, f2=d2, f3=d1, f4=self.mask_features(d0))

    # ----------------------------------------------------------------- tokens (prompt-free)
    def mask_tokens(self, features: ImageFeatures) -> list[torch.Tensor]:
        """Token states after each of the 3 blocks ([B, N, E] each)."""
        batch = features.f1.shape[0]
        tokens = self.tokens.unsqueeze(0).expand(batch, -1, -1)
        states = []
        for index, (block, feature) in enumerate(
            zip(self.blocks, (features.f1, features.f2, features.f3), strict=True)
        ):
            memory = self.memory_proj[index](feature).flatten(2).transpose(1, 2)
            memory = (
                memory
                + self.position(_coords(feature.shape[2:], feature.device))
                + self.scale_embedding[index]
            )
            tokens = block(tokens, memory)
            states.append(tokens)
        return states

    def token_masks(self, tokens: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """[B, N, D, H, W] mask logits of each token."""
        return torch.einsum("bnc,bcdhw->bndhw", self.mask_head(tokens), f4)

    def attribute_logits(
        self, tokens: torch.Tensor, vocabulary: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per key: [B, N, n_values] similarity of each token to each value embedding."""
        scale = self.logit_scale.exp().clamp(max=100)
        out = []
        for key_index, values in enumerate(vocabulary):
            token = nn.functional.normalize(self.align_heads[key_index](tokens), dim=-1)
            text = nn.functional.normalize(
                self.text_proj(values) + self.key_embedding[key_index], dim=-1
            )
            out.append(scale * token @ text.T)
        return out

    # ----------------------------------------------------------------- prompt side (light)
    def prompt_vectors(
        self, tokens: torch.Tensor, attributes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Mask vectors for a prompt: {"mask", "text", "ensemble"}: [B, mask_dim] each.

        ``tokens`` are the final mask tokens [B, N, E]; ``attributes`` [B, 8, text_dim].
        """
        text = self.text_proj(attributes) + self.key_embedding
        if self.config.use_cmki:
            fused_tokens, fused_text = tokens, text
            for layer in self.cmki:
                fused_tokens, fused_text = layer(fused_tokens, fused_text)
            weights = torch.softmax(self.relevance(fused_tokens).squeeze(-1), dim=1)
        else:
            fused_tokens, fused_text = tokens, text
            similarity = (
                torch.stack(
                    [
                        nn.functional.normalize(self.align_heads[k](tokens), dim=-1)
                        @ nn.functional.normalize(text[:, k], dim=-1).unsqueeze(-1)
                        for k in range(len(ATTRIBUTE_KEYS))
                    ],
                    dim=0,
                )
                .mean(0)
                .squeeze(-1)
            )
            weights = torch.softmax(similarity * self.logit_scale.exp().clamp(max=100), dim=1)
        mask_vector = torch.einsum("bn,bnc->bc", weights, self.mask_head(fused_tokens))
        text_vector = self.text_mask_head(fused_text.mean(1))
        direct = self.prompt_direct(attributes.flatten(1))
        return {
            "mask": mask_vector,
            "text": text_vector,
            "ensemble": 0.5 * (mask_vector + text_vector) + direct,
            "weights": weights,
        }

    def location_feature_map(self, f2: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """[B, mask_dim, D/4, H/4, W/4] features the location vectors are dotted with, from
        the decoder map F2 and the windows' ``plane_coordinates`` [B, 2, D/4, H/4, W/4]."""
        if self.location_features is None:
            raise ValueError("this model has no location head (config.location_head is off)")
        return self.location_features(torch.cat([f2, coordinates.to(f2)], 1))

    def location_vectors(self, location_embeddings: torch.Tensor) -> torch.Tensor:
        """[B, mask_dim + 1] (vector, bias) of location phrases [B, text_dim]."""
        if self.location_head is None:
            raise ValueError("this model has no location head (config.location_head is off)")
        return self.location_head(location_embeddings - self.location_centre)

    @staticmethod
    def location_map_logits(
        vectors: torch.Tensor, location_features: torch.Tensor, size: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """[B, *size] "inside the named organ" logits, upsampled from the 1/4 grid (size None:
        the 1/4 grid itself; trilinear upsampling stays within its range)."""
        low = torch.einsum("bc,bcdhw->bdhw", vectors[:, :-1], location_features)
        low = low + vectors[:, -1, None, None, None]
        return low if size is None else MaleniaNet.upsample_location_logits(low, size)

    @staticmethod
    def upsample_location_logits(low: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """[B, *size] from 1/4-grid location logits [B, d, h, w]."""
        return nn.functional.interpolate(
            low[:, None], size=size, mode="trilinear", align_corners=False
        )[:, 0]

    def location_logits(
        self, location_embeddings: torch.Tensor, location_features: torch.Tensor, size
    ) -> torch.Tensor:
        return self.location_map_logits(
            self.location_vectors(location_embeddings), location_features, size
        )

    @staticmethod
    def vector_logits(vector: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] logits of one mask vector per batch item."""
        return torch.einsum("bc,bcdhw->bdhw", vector, f4)

    def forward(
        self,
        image: torch.Tensor,
        attributes: torch.Tensor | None = None,
        vocabulary: list[torch.Tensor] | None = None,
    ) -> dict:
        features = self.encode_image(image)
        states = self.mask_tokens(features)
        out = {
            "features": features,
            "block_tokens": states,
            "block_masks": [self.token_masks(s, features.f4) for s in states],
            "block_objectness": [self.objectness(s).squeeze(-1) for s in states],
        }
        if vocabulary is not None:
            out["block_attribute_logits"] = [self.attribute_logits(s, vocabulary) for s in states]
        if attributes is not None:
            vectors = self.prompt_vectors(states[-1], attributes)
            out["prompt_logits"] = {
                k: self.vector_logits(vectors[k], features.f4) for k in ("mask", "text", "ensemble")
            }
            out["prompt_weights"] = vectors["weights"]
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
