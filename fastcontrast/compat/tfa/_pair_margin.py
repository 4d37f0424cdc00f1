"""TF Addons' contrastive loss on torch tensors.

    contrastive_loss(y_true, y_pred, margin=1.0)

y_pred holds precomputed distances (e.g. ‖a − b‖ of two embedding batches), y_true 1 for a
similar pair and 0 for a dissimilar one. Per entry, as in tfa.losses.contrastive_loss:

    y·d² + (1 − y)·relu(margin − d)²

The function returns one value per entry, unreduced, like TF Addons' function. y_true may
be bool, integer or float (TF Addons casts it to y_pred's dtype) and must have y_pred's
shape (TF Addons would broadcast a [B, 1] y_true against a [B] y_pred into a [B, B] matrix;
that is refused here). `ContrastiveLoss(margin=1.0, reduction="sum_over_batch_size",
name="contrastive_loss")` is the Keras class form (see _keras.py): the per-entry values
times sample_weight, then the reduction. fp16/bf16 distances are computed in fp32 and the
result cast back.
"""
from __future__ import annotations

import torch

from ..._validation import check_real
from ._inputs import check_targets_and_scores
from ._keras import KerasLoss

__all__ = ["contrastive_loss", "ContrastiveLoss"]


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


class ContrastiveLoss(KerasLoss):
    """tfa.losses.ContrastiveLoss(margin=1.0, reduction="sum_over_batch_size",
    name="contrastive_loss"), called as loss(y_true, y_pred, sample_weight=None)."""

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss"):
        super().__init__(reduction, name, name_optional=False)
        self.margin = check_real(margin, "margin")

    def values(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def values_shape(self, y_pred):
        return y_pred.shape

    def _fn_config(self):
        return {"margin": self.margin}
