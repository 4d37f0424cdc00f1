"""TF Addons' contrastive loss on torch tensors.

    contrastive_loss(y_true, y_pred, margin=1.0)

y_pred holds precomputed distances (e.g. ‖a − b‖ of two embedding batches), y_true 1 for a
similar pair and 0 for a dissimilar one. Per entry, as in tfa.losses.contrastive_loss:

    y·d² + (1 − y)·relu(margin − d)²

The function returns one value per entry, unreduced, like TF Addons' function;
`ContrastiveLoss` (like tfa.losses.ContrastiveLoss under Keras' default reduction) averages
them. fp16/bf16 distances are computed in fp32 and the result cast back.
"""
from __future__ import annotations

import torch

from ..._validation import check_choice, check_real
from ._inputs import check_targets_and_scores

__all__ = ["contrastive_loss", "ContrastiveLoss"]

REDUCTIONS = ("sum_over_batch_size", "sum", "none")


def contrastive_loss(y_true, y_pred, margin=1.0):
    check_targets_and_scores(y_true, y_pred, "a torch.Tensor of distances")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {tuple(y_true.shape)} but y_pred has {tuple(y_pred.shape)}")
    margin = check_real(margin, "margin")
    compute = torch.float64 if y_pred.dtype == torch.float64 else torch.float32
    d = y_pred.to(compute)
    y = y_true.to(compute)
    loss = y * d * d + (1.0 - y) * (margin - d).clamp_min(0) ** 2
    return loss.to(y_pred.dtype)


class ContrastiveLoss(torch.nn.Module):
    """tfa.losses.ContrastiveLoss(margin=1.0): the mean of contrastive_loss over entries
    (Keras' "sum_over_batch_size"), or "sum" / "none"."""

    def __init__(self, margin=1.0, reduction="sum_over_batch_size"):
        super().__init__()
        self.margin = check_real(margin, "margin")
        check_choice(reduction, "reduction", REDUCTIONS)
        self.reduction = reduction

    def forward(self, y_true, y_pred):
        loss = contrastive_loss(y_true, y_pred, self.margin)
        if self.reduction == "none":
            return loss
        total = loss.sum()
        return total if self.reduction == "sum" else total / max(loss.numel(), 1)
