"""TF Addons' triplet losses on torch tensors.

    triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2")
    triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2")

y_true: labels, shape (B,) or (B, 1), integer, bool, or float holding integral values
(TF Addons takes Keras' float32 [B, 1] labels; they are cast to int64 here, and a
non-integral or non-finite float is a ValueError naming y_true). y_pred: embeddings (B, D).

Distances: "L2" (Euclidean), "squared-L2", "angular" (1 − cosine similarity). For
"angular" the rows are normalized as TF Addons does (x / √max(‖x‖², 1e-12), so an all-zero
row stays zero and has cosine 0 with every row, itself included: its angular distance to
every row is 1), and the distances 1 − û·v̂ come from fastcontrast's "dot" pass on [û, 1]
against [û, −1]. Exactly orthogonal rows therefore get exactly 1 and identical rows exactly
equal distances in float32 as in float64, so such ties are decided as TF Addons decides
them (1 − û·v̂ is also TF Addons' own arithmetic). A zero row that has to fall back on its
row minimum (no positive for triplet_hard_loss, no negative for triplet_semihard_loss) gets
TF Addons' row minimum, 1, from a direct O(B·D) computation of its row.

- triplet_semihard_loss: for each positive pair (a, p) the negative with the smallest
  d_an > d_ap, else the largest d_an (no negative at all: TF Addons' row minimum, which is
  the anchor's distance to itself, 0, for the L2 kinds); mean over all positive pairs of
  relu(margin + d_ap − d_an) (zeros included).
- triplet_hard_loss: per anchor the largest d_ap (no positive: the row minimum) and the
  smallest d_an (no negative: the row maximum); relu(d_ap − d_an + margin), or
  log1p(exp(d_ap − d_an)) when soft (no margin then); mean over all anchors.

Both run fastcontrast's sorted/streaming triplet pass (mining "semihard_tfa", and
"batch_hard" with hard_fallback="tfa"), never TF Addons' B²×B tiled matrix.
fp16/bf16 inputs are computed in fp32 and the result cast back.

Documented differences (both sides are valid subgradients where values agree):
- without any positive pair TF Addons' semi-hard loss divides 0 by 0 and returns NaN; this
  returns 0 with a zero gradient;
- between exactly equal distances the lowest index is the one selected (TF's min/max
  gradients are split evenly between the tied entries; the values agree);
- a term whose hinge margin + d_ap − d_an is exactly 0 gets gradient 0 here; TF Addons'
  maximum(·, 0) passes the gradient through at 0;
- exact ties survive only where rounding keeps them: distances that are equal in exact
  arithmetic but computed from different numbers can differ in the last bit, in TF Addons
  and here alike, and then either side may pick either entry.

`TripletSemiHardLoss` and `TripletHardLoss` are the Keras class forms (see _keras.py). TF
Addons fixes their reduction to "none" (a `reduction` keyword is accepted and ignored
there); the default here is "none" too, so the scalar loss times sample_weight is returned,
but another reduction given here is honoured with Keras' meaning.
"""
from __future__ import annotations

import torch

from ..._reduce import safe_ratio
from ..._validation import check_choice, check_embeddings, check_labels, check_real
from ...triplet import TripletMarginLoss
from ._keras import KerasLoss

__all__ = ["triplet_semihard_loss", "triplet_hard_loss", "TripletSemiHardLoss", "TripletHardLoss"]

DISTANCE_METRICS = ("L2", "squared-L2", "angular")
L2_NORMALIZE_EPS = 1e-12  # tf.math.l2_normalize's epsilon, a floor on the squared norm


def _labels(y_true, n, device):
    """y_true as int64 labels of shape (n,): (n, 1) squeezed, integral floats and bools cast."""
    if not isinstance(y_true, torch.Tensor):
        raise TypeError(f"y_true must be a torch.Tensor of labels, got {type(y_true).__name__}")
    if y_true.dim() == 2 and y_true.shape[1] == 1:
        y_true = y_true.reshape(-1)
    if y_true.is_complex():
        raise TypeError(f"y_true must be real, got {y_true.dtype}")
    if y_true.is_floating_point():
        if y_true.numel():
            bounds = torch.stack(torch.aminmax(y_true.detach()))
            if not bool(torch.isfinite(bounds).all()):
                raise ValueError("y_true contains NaN or Inf")
            if not bool((y_true == torch.round(y_true)).all()):
                raise ValueError("y_true must hold integral class labels; got a non-integral float")
            if float(bounds.abs().max()) >= 2.0 ** 63:
                raise ValueError("y_true holds a float label outside the int64 range")
        y_true = y_true.long()
    elif y_true.dtype == torch.bool:
        y_true = y_true.long()
    check_labels(y_true, n, "y_true", "y_pred", device)
    return y_true


def _metric(distance_metric):
    if not isinstance(distance_metric, str):
        raise TypeError("distance_metric must be 'L2', 'squared-L2' or 'angular' (callables are not supported)")
    check_choice(distance_metric, "distance_metric", DISTANCE_METRICS)
    return distance_metric


def _tf_normalize(x):
    """tf.math.l2_normalize(x, axis=1): x / √max(‖x‖², 1e-12); a zero row stays zero."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True).clamp_min(L2_NORMALIZE_EPS))


def _terms(core: TripletMarginLoss, y_true, y_pred, distance_metric):
    """Per-anchor (values, counts, labels, unit rows or None) of the core pass."""
    check_embeddings(y_pred, "y_pred")
    labels = _labels(y_true, y_pred.shape[0], y_pred.device)
    if distance_metric != "angular":
        t = core.terms(y_pred, labels)
        return t.values, t.counts, labels, None
    compute = torch.float64 if y_pred.dtype == torch.float64 else torch.float32
    u = _tf_normalize(y_pred.to(compute))
    one = torch.ones_like(u[:, :1])
    # −([û, 1] · [v̂, −1]) = 1 − û·v̂ for every pair, a zero row's pair with itself included
    t = core.terms(torch.cat([u, one], 1), labels, torch.cat([u, -one], 1), labels, 0)
    return t.values, t.counts, labels, u


def _angular_rows(u, idx):
    """TF Addons' angular distances of rows idx to every row: 1 − û·v̂ (k × B)."""
    return 1.0 - u[idx] @ u.T


def _zero_rows_without(u, labels, want_positive: bool):
    """Indices of all-zero rows lacking a positive (want_positive) or a negative."""
    zero = ~(u != 0).any(1)
    if not bool(zero.any()):
        return None
    if want_positive:
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        lacking = counts[inverse] <= 1  # the row is its label's only member
    else:
        lacking = torch.full_like(zero, bool((labels == labels[0]).all()))
    idx = (zero & lacking).nonzero()[:, 0]
    return idx if idx.numel() else None


# the core metric each TF Addons distance is computed with (angular: dot products of the
# TF-normalized rows, see _terms)
_CORE_DISTANCE = {"angular": "dot", "L2": "euclidean", "squared-L2": "squared_euclidean"}


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """tfa.losses.triplet_semihard_loss on torch tensors (see the module docstring)."""
    margin = check_real(margin, "margin")
    distance_metric = _metric(distance_metric)
    core = TripletMarginLoss(margin=margin, mining="semihard_tfa", normalize=False, average="mean",
                             distance=_CORE_DISTANCE[distance_metric])
    values, counts, labels, u = _terms(core, y_true, y_pred, distance_metric)
    idx = None if u is None else _zero_rows_without(u, labels, want_positive=False)
    if idx is not None:
        # no negative anywhere: each positive's term is relu(margin + d_ap − row minimum)
        rows = _angular_rows(u, idx)
        row_min = rows.gather(1, rows.argmin(1, keepdim=True))
        pos = labels[idx, None] == labels[None, :]
        pos[torch.arange(idx.numel(), device=pos.device), idx] = False
        fixed = torch.where(pos, torch.relu(margin + rows - row_min), torch.zeros_like(rows)).sum(1)
        values = values.index_put((idx,), fixed.to(values.dtype))
    return safe_ratio(values.sum(), counts.sum()).to(y_pred.dtype)


def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """tfa.losses.triplet_hard_loss on torch tensors (see the module docstring)."""
    margin = check_real(margin, "margin")
    if not isinstance(soft, bool):
        raise TypeError(f"soft must be True or False, got {type(soft).__name__}")
    distance_metric = _metric(distance_metric)
    core = TripletMarginLoss(margin=0.0 if soft else margin, mining="batch_hard", hard_fallback="tfa", smooth=soft,
                             normalize=False, average="mean",
                             distance=_CORE_DISTANCE[distance_metric])
    values, counts, labels, u = _terms(core, y_true, y_pred, distance_metric)
    idx = None if u is None else _zero_rows_without(u, labels, want_positive=True)
    if idx is not None:
        # no positive: d_ap is the row minimum (1 for a zero row), d_an as usual
        rows = _angular_rows(u, idx)
        d_ap = rows.gather(1, rows.argmin(1, keepdim=True))[:, 0]
        neg = labels[idx, None] != labels[None, :]
        nearest = torch.where(neg, rows, torch.full_like(rows, float("inf"))).argmin(1)
        n_col = torch.where(neg.any(1), nearest, rows.argmax(1))
        h = d_ap - rows.gather(1, n_col[:, None])[:, 0]
        fixed = torch.log1p(torch.exp(h)) if soft else torch.relu(h + margin)
        values = values.index_put((idx,), fixed.to(values.dtype))
    return (values.sum() / values.shape[0]).to(y_pred.dtype)


class TripletSemiHardLoss(KerasLoss):
    """tfa.losses.TripletSemiHardLoss(margin=1.0, distance_metric="L2", name=None), called as
    loss(y_true, y_pred, sample_weight=None)."""

    def __init__(self, margin=1.0, distance_metric="L2", name=None, reduction="none"):
        super().__init__(reduction, name, name_optional=True)
        self.margin = check_real(margin, "margin")
        self.distance_metric = _metric(distance_metric)

    def values(self, y_true, y_pred):
        return triplet_semihard_loss(y_true, y_pred, self.margin, self.distance_metric)

    def _fn_config(self):
        return {"margin": self.margin, "distance_metric": self.distance_metric}


class TripletHardLoss(KerasLoss):
    """tfa.losses.TripletHardLoss(margin=1.0, soft=False, distance_metric="L2", name=None),
    called as loss(y_true, y_pred, sample_weight=None)."""

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, reduction="none"):
        super().__init__(reduction, name, name_optional=True)
        self.margin = check_real(margin, "margin")
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be True or False, got {type(soft).__name__}")
        self.soft, self.distance_metric = soft, _metric(distance_metric)

    def values(self, y_true, y_pred):
        return triplet_hard_loss(y_true, y_pred, self.margin, self.soft, self.distance_metric)

    def _fn_config(self):
        return {"margin": self.margin, "soft": self.soft, "distance_metric": self.distance_metric}
