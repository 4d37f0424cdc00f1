"""pytorch-metric-learning's ContrastiveLoss, computed by fastcontrast.

    loss_fn = losses.ContrastiveLoss(pos_margin=0, neg_margin=1)
    loss = loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)

Same defaults as PML 2.9.0: the normalized Euclidean distance (LpDistance()), positive
terms relu(d − pos_margin), negative terms relu(neg_margin − d) (flipped for similarities),
each set averaged over its non-zero terms (AvgNonZeroReducer) and the two averages added.
PML conventions kept on purpose:
- self pairs are dropped only when the references are the batch itself or `ref_labels` is
  the very same tensor object as `labels`;
- triplets in `indices_tuple` become pairs (a, p) and (a, n), duplicates kept;
- when there is at most one positive pair and at most one negative pair, the loss is an
  exact 0 (PML's early exit), still attached to the graph;
- the result has the embeddings' dtype.
Reducers (each of the two parts reduced by its own copy, as PML does), embedding
regularizers, distances without a fused form and collect_stats: see
fastcontrast.compat.pml._base.
One known difference: PML's Euclidean distance (torch.cdist) can leave rounding noise
(~1e-4 in float32) where two embeddings are identical, making such a positive term count
as non-zero; fastcontrast snaps that distance to exactly 0.
"""
from __future__ import annotations

import math

import torch

from ... import metrics
from ..._reduce import LossTerms, reduce_terms
from ...pair_margin import ContrastiveLoss as _FastContrastiveLoss
from ._base import PMLLossBase
from .distances import LpDistance
from ._pair_miners import _MinedSelection

__all__ = ["ContrastiveLoss"]

_REDUCERS = {"AvgNonZeroReducer": "avg_nonzero", "MeanReducer": "mean"}


def _average_from_reducer(reducer) -> str:
    """What fastcontrast's own reduce() divides by (the distributed wrapper's path)."""
    if reducer is None:
        return "avg_nonzero"
    if isinstance(reducer, str):
        if reducer not in _REDUCERS.values():
            raise ValueError(f"reducer must be one of {sorted(_REDUCERS.values())}, got {reducer!r}")
        return reducer
    return _REDUCERS.get(type(reducer).__name__, "avg_nonzero")


def _distance_name(metric: metrics.Metric) -> tuple[str, bool]:
    name = {"dot": "dot", "sqeuclidean": "squared_euclidean", "euclidean": "euclidean"}[metric.kind]
    return name, metric.normalize


class ContrastiveLoss(PMLLossBase):
    """pytorch_metric_learning.losses.ContrastiveLoss(pos_margin=0, neg_margin=1, distance=None,
    reducer=None, embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None).
    `distance`: a fastcontrast.compat.pml.distances object or PML's own."""

    pml_name = "ContrastiveLoss"
    sub_losses = ("pos_loss", "neg_loss")
    reduction_types = ("pos_pair", "neg_pair")
    default_reducer = "AvgNonZeroReducer"
    fuses_term_bounds = True

    def __init__(self, pos_margin=0, neg_margin=1, distance=None, reducer=None,
                 embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None, backend=None):
        super().__init__()
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats,
                        dict(pos_margin=pos_margin, neg_margin=neg_margin))
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.loss = None
        if self.metric is not None:
            name, normalize = _distance_name(self.metric)
            self.loss = _FastContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, power=1, distance=name,
                                             normalize=normalize, reduction="mean",
                                             average=_average_from_reducer(reducer), backend=backend)

    def default_distance(self):
        return LpDistance()

    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None) -> LossTerms:
        from ._triplet import check_ratio_reducer
        check_ratio_reducer(self)
        if self.loss is None:
            raise ValueError("ContrastiveLoss: this distance has no fused form")
        return self.loss.terms(embeddings, labels, ref_emb, ref_labels, self_offset, indices_tuple)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        loss = reduce_terms(terms, "mean", self.loss.average, denominators)
        return self._early_exit(terms, loss)

    @staticmethod
    def _early_exit(terms, loss):
        # PML returns 0 when there is at most one positive and at most one negative pair
        counts = terms.counts.sum(0)
        early_exit = (counts[0] <= 1) & (counts[1] <= 1)
        return torch.where(early_exit, loss * 0, loss)

    def _fused(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, plans):
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        if ref_emb is None:
            self_offset = 0
        else:
            if ref_labels is None and indices_tuple is None:
                # PML compares labels with themselves then
                if not isinstance(ref_emb, torch.Tensor) or ref_emb.shape[0] != (0 if labels is None else labels.shape[0]):
                    raise ValueError("ref_labels is required when ref_emb has a different number of rows")
                ref_labels = labels
            self_offset = 0 if (ref_labels is labels and labels is not None) else -1
        if self._self_offset_override is not None and indices_tuple is None:
            self_offset = self._self_offset_override
        bounds = None
        if plans is not None and any(hasattr(p, "term_bounds") for p in plans):
            # ThresholdReducer: each part sums only the terms inside its (low, high)
            bounds = tuple(getattr(p, "term_bounds", (0.0, math.inf)) for p in plans)
        mined, rows = None, {}
        if isinstance(indices_tuple, _MinedSelection):
            if indices_tuple.fuses_with(self.metric, embeddings, labels, ref_emb, ref_labels):
                mined, indices_tuple = indices_tuple, None
                self_offset = mined.self_offset
                ref_labels = mined._refs()[1]
                l_bounds, slack = mined.row_bounds()  # per-anchor bounds, in d = −l units
                rows = dict(row_bounds=-l_bounds, bound_slack=slack)
            else:
                indices_tuple = tuple(indices_tuple.materialize())
        terms = self.loss.terms(embeddings, labels, ref_emb, ref_labels, self_offset, indices_tuple,
                                term_bounds=bounds, **rows)
        if mined is not None and mined._counts is None:  # the pass counted the mined pairs
            mined._counts = terms.counts.detach()
        if plans is None:
            return self.reduce(terms).to(embeddings.dtype)
        return self._early_exit(terms, self.apply_plans(plans, terms, labels)).to(embeddings.dtype)
