"""Per-anchor loss terms and the reductions every family shares.

A family Function returns, per anchor, the sum of its loss terms and how many terms there
were (and how many were > 0). Every reduction a reference library uses is a ratio of global
sums of those, which is also what makes the distributed wrapper exact: it all-reduces the
same sums.

    "mean"        Σ values / Σ counts      (0 when Σ counts = 0)
    "avg_nonzero" Σ values / Σ nonzero     (pytorch-metric-learning's AvgNonZeroReducer)
    "sum"         Σ values
    "none"        values per anchor (summed over parts)

`parts`: a loss may have K separately reduced parts (PML ContrastiveLoss reduces positive and
negative pairs separately and adds them); values/counts/nonzero are then (B, K).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    """Per-anchor loss terms: what every family computes and every reduction is a ratio of.

    values_i = Σ of anchor i's terms, counts_i = their number, nonzero_i = how many are > 0;
    with K separately reduced parts (the contrastive loss' positive and negative pairs) each
    field is (B, K).

    Args:
        values (Tensor (B,) or (B, K)): differentiable sums of terms.
        counts (Tensor, same shape, int64): number of terms.
        nonzero (Tensor, same shape, int64): number of terms > 0.

    Returns:
        LossTerms: a dataclass; parts() lists (values, counts, nonzero) per part.

    Raises:
        Nothing.

    Example:
        >>> import torch, fastcontrast as fc
        >>> terms = fc.LossTerms(torch.tensor([1.0, 0.0]), torch.tensor([2, 1]), torch.tensor([1, 0]))
        >>> len(terms.parts())
        1
    """
    values: torch.Tensor   # (B,) or (B, K), differentiable
    counts: torch.Tensor   # same shape, number of terms
    nonzero: torch.Tensor  # same shape, number of terms > 0

    def parts(self):
        if self.values.dim() == 1:
            return [(self.values, self.counts, self.nonzero)]
        return [(self.values[:, k], self.counts[:, k], self.nonzero[:, k]) for k in range(self.values.shape[1])]


def index_counts(index: torch.Tensor, size: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """int64 (size,): how often each value in [0, size) occurs in index (where keep is True,
    if given). A scatter of fixed size: unlike torch.bincount (which reads max(index) on a
    GPU) or index[keep] (sized by its values), no host sync."""
    ones = torch.ones_like(index, dtype=torch.int64) if keep is None else keep.to(torch.int64)
    return torch.zeros(size, dtype=torch.int64, device=index.device).index_add_(0, index, ones)


def safe_ratio(total: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """total / denom, or an exact 0 still attached to the graph when denom is 0."""
    denom = denom.to(total.dtype)
    return torch.where(denom > 0, total / denom.clamp_min(1), total * 0)


def reduce_terms(terms: LossTerms, reduction: str, average: str = "mean",
                 denominators: list | None = None) -> torch.Tensor:
    """Reduce LossTerms to a loss, each part separately and the parts added.

    "mean": Σ values / Σ counts (average="mean") or Σ values / Σ nonzero ("avg_nonzero"), an
    exact 0 attached to the graph when the denominator is 0; "sum": Σ values; "none": values
    per anchor (summed over parts).

    Args:
        terms (LossTerms): per-anchor terms.
        reduction (str): "mean", "sum" or "none".
        average (str, default "mean"): what "mean" divides by: "mean" (counts) or
            "avg_nonzero" (nonzero).
        denominators (list or None, default None): per-part denominators replacing the local
            ones (GlobalBatchLoss passes global counts).

    Returns:
        Tensor: a scalar, or (B,) for reduction="none".

    Raises:
        IndexError: fewer denominators than parts.

    Example:
        >>> import torch, fastcontrast as fc
        >>> terms = fc.LossTerms(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2, 1, 1]), torch.tensor([1, 0, 1]))
        >>> fc.reduce_terms(terms, "mean", "avg_nonzero")
        tensor(1.5000)
    """
    if reduction == "none":
        return terms.values if terms.values.dim() == 1 else terms.values.sum(1)
    out = None
    for k, (v, c, nz) in enumerate(terms.parts()):
        total = v.sum()
        if reduction == "sum":
            part = total
        else:
            d = denominators[k] if denominators is not None else (c if average == "mean" else nz).sum()
            part = safe_ratio(total, torch.as_tensor(d, device=total.device))
        out = part if out is None else out + part
    return out
