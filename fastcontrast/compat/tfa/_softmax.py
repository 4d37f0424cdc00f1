"""TF Addons' N-pairs loss on torch tensors.

    npairs_loss(y_true, y_pred)

y_true: labels, shape [batch]; y_pred: a [batch, batch] similarity matrix (typically
anchors @ positivesᵀ). As in tfa.losses.npairs_loss, the targets are soft: row i spreads
its mass evenly over every j with y_j = y_i (the diagonal included, so no row is empty),
then softmax cross-entropy per row, averaged over rows:

    loss = mean_i [ −Σ_j t_ij · log_softmax(y_pred_i)_j ],  t_ij = [y_i = y_j] / #{k : y_k = y_i}

Labels are compared exactly as given (any numeric dtype). fp16/bf16 similarities are
computed in fp32 and the result cast back. The input is already dense, so this function
is dense too.
"""
from __future__ import annotations

import torch

from ._inputs import check_targets_and_scores

__all__ = ["npairs_loss", "NpairsLoss"]


def _check(y_true, y_pred):
    check_targets_and_scores(y_true, y_pred)
    if y_true.dim() == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.dim() != 1:
        raise ValueError(f"y_true must have shape [batch], got {tuple(y_true.shape)}")
    b = y_true.shape[0]
    if b == 0:
        raise ValueError("y_true is empty: the batch needs at least one row")
    if y_pred.shape != (b, b):
        raise ValueError(f"y_pred must have shape [batch, batch] = [{b}, {b}], got {tuple(y_pred.shape)}")
    return y_true


def npairs_loss(y_true, y_pred):
    """tfa.losses.npairs_loss(y_true, y_pred): a scalar."""
    y_true = _check(y_true, y_pred)
    compute = torch.float64 if y_pred.dtype == torch.float64 else torch.float32
    logits = y_pred.to(compute)
    same = (y_true[:, None] == y_true[None, :]).to(compute)
    targets = same / same.sum(1, keepdim=True)
    loss = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    return loss.to(y_pred.dtype)


class NpairsLoss(torch.nn.Module):
    """tfa.losses.NpairsLoss(): npairs_loss as a Module (already a scalar, so Keras'
    reductions leave it unchanged)."""

    def forward(self, y_true, y_pred):
        return npairs_loss(y_true, y_pred)
