"""pytorch-metric-learning's TripletMarginLoss, computed by fastcontrast.

    loss_fn = losses.TripletMarginLoss(margin=0.05, swap=False, smooth_loss=False)
    loss = loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)

Same defaults as PML 2.9.0: the normalized Euclidean distance (LpDistance()), every valid
triplet when no indices are given, term relu(d_ap − d_an + margin) (softplus with
smooth_loss, comparisons flipped for similarities), averaged over the non-zero terms
(AvgNonZeroReducer; MeanReducer averages over all triplets). The triplets are never listed:
the sorted per-anchor pass of fastcontrast.triplet computes the same sums.

`indices_tuple` may be PML-style index tensors (triplets, or pairs converted as PML does) or
the lazy selection returned by fastcontrast.compat.pml.miners, which is fused into the
loss's pass when it was mined on the same tensors with the same distance (otherwise it is
materialized first). PML conventions kept on purpose:
- self pairs are dropped only when the references are the batch itself or `ref_labels` is
  the very same tensor object as `labels`;
- with nothing to average the loss is an exact 0 still attached to the graph;
- the result has the embeddings' dtype.
Reducers, embedding regularizers, distances without a fused form and collect_stats: see
fastcontrast.compat.pml._base (most reducers are applied to the per-anchor sums; a few need
each triplet's term and use pytorch-metric-learning's own loss).
`triplets_per_anchor=N`: pytorch-metric-learning's own sampler draws the triplets (the same
draws from torch's global generator, so the same triplets for the same seed), and
fastcontrast computes the loss on exactly those (gathered distances, O(triplets)).
Known differences:
- with `ref_emb` and swap=True PML takes d_pn from query row p (an index into the
  references; wrong or out of range when the two sets differ); fastcontrast uses d(r_p, r_n);
- PML's Euclidean distance (torch.cdist) can leave rounding noise where two embeddings are
  identical; fastcontrast snaps that distance to exactly 0.
"""
from __future__ import annotations

import torch

from ... import metrics
from ..._reduce import LossTerms
from ...triplet import MinedTriplets
from ...triplet import TripletMarginLoss as _FastTripletMarginLoss
from ._base import PMLLossBase
from .distances import LpDistance

__all__ = ["TripletMarginLoss"]

_REDUCERS = {"AvgNonZeroReducer": "avg_nonzero", "MeanReducer": "mean"}


def _average_from_reducer(reducer) -> str:
    """What fastcontrast's own reduce() divides by, for the reducers that are a ratio of
    global sums (the distributed wrapper's path); others are applied in forward()."""
    if reducer is None:
        return "avg_nonzero"
    return _REDUCERS.get(type(reducer).__name__, "avg_nonzero")


def distance_options(metric: metrics.Metric) -> dict:
    """fastcontrast `distance=` / `normalize=` keywords for a Metric."""
    name = {"dot": "dot", "sqeuclidean": "squared_euclidean", "euclidean": "euclidean"}[metric.kind]
    return dict(distance=name, normalize=metric.normalize)


def pml_self_offset(labels, ref_emb, ref_labels):
    """PML drops self pairs when the references are the batch itself, or when ref_labels is
    the labels object (or missing: PML then compares labels with themselves)."""
    if ref_emb is None or ref_labels is None or ref_labels is labels:
        return 0
    return -1


def check_triplets_per_anchor(value):
    if value == "all":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"triplets_per_anchor must be 'all' or a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"triplets_per_anchor must be 'all' or a positive int, got {value}")
    return value


def check_ratio_reducer(loss):
    """fastcontrast's terms()/reduce() (the distributed wrapper) express a reduction as a
    ratio of global sums: only the default reducer, MeanReducer or AvgNonZeroReducer."""
    from ._base import part_reducer
    for name in loss.sub_losses:
        r = part_reducer(loss.reducer, name)
        if r is not None and type(r).__name__ not in ("AvgNonZeroReducer", "MeanReducer", "str"):
            raise ValueError(f"reducer: {type(r).__name__} cannot be split across processes; "
                             "use MeanReducer or AvgNonZeroReducer with the distributed wrapper")
    if loss.embedding_regularizer is not None:
        raise ValueError("embedding_regularizer is not supported by the distributed wrapper")


class TripletMarginLoss(PMLLossBase):
    """pytorch_metric_learning.losses.TripletMarginLoss(margin=0.05, swap=False,
    smooth_loss=False, triplets_per_anchor="all", distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None).
    `distance`: a fastcontrast.compat.pml.distances object or PML's own."""

    pml_name = "TripletMarginLoss"
    sub_losses = ("loss",)
    reduction_types = ("triplet",)
    default_reducer = "AvgNonZeroReducer"
    fuses_term_bounds = True

    def __init__(self, margin=0.05, swap=False, smooth_loss=False, triplets_per_anchor="all", distance=None,
                 reducer=None, embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None,
                 backend=None):
        super().__init__()
        check_triplets_per_anchor(triplets_per_anchor)
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats,
                        dict(margin=margin, swap=swap, smooth_loss=smooth_loss,
                             triplets_per_anchor=triplets_per_anchor))
        self.margin, self.swap, self.smooth_loss = margin, swap, smooth_loss
        self.triplets_per_anchor = triplets_per_anchor
        self.loss = None
        if self.metric is not None:
            self.loss = _FastTripletMarginLoss(margin=margin, mining="batch_all", swap=bool(swap),
                                               smooth=bool(smooth_loss), reduction="mean",
                                               average=_average_from_reducer(reducer), backend=backend,
                                               **distance_options(self.metric))

    def default_distance(self):
        return LpDistance()

    def _fused_core(self):
        if self.loss is None:
            raise ValueError(f"{type(self).__name__}: this distance has no fused form")
        return self.loss

    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0) -> LossTerms:
        check_ratio_reducer(self)
        return self._fused_core().terms(embeddings, labels, ref_emb, ref_labels, self_offset)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        return self._fused_core().reduce(terms, denominators)

    def _fused(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, plans):
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        if isinstance(indices_tuple, MinedTriplets) and labels is None:
            labels = indices_tuple.labels
        self_offset = pml_self_offset(labels, ref_emb, ref_labels)
        if isinstance(indices_tuple, MinedTriplets) and indices_tuple.embeddings is embeddings \
                and indices_tuple.ref_emb is ref_emb:
            self_offset = indices_tuple.self_offset  # the selection carries its self-pair rule
        elif self._self_offset_override is not None:
            self_offset = self._self_offset_override
        if ref_emb is not None and ref_labels is None and labels is not None:
            if not isinstance(ref_emb, torch.Tensor) or ref_emb.dim() < 1 or ref_emb.shape[0] != labels.shape[0]:
                raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
            ref_labels = labels
        if indices_tuple is None and self.triplets_per_anchor != "all":
            indices_tuple = self._sampled(embeddings, labels, ref_emb, ref_labels, self_offset)
        bounds = None
        if plans is not None and hasattr(plans[0], "term_bounds"):
            bounds = plans[0].term_bounds  # ThresholdReducer: only the terms in (low, high) count
        terms = self.loss._forward_terms(embeddings, labels, indices_tuple, ref_emb, ref_labels, self_offset,
                                         term_bounds=bounds, uniform_grad=plans is None)  # core: a "mean"
        if isinstance(indices_tuple, MinedTriplets) and hasattr(indices_tuple, "note_counts"):
            indices_tuple.note_counts(terms.counts)
        if plans is None:
            return self.reduce(terms).to(embeddings.dtype)
        return self.apply_plans(plans, terms, labels).to(embeddings.dtype)

    def _sampled(self, embeddings, labels, ref_emb, ref_labels, self_offset):
        """pytorch-metric-learning's random triplets: its own sampler, the same draws."""
        if labels is None:
            raise ValueError("labels are required with triplets_per_anchor")
        from ._pml import require
        lmu = require("utils.loss_and_miner_utils", "TripletMarginLoss(triplets_per_anchor=N)")
        labels = labels.to(embeddings.device)
        ref = labels if self_offset == 0 else ref_labels.to(embeddings.device)
        return lmu.get_random_triplet_indices(labels, ref_labels=ref, t_per_anchor=self.triplets_per_anchor)
