"""TF Addons' triplet losses on torch tensors.

    triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2")
    triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2")

y_true: labels, shape (B,) or (B, 1); y_pred: embeddings (B, D). Distances: "L2"
(Euclidean), "squared-L2", "angular" (1 − cosine similarity, computed as ½‖x̂ − ŷ‖² of the
L2-normalized rows, which is the same number and has an exact 0 between identical rows).

- triplet_semihard_loss: for each positive pair (a, p) the negative with the smallest
  d_an > d_ap, else the largest d_an (no negative at all: 0, TF Addons' row minimum);
  mean over all positive pairs of relu(margin + d_ap − d_an) (zeros included).
- triplet_hard_loss: per anchor the largest d_ap (no positive: 0) and the smallest d_an (no
  negative: the largest distance of the row); relu(d_ap − d_an + margin), or
  log1p(exp(d_ap − d_an)) when soft (no margin then); mean over all anchors.

Both run fastcontrast's sorted/streaming triplet pass (mining "semihard_tfa", and
"batch_hard" with hard_fallback="tfa"), never TF Addons' B²×B tiled matrix.
fp16/bf16 inputs are computed in fp32 and the result cast back.
Documented differences: without any positive pair TF Addons' semi-hard loss divides 0 by 0
and returns NaN; this returns 0 with a zero gradient. Between exactly equal distances the
lowest index is the one selected (TF's min/max gradients split between ties; values agree).
"""
from __future__ import annotations

import math

import torch

from ..._validation import check_choice, check_embeddings, check_labels, check_real
from ...metrics import normalize_rows
from ...triplet import TripletMarginLoss

__all__ = ["triplet_semihard_loss", "triplet_hard_loss", "TripletSemiHardLoss", "TripletHardLoss"]

DISTANCE_METRICS = ("L2", "squared-L2", "angular")


def _inputs(y_true, y_pred, distance_metric):
    check_embeddings(y_pred, "y_pred")
    if isinstance(y_true, torch.Tensor) and y_true.dim() == 2 and y_true.shape[1] == 1:
        y_true = y_true.reshape(-1)
    check_labels(y_true, y_pred.shape[0], "y_true", "y_pred", y_pred.device)
    if not isinstance(distance_metric, str):
        raise TypeError("distance_metric must be 'L2', 'squared-L2' or 'angular' (callables are not supported)")
    check_choice(distance_metric, "distance_metric", DISTANCE_METRICS)
    if distance_metric == "angular":
        # 1 − û·v̂ = ½‖û − v̂‖²: squared Euclidean between the normalized rows scaled by 1/√2
        return y_true, normalize_rows(y_pred) * (1.0 / math.sqrt(2.0)), "squared_euclidean"
    return y_true, y_pred, "euclidean" if distance_metric == "L2" else "squared_euclidean"


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """tfa.losses.triplet_semihard_loss on torch tensors (see the module docstring)."""
    margin = check_real(margin, "margin")
    labels, emb, distance = _inputs(y_true, y_pred, distance_metric)
    loss = TripletMarginLoss(margin=margin, mining="semihard_tfa", distance=distance, normalize=False,
                             average="mean")(emb, labels)
    return loss.to(y_pred.dtype)


def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """tfa.losses.triplet_hard_loss on torch tensors (see the module docstring)."""
    margin = check_real(margin, "margin")
    if not isinstance(soft, bool):
        raise TypeError(f"soft must be True or False, got {type(soft).__name__}")
    labels, emb, distance = _inputs(y_true, y_pred, distance_metric)
    loss = TripletMarginLoss(margin=0.0 if soft else margin, mining="batch_hard", hard_fallback="tfa", smooth=soft,
                             distance=distance, normalize=False, average="mean")(emb, labels)
    return loss.to(y_pred.dtype)


class TripletSemiHardLoss(torch.nn.Module):
    """tfa.losses.TripletSemiHardLoss(margin=1.0, distance_metric="L2"), called as
    loss(y_true, y_pred)."""

    def __init__(self, margin=1.0, distance_metric="L2", name=None):
        super().__init__()
        self.margin = check_real(margin, "margin")
        check_choice(distance_metric, "distance_metric", DISTANCE_METRICS)
        self.distance_metric = distance_metric

    def forward(self, y_true, y_pred):
        return triplet_semihard_loss(y_true, y_pred, self.margin, self.distance_metric)


class TripletHardLoss(torch.nn.Module):
    """tfa.losses.TripletHardLoss(margin=1.0, soft=False, distance_metric="L2"), called as
    loss(y_true, y_pred)."""

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None):
        super().__init__()
        self.margin = check_real(margin, "margin")
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be True or False, got {type(soft).__name__}")
        check_choice(distance_metric, "distance_metric", DISTANCE_METRICS)
        self.soft, self.distance_metric = soft, distance_metric

    def forward(self, y_true, y_pred):
        return triplet_hard_loss(y_true, y_pred, self.margin, self.soft, self.distance_metric)
