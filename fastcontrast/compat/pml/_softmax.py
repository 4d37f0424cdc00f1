"""pytorch-metric-learning's NTXentLoss, SupConLoss and NPairsLoss, computed by fastcontrast.

    loss_fn = losses.NTXentLoss(temperature=0.07)
    loss = loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)

Same defaults as PML 2.9.0: CosineSimilarity() for NTXentLoss and SupConLoss,
DotProductSimilarity() (which normalizes by default) for NPairsLoss; any distance object is
accepted (a distance d enters the logits as −d). Reducers: NTXentLoss and NPairsLoss
average their terms (MeanReducer), SupConLoss averages the anchors whose loss is > 0
(AvgNonZeroReducer; anchors without positives drop out). Other reducers, embedding
regularizers, distances without a fused form and collect_stats: see
fastcontrast.compat.pml._base (NTXentLoss's losses are per positive pair, SupConLoss's per
anchor, NPairsLoss's per pair, as in PML).

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
value there.
"""
from __future__ import annotations

import torch

from ..._reduce import LossTerms, reduce_terms
from ..._validation import check_embeddings, check_pair
from ... import softmax as _softmax
from ._base import PMLLossBase, pml_reducers
from .distances import CosineSimilarity, DotProductSimilarity

__all__ = ["NTXentLoss", "SupConLoss", "NPairsLoss"]

# PML reducer class name -> what fastcontrast's own reduce() divides by
_REDUCERS = {"MeanReducer": "mean", "AvgNonZeroReducer": "avg_nonzero", "SumReducer": "sum"}


def _reduction_from_reducer(reducer, default: str) -> str:
    """fastcontrast's reduce() (the distributed wrapper's path) for the reducers that are a
    ratio of global sums; forward() applies every other reducer itself."""
    if reducer is None:
        return default
    name = type(reducer).__name__
    if name == "AvgNonZeroReducer" and (getattr(reducer, "low", 0) != 0 or getattr(reducer, "high", None) is not None):
        return default
    return _REDUCERS.get(name, default)


def _zero(embeddings):
    return (embeddings * 0).sum()


def _pair_totals(labels, ref_labels, self_offset):
    """(#positive pairs, #negative pairs) that PML would enumerate, from the labels alone."""
    diff = _softmax.different_label_counts(labels, ref_labels)
    same = ref_labels.shape[0] - diff
    n_pos = int(same.sum()) - (labels.shape[0] if self_offset >= 0 else 0)
    return n_pos, int(diff.sum())


def _metric_options(metric) -> tuple[str, bool]:
    name = {"dot": "dot", "sqeuclidean": "squared_euclidean", "euclidean": "euclidean"}[metric.kind]
    return name, metric.normalize


class _PMLSoftmaxLoss(PMLLossBase):
    """Argument handling shared by NTXentLoss and SupConLoss."""

    default_reducer = "MeanReducer"
    legacy_reduction = "mean"
    count_every_element = False  # MeanReducer divides by every element, not only counted ones

    def __init__(self, temperature, distance, reducer, embedding_regularizer, embedding_reg_weight,
                 collect_stats, backend):
        super().__init__()
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats,
                        dict(temperature=temperature))
        self.reduction = _reduction_from_reducer(reducer, self.legacy_reduction)
        self.loss = None
        metric = self.metric if self.metric is not None else CosineSimilarity().metric()
        name, normalize = _metric_options(metric)
        self.loss = self.make_loss(temperature, name, normalize, backend)  # validates temperature

    @property
    def temperature(self):
        return self.loss.temperature

    def default_distance(self):
        return CosineSimilarity()

    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None) -> LossTerms:
        from ._triplet import check_ratio_reducer
        check_ratio_reducer(self)
        return self._terms(embeddings, labels, ref_emb, ref_labels, self_offset, indices_tuple)

    def _terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
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

    def _fused(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, plans):
        prepared = self._prepare(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if prepared is None:
            return _zero(embeddings)
        terms = self._terms(*prepared)
        if plans is None:
            return self.reduce(terms).to(embeddings.dtype)
        if self.count_every_element:  # PML's losses are one per anchor, every anchor an element
            terms = LossTerms(terms.values, torch.ones_like(terms.counts), terms.nonzero)
        return self.apply_plans(plans, terms, labels).to(embeddings.dtype)

    def _prepare(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        """Checked arguments for _terms, or None when PML's loss is an exact 0."""
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
        if self._self_offset_override is not None and indices_tuple is None:
            self_offset = self._self_offset_override
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            a1, p, a2, neg = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            n_pos, n_neg = a1.numel(), a2.numel()
            indices_tuple = (a1, p, a2, neg)
        else:
            n_pos, n_neg = _pair_totals(labels, ref_labels_eff, self_offset)
        if (n_pos <= 1 and n_neg <= 1) or self.zero_without(n_pos, n_neg):
            return None
        return (embeddings, labels, ref_emb, ref_labels_eff if ref_emb is not None else None,
                self_offset, indices_tuple)

    def zero_without(self, n_pos, n_neg) -> bool:
        return False


class NTXentLoss(_PMLSoftmaxLoss):
    """pytorch_metric_learning.losses.NTXentLoss(temperature=0.07, distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None)."""

    pml_name = "NTXentLoss"
    sub_losses = ("loss",)
    reduction_types = ("pos_pair",)

    def __init__(self, temperature=0.07, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        super().__init__(temperature, distance, reducer, embedding_regularizer, embedding_reg_weight,
                         collect_stats, backend)

    def make_loss(self, temperature, name, normalize, backend):
        return _softmax.NTXentLoss(temperature=temperature, form="pair", distance=name, normalize=normalize,
                                   backend=backend)


class SupConLoss(_PMLSoftmaxLoss):
    """pytorch_metric_learning.losses.SupConLoss(temperature=0.1, distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None)."""

    pml_name = "SupConLoss"
    sub_losses = ("loss",)
    reduction_types = ("element",)
    default_reducer = "AvgNonZeroReducer"
    legacy_reduction = "avg_nonzero"

    def __init__(self, temperature=0.1, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        super().__init__(temperature, distance, reducer, embedding_regularizer, embedding_reg_weight,
                         collect_stats, backend)

    # PML's SupCon losses are one per anchor: MeanReducer divides by every anchor
    count_every_element = True

    def make_loss(self, temperature, name, normalize, backend):
        return _softmax.SupConLoss(temperature=temperature, distance=name, normalize=normalize, backend=backend)

    def zero_without(self, n_pos, n_neg) -> bool:
        return n_pos == 0 or n_neg == 0

    def _special_reducer(self):
        R = pml_reducers()
        if R is None or type(self.reducer) is not R.DoNothingReducer:
            return None
        return self._unreduced

    def _unreduced(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        """DoNothingReducer: PML's loss dict, with the per-anchor losses of the fused pass."""
        prepared = self._prepare(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if prepared is None:
            out = {"loss": {"losses": 0, "indices": None, "reduction_type": "already_reduced"}}
        else:
            values = self._terms(*prepared).values.to(embeddings.dtype)
            out = {"loss": {"losses": values, "indices": torch.arange(values.shape[0], device=values.device),
                            "reduction_type": "element"}}
        if self.embedding_regularizer is not None:
            out["embedding_reg_loss"] = {"losses": self.embedding_regularizer(embeddings) * self.embedding_reg_weight,
                                         "indices": None, "reduction_type": "already_reduced"}
        return out


class NPairsLoss(PMLLossBase):
    """pytorch_metric_learning.losses.NPairsLoss(distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None): the first
    positive pair of each label, cross-entropy of sim(anchors, positives) against arange."""

    pml_name = "NPairsLoss"
    sub_losses = ("loss",)
    reduction_types = ("element",)
    default_reducer = "MeanReducer"

    def __init__(self, distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
                 collect_stats=None, backend=None):
        super().__init__()
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats, {})
        self.reduction = _reduction_from_reducer(reducer, "mean")
        metric = self.metric if self.metric is not None else DotProductSimilarity().metric()
        name, normalize = _metric_options(metric)
        self.loss = _softmax.NPairLoss(distance=name, normalize=normalize, backend=backend)
        self.num_pairs = 0

    def default_distance(self):
        return DotProductSimilarity()

    def _set_distance_stats(self, embeddings, ref_emb):
        pass  # PML's distance sees the selected pairs only: set in _fused

    def _pairs(self, embeddings, indices_tuple):
        if indices_tuple is None:
            return None
        a1, p, _, _ = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], embeddings.shape[0])
        return (a1, p)

    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None) -> LossTerms:
        if ref_emb is not None and not (ref_emb is embeddings and ref_labels is labels):
            raise ValueError("ref_emb is not supported by NPairsLoss")
        self.loss._check_tensors(embeddings, labels, None, None)
        return self.loss._pair_terms(embeddings, labels, self._pairs(embeddings, indices_tuple))

    def distributed_mode(self) -> str:
        """GlobalBatchLoss: the pairs come from the global batch (see NPairLoss.global_terms)."""
        return "global_pairs"

    def global_terms(self, all_embeddings, all_labels, rank: int, world: int) -> LossTerms:
        self.loss._check_tensors(all_embeddings, all_labels, None, None)
        return self.loss.global_terms(all_embeddings, all_labels, rank, world)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        if self.reduction == "sum":
            return reduce_terms(terms, "sum")
        return reduce_terms(terms, "mean", self.reduction, denominators)

    def _fused(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, plans):
        if labels is None:
            raise ValueError("labels are required for NPairsLoss")
        terms = self.terms(embeddings, labels, ref_emb, ref_labels, 0, indices_tuple)
        self.num_pairs = int(terms.values.shape[0])  # PML records it on every call
        if terms.values.shape[0] == 0:
            return _zero(embeddings)
        anchors, positives = _softmax.npair_indices(labels, self._pairs(embeddings, indices_tuple))
        PMLLossBase._set_distance_stats(self, embeddings[anchors], embeddings[positives])
        if plans is None:
            return self.reduce(terms).to(embeddings.dtype)
        return self.apply_plans(plans, terms, labels[anchors]).to(embeddings.dtype)
