"""TF Addons' N-pairs losses on torch tensors.

    npairs_loss(y_true, y_pred)
    npairs_multilabel_loss(y_true, y_pred)

y_pred: a [batch, batch] similarity matrix (typically anchors @ positivesᵀ), as in TF
Addons; each row is a vector of logits. The targets are soft, and both losses are the
softmax cross-entropy of each row against them, averaged over rows:

    loss = mean_i [ LSE_j y_pred_ij − Σ_j t_ij · y_pred_ij ],   Σ_j t_ij = 1

- npairs_loss: y_true labels, shape [batch] (or [batch, 1]);
  t_ij = [y_i = y_j] / #{k : y_k = y_i} (the diagonal included, so no row is empty).
  Labels are compared exactly as given (any numeric dtype), as TF Addons compares them.
- npairs_multilabel_loss: y_true a [batch, classes] multi-hot matrix (bool, integer or
  float; a torch sparse tensor is densified first); t_ij = (Y Yᵀ)_ij / Σ_k (Y Yᵀ)_ik, i.e.
  row i spreads its mass over j in proportion to the number of labels i and j share.
  Entries need not be 0/1 (the same formula with counts), but must be finite and ≥ 0.
  The target-weighted sum is computed as Σ_c Y_ic (y_pred Y)_ic and the row sums as
  Y_i · Σ_k Y_k, so no [batch, batch] target matrix is formed; y_pred itself is dense, as
  TF Addons' signature has it.

Documented difference: a row of y_true with no label at all has no target (TF Addons
divides 0 by 0 and its loss is NaN); here that row contributes 0, with a zero gradient, and
still counts in the mean over rows. fp16/bf16 similarities are computed in fp32 and the
result cast back.

`NpairsLoss` and `NpairsMultilabelLoss` are the Keras class forms (see _keras.py): TF Addons
fixes their reduction to "none", so the default here is "none" too; the scalar is then
multiplied by sample_weight as Keras does.
"""
from __future__ import annotations

import torch

from ._inputs import check_targets_and_scores
from ._keras import KerasLoss

__all__ = ["npairs_loss", "NpairsLoss", "npairs_multilabel_loss", "NpairsMultilabelLoss"]


def _check_scores(y_pred, b):
    if b == 0:
        raise ValueError("y_true is empty: the batch needs at least one row")
    if y_pred.shape != (b, b):
        raise ValueError(f"y_pred must have shape [batch, batch] = [{b}, {b}], got {tuple(y_pred.shape)}")


def _check(y_true, y_pred):
    check_targets_and_scores(y_true, y_pred)
    if y_true.dim() == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.dim() != 1:
        raise ValueError(f"y_true must have shape [batch], got {tuple(y_true.shape)}")
    _check_scores(y_pred, y_true.shape[0])
    return y_true


def _compute_dtype(y_pred):
    return torch.float64 if y_pred.dtype == torch.float64 else torch.float32


def npairs_loss(y_true, y_pred):
    """tfa.losses.npairs_loss(y_true, y_pred): a scalar."""
    y_true = _check(y_true, y_pred)
    compute = _compute_dtype(y_pred)
    logits = y_pred.to(compute)
    same = (y_true[:, None] == y_true[None, :]).to(compute)
    targets = same / same.sum(1, keepdim=True)
    loss = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    return loss.to(y_pred.dtype)


def _check_multilabel(y_true, y_pred):
    if isinstance(y_true, torch.Tensor) and y_true.layout != torch.strided:
        y_true = y_true.to_dense()
    check_targets_and_scores(y_true, y_pred)
    if y_true.dim() != 2:
        raise ValueError(f"y_true must be a [batch, classes] multi-hot matrix, got shape {tuple(y_true.shape)}")
    if y_true.shape[1] == 0:
        raise ValueError("y_true has zero columns: it needs at least one class")
    _check_scores(y_pred, y_true.shape[0])
    if y_true.dtype != torch.bool:
        bounds = torch.stack(torch.aminmax(y_true.detach().to(torch.float64)))
        if not bool(torch.isfinite(bounds).all()):
            raise ValueError("y_true contains NaN or Inf")
        if float(bounds[0]) < 0:
            raise ValueError(f"y_true must be >= 0 (a multi-hot matrix), got a value {float(bounds[0])}")
    return y_true


def npairs_multilabel_loss(y_true, y_pred):
    """tfa.losses.npairs_multilabel_loss(y_true, y_pred): a scalar (see the module docstring)."""
    y_true = _check_multilabel(y_true, y_pred)
    compute = _compute_dtype(y_pred)
    logits = y_pred.to(compute)
    y = y_true.to(compute)
    mass = y @ y.sum(0)                      # Σ_j (Y Yᵀ)_ij, per row
    weighted = (y * (logits @ y)).sum(1)     # Σ_j (Y Yᵀ)_ij · y_pred_ij
    has = mass > 0
    cross = torch.logsumexp(logits, 1) - weighted / torch.where(has, mass, torch.ones_like(mass))
    loss = torch.where(has, cross, torch.zeros_like(cross)).mean()
    return loss.to(y_pred.dtype)


class NpairsLoss(KerasLoss):
    """tfa.losses.NpairsLoss(name="npairs_loss"), called as loss(y_true, y_pred, sample_weight=None)."""

    def __init__(self, name="npairs_loss", reduction="none"):
        super().__init__(reduction, name, name_optional=False)

    def values(self, y_true, y_pred):
        return npairs_loss(y_true, y_pred)


class NpairsMultilabelLoss(KerasLoss):
    """tfa.losses.NpairsMultilabelLoss(name="npairs_multilabel_loss"), called as
    loss(y_true, y_pred, sample_weight=None)."""

    def __init__(self, name="npairs_multilabel_loss", reduction="none"):
        super().__init__(reduction, name, name_optional=False)

    def values(self, y_true, y_pred):
        return npairs_multilabel_loss(y_true, y_pred)
