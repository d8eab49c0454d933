"""Losses: Hungarian-matched mask losses, objectness, multi-positive attribute alignment,
and the prompted-mask loss that teaches the model to follow the description."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice over the spatial dims; logits/target [..., D, H, W] -> [...]."""
    prob = logits.sigmoid().flatten(-3)
    target = target.flatten(-3)
    intersection = (prob * target).sum(-1)
    return 1 - (2 * intersection + eps) / (prob.sum(-1) + target.sum(-1) + eps)


def mask_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_on_empty: bool = True
) -> torch.Tensor:
    """Dice + BCE, averaged over the maps. ``dice_on_empty=False``: the Dice term only for maps
    whose target has a voxel, BCE for all. An empty target's soft Dice is 1 - 1/(sum p + 1):
    a faint response of a few voxels already costs nearly the whole term, so every uncertain
    region is pushed to zero (``organ_loss`` drops it for the same reason)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(-3).mean(-1)
    dice = dice_loss(logits, target)
    if not dice_on_empty:
        dice = dice * (target.flatten(-3).sum(-1) > 0).to(dice.dtype)
    return (dice + bce).mean()


def organ_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on every map, Dice only where the organ is in view (an empty target's Dice would
    push every map towards nothing)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    present = target.flatten(1).sum(1) > 0
    if not present.any():
        return bce
    return bce + dice_loss(logits[present], target[present]).mean()


def lesion_map_logits(mask_logits: torch.Tensor, objectness_logits: torch.Tensor) -> torch.Tensor:
    """Logits of the prompt-free lesion map that grounded answers rest on: per voxel the best
    token's sigmoid(mask) x sigmoid(objectness), as ``Engine._run_batch`` forms it.
    ``mask_logits`` [..., tokens, D, H, W], ``objectness_logits`` [..., tokens]; float32,
    through log-probabilities (the product of two sigmoids has no stable logit otherwise)."""
    log_p = (
        F.logsigmoid(mask_logits.float())
        + F.logsigmoid(objectness_logits.float())[..., None, None, None]
    )
    log_p = log_p.amax(dim=-4).clamp(max=-1e-6)
    log_not = torch.where(  # log(1 - p), accurate on either side of p = 1/2
        log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p))
    )
    return log_p - log_not


@torch.no_grad()
def hungarian_match(
    token_logits: torch.Tensor, targets: torch.Tensor
) -> tuple[list[int], list[int]]:
    """Match N tokens to K ground-truth lesions (K <= N) by Dice + BCE cost (scipy)."""
    if targets.shape[0] == 0:
        return [], []
    small_logits = F.avg_pool3d(token_logits.unsqueeze(0), 2).squeeze(0)
    small_targets = (F.avg_pool3d(targets.unsqueeze(0), 2).squeeze(0) > 0.25).float()
    prob = small_logits.sigmoid().flatten(1)  # [N, V]
    tgt = small_targets.flatten(1)  # [K, V]
    dice = 1 - (2 * prob @ tgt.T + 1) / (prob.sum(1, keepdim=True) + tgt.sum(1)[None] + 1)
    pos = F.binary_cross_entropy_with_logits(
        small_logits.flatten(1), torch.ones_like(prob), reduction="none"
    )
    neg = F.binary_cross_entropy_with_logits(
        small_logits.flatten(1), torch.zeros_like(prob), reduction="none"
    )
    bce = (pos @ tgt.T + neg @ (1 - tgt).T) / tgt.shape[1]
    rows, cols = linear_sum_assignment((dice + bce).cpu().numpy())
    return rows.tolist(), cols.tolist()


def alignment_loss(
    attribute_logits: list[torch.Tensor], token_index: list[int], value_targets: list[list[int]]
) -> torch.Tensor:
    """Multi-positive contrastive alignment: each matched token is pulled to the embeddings
    of its lesion's attribute values (one positive per key) against the other values of
    that key. ``value_targets[k][j]`` = value index of key k for matched lesion j (-1 = none)."""
    losses = []
    for key_logits, targets in zip(attribute_logits, value_targets, strict=True):
        for token, value in zip(token_index, targets, strict=True):
            if value >= 0:
                losses.append(
                    F.cross_entropy(
                        key_logits[token][None], torch.tensor([value], device=key_logits.device)
                    )
                )
    return torch.stack(losses).mean() if losses else attribute_logits[0].sum() * 0.0
