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

__all__ = ["contrastive_loss", "ContrastiveLoss"]

REDUCTIONS = ("sum_over_batch_size", "sum", "none")


def contrastive_loss(y_true, y_pred, margin=1.0):
    if not isinstance(y_pred, torch.Tensor):
        raise TypeError(f"y_pred must be a torch.Tensor of distances, got {type(y_pred).__name__}")
    if not y_pred.is_floating_point():
        raise TypeError(f"y_pred must be a floating-point tensor, got {y_pred.dtype}")
    if not isinstance(y_true, torch.Tensor):
        raise TypeError(f"y_true must be a torch.Tensor, got {type(y_true).__name__}")
    if y_true.is_complex():
        raise TypeError(f"y_true must be real, got {y_true.dtype}")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {tuple(y_true.shape)} but y_pred has {tuple(y_pred.shape)}")
    if y_true.device != y_pred.device:
        raise ValueError(f"y_true is on {y_true.device} but y_pred is on {y_pred.device}")
    if not bool(torch.isfinite(y_pred).all()):
        raise ValueError("y_pred contains NaN or Inf")
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
