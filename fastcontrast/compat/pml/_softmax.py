"""pytorch-metric-learning's NTXentLoss, SupConLoss and NPairsLoss, computed by fastcontrast.

    loss_fn = losses.NTXentLoss(temperature=0.07)
    loss = loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)

Same defaults as PML 2.9.0: CosineSimilarity() for NTXentLoss and SupConLoss,
DotProductSimilarity() (which normalizes by default) for NPairsLoss; any distance object is
accepted (a distance d enters the logits as −d). Reducers: NTXentLoss and NPairsLoss
average their terms (MeanReducer), SupConLoss averages the anchors whose loss is > 0
(AvgNonZeroReducer; anchors without positives drop out). A PML MeanReducer, AvgNonZeroReducer
or SumReducer object may be passed as `reducer`; other reducers are refused.

PML conventions kept on purpose:
- self pairs are dropped only when the references are the batch itself or `ref_labels` is
  the very same tensor object as `labels`;
- NTXentLoss: one term per positive pair, other positives stay out of the denominator;
  triplets in `indices_tuple` become pairs (a, p) and (a, n), repeats counted as often as
  they occur; SupConLoss treats the pairs as sets;
- the loss is an exact 0 (attached to the graph) when there is at most one positive and at
  most one negative pair, and for SupConLoss also when there is no positive or no negative
  pair at all;
- NPairsLoss keeps the first positive pair of each label and refuses ref_emb;
- the result has the embeddings' dtype.
Not reproduced: PML adds the smallest normal float inside NTXentLoss's log, which only
matters once a pair's probability is below ~1e-38 (float32); fastcontrast keeps the exact
value there. `embedding_regularizer` is not supported.
"""
from __future__ import annotations

import torch

from ..._reduce import LossTerms, reduce_terms
from ..._validation import check_embeddings, check_pair
from ... import softmax as _softmax
from .distances import CosineSimilarity, DotProductSimilarity, metric_from_distance

__all__ = ["NTXentLoss", "SupConLoss", "NPairsLoss"]

# PML reducer class name -> what the average divides by ("all": every element counts)
_REDUCERS = {"MeanReducer": "mean", "AvgNonZeroReducer": "avg_nonzero", "SumReducer": "sum"}


def _reduction_from_reducer(reducer, default: str) -> str:
    if reducer is None:
        return default
    name = type(reducer).__name__
    if name not in _REDUCERS:
        raise TypeError(f"reducer must be None, MeanReducer(), AvgNonZeroReducer() or SumReducer(), got {name}")
    if name == "AvgNonZeroReducer" and (getattr(reducer, "low", 0) != 0 or getattr(reducer, "high", None) is not None):
        raise ValueError("reducer: only AvgNonZeroReducer() with its default thresholds is supported")
    return _REDUCERS[name]


def _distance_options(distance) -> tuple[str, bool]:
    metric = metric_from_distance(distance, "distance")
    name = {"dot": "dot", "sqeuclidean": "squared_euclidean", "euclidean": "euclidean"}[metric.kind]
    return name, metric.normalize


def _check_common(embedding_regularizer):
    if embedding_regularizer is not None:
        raise ValueError("embedding_regularizer is not supported by fastcontrast's compat losses; "
                         "add the regularization term to the loss yourself")


def _zero(embeddings):
    return (embeddings * 0).sum()


def _pair_totals(labels, ref_labels, self_offset):
    """(#positive pairs, #negative pairs) that PML would enumerate, from the labels alone."""
    diff = _softmax.different_label_counts(labels, ref_labels)
    same = ref_labels.shape[0] - diff
    n_pos = int(same.sum()) - (labels.shape[0] if self_offset >= 0 else 0)
    return n_pos, int(diff.sum())


class _PMLSoftmaxLoss(torch.nn.Module):
    """Argument handling shared by NTXentLoss and SupConLoss."""

    default_reducer = "mean"
    count_every_element = False  # MeanReducer divides by every element, not only counted ones

    def __init__(self, temperature, distance, reducer, embedding_regularizer, backend):
        super().__init__()
        _check_common(embedding_regularizer)
        self.distance = self.default_distance() if distance is None else distance
        self.reducer = reducer
        self.reduction = _reduction_from_reducer(reducer, self.default_reducer)
        name, normalize = _distance_options(self.distance)
        self.loss = self.make_loss(temperature, name, normalize, backend)

    @property
    def temperature(self):
        return self.loss.temperature

    def default_distance(self):
        return CosineSimilarity()

    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None) -> LossTerms:
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            tuples = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            terms = self.loss.tuple_terms(embeddings, tuples, ref_emb)
        else:
            terms = self.loss.terms(embeddings, labels, ref_emb, ref_labels, self_offset)
        if self.reduction == "mean" and self.count_every_element:
            terms = LossTerms(terms.values, torch.ones_like(terms.counts), terms.nonzero)
        return terms

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        if self.reduction == "sum":
            return reduce_terms(terms, "sum")
        return reduce_terms(terms, "mean", self.reduction, denominators)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        self.loss._check_tensors(embeddings, labels, None, None)
        if ref_emb is None:
            ref_labels_eff, self_offset = labels, 0
        else:
            if ref_labels is None and indices_tuple is None:
                # PML compares labels with themselves then, which only lines up when N = B
                if (labels is None or not isinstance(ref_emb, torch.Tensor)
                        or ref_emb.dim() != 2 or ref_emb.shape[0] != labels.shape[0]):
                    raise ValueError("ref_labels is required when ref_emb is given")
                ref_labels = labels
            if labels is not None and ref_labels is not None:
                self.loss._check_tensors(embeddings, labels, ref_emb, ref_labels)
            else:
                check_embeddings(ref_emb, "ref_emb")
                check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
            ref_labels_eff = ref_labels
            self_offset = 0 if ref_labels is labels else -1
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            a1, p, a2, neg = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            n_pos, n_neg = a1.numel(), a2.numel()
            indices_tuple = (a1, p, a2, neg)
        else:
            n_pos, n_neg = _pair_totals(labels, ref_labels_eff, self_offset)
        if (n_pos <= 1 and n_neg <= 1) or self.zero_without(n_pos, n_neg):
            return _zero(embeddings)
        terms = self.terms(embeddings, labels, ref_emb, ref_labels_eff if ref_emb is not None else None,
                           self_offset, indices_tuple)
        return self.reduce(terms).to(embeddings.dtype)

    def zero_without(self, n_pos, n_neg) -> bool:
        return False


class NTXentLoss(_PMLSoftmaxLoss):
    """pytorch_metric_learning.losses.NTXentLoss(temperature=0.07, distance=None, reducer=None)."""

    def __init__(self, temperature=0.07, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        super().__init__(temperature, distance, reducer, embedding_regularizer, backend)

    def make_loss(self, temperature, name, normalize, backend):
        return _softmax.NTXentLoss(temperature, form="pair", distance=name, normalize=normalize,
                                   backend=backend)


class SupConLoss(_PMLSoftmaxLoss):
    """pytorch_metric_learning.losses.SupConLoss(temperature=0.1, distance=None, reducer=None)."""

    default_reducer = "avg_nonzero"

    def __init__(self, temperature=0.1, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        super().__init__(temperature, distance, reducer, embedding_regularizer, backend)

    # PML's SupCon losses are one per anchor: MeanReducer divides by every anchor
    count_every_element = True

    def make_loss(self, temperature, name, normalize, backend):
        return _softmax.SupConLoss(temperature, distance=name, normalize=normalize, backend=backend)

    def zero_without(self, n_pos, n_neg) -> bool:
        return n_pos == 0 or n_neg == 0


class NPairsLoss(torch.nn.Module):
    """pytorch_metric_learning.losses.NPairsLoss(distance=None, reducer=None): the first
    positive pair of each label, cross-entropy of sim(anchors, positives) against arange."""

    def __init__(self, distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
                 collect_stats=None, backend=None):
        super().__init__()
        _check_common(embedding_regularizer)
        self.distance = DotProductSimilarity() if distance is None else distance
        self.reducer = reducer
        self.reduction = _reduction_from_reducer(reducer, "mean")
        name, normalize = _distance_options(self.distance)
        self.loss = _softmax.NPairLoss(distance=name, normalize=normalize, backend=backend)

    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None) -> LossTerms:
        if ref_emb is not None and not (ref_emb is embeddings and ref_labels is labels):
            raise ValueError("ref_emb is not supported by NPairsLoss")
        self.loss._check_tensors(embeddings, labels, None, None)
        pairs = None
        if indices_tuple is not None:
            a1, p, _, _ = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], embeddings.shape[0])
            pairs = (a1, p)
        return self.loss._pair_terms(embeddings, labels, pairs)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        if self.reduction == "sum":
            return reduce_terms(terms, "sum")
        return reduce_terms(terms, "mean", self.reduction, denominators)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if labels is None:
            raise ValueError("labels are required for NPairsLoss")
        terms = self.terms(embeddings, labels, ref_emb, ref_labels, 0, indices_tuple)
        if terms.values.shape[0] == 0:
            return _zero(embeddings)
        return self.reduce(terms).to(embeddings.dtype)
