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
Known differences:
- `triplets_per_anchor` other than "all" (PML's random sampling) is refused;
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
from .distances import LpDistance, metric_from_distance

__all__ = ["TripletMarginLoss"]

_REDUCERS = {"AvgNonZeroReducer": "avg_nonzero", "MeanReducer": "mean"}


def _average_from_reducer(reducer) -> str:
    if reducer is None:
        return "avg_nonzero"
    name = type(reducer).__name__
    if name in _REDUCERS:
        return _REDUCERS[name]
    raise TypeError(f"reducer must be None, AvgNonZeroReducer() or MeanReducer(), got {name}")


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


class TripletMarginLoss(torch.nn.Module):
    """pytorch_metric_learning.losses.TripletMarginLoss(margin=0.05, swap=False,
    smooth_loss=False, triplets_per_anchor="all", distance=None, reducer=None).
    `distance`: a fastcontrast.compat.pml.distances object or PML's own."""

    def __init__(self, margin=0.05, swap=False, smooth_loss=False, triplets_per_anchor="all", distance=None,
                 reducer=None, embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None,
                 backend=None):
        super().__init__()
        if embedding_regularizer is not None:
            raise ValueError("embedding_regularizer is not supported by fastcontrast's TripletMarginLoss")
        if triplets_per_anchor != "all":
            raise ValueError("triplets_per_anchor: only 'all' is supported (PML's random sampling is not)")
        self.distance = LpDistance() if distance is None else distance
        self.metric = metric_from_distance(self.distance, "distance")
        self.margin, self.swap, self.smooth_loss = margin, swap, smooth_loss
        self.triplets_per_anchor, self.reducer = triplets_per_anchor, reducer
        self.loss = _FastTripletMarginLoss(margin=margin, mining="batch_all", swap=bool(swap), smooth=bool(smooth_loss),
                                           reduction="mean", average=_average_from_reducer(reducer), backend=backend,
                                           **distance_options(self.metric))

    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0) -> LossTerms:
        return self.loss.terms(embeddings, labels, ref_emb, ref_labels, self_offset)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        return self.loss.reduce(terms, denominators)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        if isinstance(indices_tuple, MinedTriplets) and labels is None:
            labels = indices_tuple.labels
        self_offset = pml_self_offset(labels, ref_emb, ref_labels)
        if ref_emb is not None and ref_labels is None and labels is not None:
            if not isinstance(ref_emb, torch.Tensor) or ref_emb.dim() < 1 or ref_emb.shape[0] != labels.shape[0]:
                raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
            ref_labels = labels
        terms = self.loss._forward_terms(embeddings, labels, indices_tuple, ref_emb, ref_labels, self_offset)
        return self.reduce(terms).to(embeddings.dtype)
