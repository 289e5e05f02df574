"""Losses of the recipe (spec deepmask-sharpmask.md 5.2, multipathnet.md 3)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F


def soft_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise log(1 + exp(-y f)), y in {-1, +1} (nn.SoftMarginCriterion before the mean)."""
    return F.softplus(-target * logits)


def deepmask_joint_loss(mask_logits: torch.Tensor, score_logits: torch.Tensor, mask_target: torch.Tensor,
                        score_target: torch.Tensor, pos: torch.Tensor, score_weight: float = 1.0
                        ) -> Dict[str, torch.Tensor]:
    """DeepMask joint loss.

    mask_logits [N,g,g] (already upsampled to gSz), mask_target [N,g,g] +-1, score_logits [N],
    score_target [N] +-1, pos [N] bool. The mask loss is the per-sample mean over pixels of the
    logistic loss, averaged over the *positive* samples only (negatives carry no mask loss);
    the objectness loss is the logistic loss averaged over *all* samples.
    total = mask + score_weight * score. (The released trainer alternates mask batches, whose
    loss is summed over the 32 samples, with score batches, averaged: per sample that is the
    paper's lambda = 1/32; ``score_weight`` = 1/32 * n_pos reproduces that weighting.)"""
    if pos.any():
        m = soft_margin(mask_logits[pos], mask_target[pos]).flatten(1).mean(1).mean()
    else:
        m = mask_logits.sum() * 0
    s = soft_margin(score_logits, score_target).mean()
    return dict(total=m + score_weight * s, mask=m, score=s)


def mask_iou(mask_logits: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    """IoU per sample of (logit >= 0) vs (target > 0) (trainMeters.lua IouMeter)."""
    p = mask_logits >= 0
    t = mask_target > 0
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def integral_loss(cls_logits: torch.Tensor, labels: torch.Tensor, bbox_raw: torch.Tensor,
                  bbox_targets: torch.Tensor, bbox_labels: torch.Tensor, bbox_weight: float = 1.0
                  ) -> Dict[str, torch.Tensor]:
    """MultiPathNet integral loss (paper intent: head k <-> IoU threshold u_k).

    cls_logits [H,K,C]; labels [H,K] long: class index for head k's threshold (0 = background),
    -1 = ignored (IoU < 0.1 or crowd); the classification loss is the mean over heads of the
    cross-entropy averaged over the non-ignored ROIs of that head.
    Box loss (BBoxRegressionCriterion): bbox_raw [K,4C] vs normalised targets [K,4] of the
    ROI's class bbox_labels [K] (0 = background: no box loss), SmoothL1 summed over the 4
    coordinates and the fg ROIs, divided by K."""
    H, K, C = cls_logits.shape
    ce = []
    for h in range(H):
        keep = labels[h] >= 0
        if keep.any():
            ce.append(F.cross_entropy(cls_logits[h][keep], labels[h][keep]))
    cls = torch.stack(ce).mean() if ce else cls_logits.sum() * 0
    fg = bbox_labels > 0
    if fg.any():
        pred = bbox_raw.view(K, C, 4)[fg, bbox_labels[fg]]
        box = F.smooth_l1_loss(pred, bbox_targets[fg], reduction="sum", beta=1.0) / K
    else:
        box = bbox_raw.sum() * 0
    return dict(total=cls + bbox_weight * box, cls=cls, box=box)
