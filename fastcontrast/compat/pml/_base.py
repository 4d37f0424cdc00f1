"""What the five fused compat losses share: pytorch-metric-learning's reducer, regularizer
and collect_stats handling, and the dense path for what fastcontrast does not fuse.

A fused loss produces, per row (an anchor, or one element for element-type losses), the sum
of its terms, how many terms there were and how many were > 0 (fastcontrast._reduce.
LossTerms). Every pytorch-metric-learning reducer that only needs those sums is applied to
them directly ("fused"); the others need each term and go through the dense path, which is
pytorch-metric-learning's own loss on the same inputs (lazy selections materialized).

Reducer on a fused loss                     fused when
MeanReducer, SumReducer, AvgNonZeroReducer  always
ClassWeightedReducer                        the row labels are known (NPairsLoss: the pairs' anchors)
ThresholdReducer(low, high)                 element losses (SupConLoss, NPairsLoss); ContrastiveLoss
                                            and TripletMarginLoss (the bounds are part of the fused
                                            pass: a window on d_an in the triplets' sorted sweep; with
                                            collect_stats only one of low / high)
PerAnchorReducer(inner, default aggregation) element losses; pair losses without ref_emb and
                                            without indices_tuple; `inner` itself fused
DoNothingReducer                            SupConLoss (its losses are per anchor)
MultipleReducers                            each sub-loss's reducer by the rules above
anything else (DivisorReducer, a user       never: dense path
reducer, ThresholdReducer(low, high) with
collect_stats and both bounds, which
records two separate counts,
DoNothingReducer on pairs/triplets)

`embedding_regularizer` (LpRegularizer, ZeroMeanRegularizer, ...) adds
embedding_reg_weight × regularizer(embeddings), as pytorch-metric-learning does (its
reducer passes an already reduced value through unchanged).
"""
from __future__ import annotations

import copy
import math

import torch

from ..._reduce import LossTerms, safe_ratio
from . import _pml
from .distances import fused_metric

_NOT_FUSED = None


def pml_reducers():
    return _pml.module("reducers")


def pml_style_reducer(reducer, sub_losses, default_name: str, has_regularizer: bool):
    """loss.reducer as pytorch-metric-learning sets it: the reducer given (a copy) or the
    loss's default, one per sub-loss in a MultipleReducers when there are several
    (the embedding regularizer is a sub-loss). Without the library: the reducer given."""
    R = pml_reducers()
    if R is None:
        return reducer
    if isinstance(reducer, (R.MultipleReducers, R.DoNothingReducer)):
        return reducer
    if reducer is not None and not isinstance(reducer, R.BaseReducer):
        raise TypeError(f"reducer must be a pytorch-metric-learning reducer, got {type(reducer).__name__}")
    names = list(sub_losses) + (["embedding_reg_loss"] if has_regularizer else [])

    def one():
        return getattr(R, default_name)() if reducer is None else copy.deepcopy(reducer)

    if len(names) == 1:
        return one()
    return R.MultipleReducers({name: one() for name in names})


def part_reducer(reducer, name: str):
    R = pml_reducers()
    if R is not None and isinstance(reducer, R.MultipleReducers):
        return reducer.reducers[name] if name in reducer.reducers else reducer.default_reducer
    return reducer


def _per_anchor_default(reducer) -> bool:
    from pytorch_metric_learning.reducers import per_anchor_reducer
    return reducer.aggregation_func is per_anchor_reducer.aggregation_func


def plan(reducer, rtype: str, per_anchor_ok: bool, have_labels: bool, term_bounds_ok: bool = False):
    """See _plan; with collect_stats the reducer's `losses_size` (its number of terms) is
    recorded as PML records it."""
    p = _plan(reducer, rtype, per_anchor_ok, have_labels, term_bounds_ok)
    if p is None or not getattr(reducer, "collect_stats", False):
        return p

    def recorded(v, c, nz, y):
        out = p(v, c, nz, y)
        if type(reducer).__name__ not in ("ThresholdReducer", "AvgNonZeroReducer"):  # those record their own
            reducer.losses_size = int(c.sum())
        return out
    if hasattr(p, "term_bounds"):
        recorded.term_bounds = p.term_bounds
    return recorded


def _plan(reducer, rtype: str, per_anchor_ok: bool, have_labels: bool, term_bounds_ok: bool = False):
    """A function (values, counts, nonzero, row_labels) -> loss reducing per-row sums the way
    `reducer` reduces the terms, or None when the terms themselves are needed.
    rtype: pytorch-metric-learning's reduction type ("triplet", "pos_pair", "neg_pair",
    "element"); for "element" every row with count 1 is one element. term_bounds_ok: the
    loss can sum only the terms inside an interval (the pair-margin family's pos_keep /
    neg_keep); a plan that needs that carries it as `plan.term_bounds` = (low, high)."""
    R = pml_reducers()
    if R is None:
        return None
    t = type(reducer)
    if t is R.MeanReducer:
        return lambda v, c, nz, y: safe_ratio(v.sum(), c.sum())
    if t is R.SumReducer:
        return lambda v, c, nz, y: v.sum()
    if t in (R.ThresholdReducer, R.AvgNonZeroReducer):
        low, high = reducer.low, reducer.high
        if rtype == "element":
            def threshold(v, c, nz, y):
                keep = c > 0
                n_elements = int(keep.sum()) if reducer.collect_stats else 0
                above_low = below_high = None
                if low is not None:
                    keep = keep & (v > low)
                    above_low = keep
                if high is not None:
                    below_high = keep & (v < high)
                    keep = below_high
                if reducer.collect_stats:
                    reducer.losses_size = n_elements
                    reducer.num_past_filter = int(keep.sum())
                    if above_low is not None:
                        reducer.num_above_low = int(above_low.sum())
                    if below_high is not None:  # pytorch-metric-learning's attribute name
                        reducer.num_above_high = int(below_high.sum())
                return safe_ratio(torch.where(keep, v, v * 0).sum(), keep.sum())
            return threshold
        if low == 0 and high is None:
            def avg_nonzero(v, c, nz, y):
                _threshold_stats(reducer, c, nz)
                return safe_ratio(v.sum(), nz.sum())
            return avg_nonzero
        if term_bounds_ok and rtype in ("pos_pair", "neg_pair", "triplet") and not (
                reducer.collect_stats and low is not None and high is not None):
            # the fused pass sums only the terms in (low, high) and counts them as "non-zero"
            def in_bounds(v, c, nz, y):
                if reducer.collect_stats:
                    n_terms = int(c.sum())
                    if rtype == "triplet":
                        # as pytorch-metric-learning's reducer: stats reset first; no triplet
                        # at all is an "already reduced" 0 of size 1 that sets no filter stat
                        reducer.reset_stats()
                        if n_terms == 0:
                            reducer.losses_size = 1
                            return safe_ratio(v.sum(), nz.sum())
                    reducer.losses_size = n_terms
                    reducer.num_past_filter = int(nz.sum())
                    if low is not None:
                        reducer.num_above_low = reducer.num_past_filter
                    else:  # pytorch-metric-learning's attribute name
                        reducer.num_above_high = reducer.num_past_filter
                return safe_ratio(v.sum(), nz.sum())
            in_bounds.term_bounds = (-math.inf if low is None else float(low),
                                     math.inf if high is None else float(high))
            return in_bounds
        return _NOT_FUSED
    if t is R.ClassWeightedReducer:
        if not have_labels:
            return _NOT_FUSED

        def weighted(v, c, nz, y):
            w = torch.as_tensor(reducer.weights).to(device=v.device, dtype=v.dtype)
            return safe_ratio((v * w[y]).sum(), c.sum())
        return weighted
    if t is R.PerAnchorReducer and _per_anchor_default(reducer):
        inner = plan(reducer.reducer, "element", per_anchor_ok, have_labels)
        if inner is None:
            return _NOT_FUSED
        if rtype == "element":
            return inner
        if rtype in ("pos_pair", "neg_pair") and per_anchor_ok:
            def per_anchor(v, c, nz, y):
                mean = torch.where(c > 0, v / c.clamp_min(1).to(v.dtype), v * 0)
                ones = torch.ones_like(c)
                return inner(mean, ones, (mean.detach() > 0).long(), y)
            return per_anchor
        return _NOT_FUSED
    return _NOT_FUSED


def _threshold_stats(reducer, c, nz):
    """AvgNonZeroReducer's stats on tuple losses: the terms > 0 pass the filter."""
    if getattr(reducer, "collect_stats", False):
        reducer.losses_size = int(c.sum())
        reducer.num_past_filter = reducer.num_above_low = int(nz.sum())


class PMLLossBase(torch.nn.Module):
    """Reducer / regularizer / collect_stats / dense-path plumbing of a fused compat loss.

    A subclass sets `pml_name` (the pytorch-metric-learning class), `sub_losses` with their
    `reduction_types`, `default_reducer`, and implements `_fused(embeddings, labels,
    indices_tuple, ref_emb, ref_labels, reduce)` where reduce(terms, row_labels) applies the
    reducer plan to per-row sums."""

    pml_name = ""
    sub_losses = ("loss",)
    reduction_types = ("triplet",)
    default_reducer = "MeanReducer"
    fuses_term_bounds = False  # True: terms(..., term_bounds=) sums only terms in an interval

    def _setup_pml(self, distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats,
                   hyper: dict):
        self.distance = self.default_distance() if distance is None else distance
        self.metric = fused_metric(self.distance, type(self).__name__)
        if embedding_regularizer is not None and not callable(embedding_regularizer):
            raise TypeError("embedding_regularizer must be a regularizer (a callable on the embeddings), "
                            f"got {type(embedding_regularizer).__name__}")
        self.embedding_regularizer = embedding_regularizer
        self.embedding_reg_weight = embedding_reg_weight
        c_f = _pml.module("utils.common_functions")
        self.collect_stats = (c_f.COLLECT_STATS if c_f is not None else False) if collect_stats is None \
            else collect_stats
        self._given_reducer = reducer
        self.reducer = pml_style_reducer(reducer, self.sub_losses, self.default_reducer,
                                         embedding_regularizer is not None)
        self._hyper = dict(hyper)
        self._dense_loss = None
        # set by CrossBatchMemory: reference row i + offset is query row i itself
        self._self_offset_override = None

    # ------------------------------------------------------------------ dense path
    def dense_loss(self):
        """pytorch-metric-learning's own loss with the same settings, sharing this loss's
        distance, reducer and regularizer objects."""
        if self._dense_loss is None:
            losses = _pml.require("losses", f"{type(self).__name__} with {self._dense_reason()}")
            loss = getattr(losses, self.pml_name)(
                **self._hyper, distance=self.distance, reducer=self._given_reducer,
                embedding_regularizer=self.embedding_regularizer, embedding_reg_weight=self.embedding_reg_weight,
                collect_stats=self.collect_stats)
            loss.reducer = self.reducer
            object.__setattr__(self, "_dense_loss", loss)  # not a submodule: no duplicate state
        return self._dense_loss

    def _dense_reason(self) -> str:
        return "this distance or reducer"

    def _dense_forward(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if hasattr(indices_tuple, "materialize"):
            indices_tuple = tuple(indices_tuple.materialize())
        return self.dense_loss()(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    # ------------------------------------------------------------------ fused path
    def _plans(self, per_anchor_ok: bool, have_labels: bool):
        """One reducer plan per sub-loss, or None when any needs the dense path. Without
        pytorch-metric-learning: "legacy" (the loss's own default reduction)."""
        if pml_reducers() is None:
            return "legacy"
        plans = []
        for name, rtype in zip(self.sub_losses, self.reduction_types):
            p = plan(part_reducer(self.reducer, name), rtype, per_anchor_ok, have_labels,
                     self.fuses_term_bounds)
            if p is None:
                return None
            plans.append(p)
        return plans

    def _wants_dense(self, indices_tuple, ref_emb, labels) -> bool:
        return False

    def _special_reducer(self):
        return None

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if self.metric is None or self._wants_dense(indices_tuple, ref_emb, labels):
            return self._dense_forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        special = self._special_reducer()
        if special is not None:
            return special(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        plans = self._plans(per_anchor_ok=ref_emb is None and indices_tuple is None,
                            have_labels=labels is not None or hasattr(indices_tuple, "labels"))
        if plans is None:
            return self._dense_forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        self._set_distance_stats(embeddings, ref_emb)
        out = self._fused(embeddings, labels, indices_tuple, ref_emb, ref_labels,
                          None if plans == "legacy" else plans)
        return self._add_regularization(out, embeddings)

    def _add_regularization(self, out, embeddings):
        if self.embedding_regularizer is None:
            return out
        reg = self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return out + reg

    def apply_plans(self, plans, terms: LossTerms, row_labels) -> torch.Tensor:
        """The sum over sub-losses of each plan applied to its part of the per-row sums."""
        out = None
        for p, (v, c, nz) in zip(plans, terms.parts()):
            part = p(v, c, nz, row_labels)
            out = part if out is None else out + part
        return out

    def _set_distance_stats(self, embeddings, ref_emb):
        """The norms pytorch-metric-learning's distance records when collecting stats (the
        fused pass never calls the distance object)."""
        d = self.distance
        if not getattr(d, "collect_stats", False) or not hasattr(d, "get_norm"):
            return
        with torch.no_grad():
            ref = embeddings if ref_emb is None else ref_emb
            d.initial_avg_query_norm = torch.mean(d.get_norm(embeddings)).item()
            d.initial_avg_ref_norm = torch.mean(d.get_norm(ref)).item()
            d.final_avg_query_norm = torch.mean(d.get_norm(d.maybe_normalize(embeddings))).item()
            d.final_avg_ref_norm = torch.mean(d.get_norm(d.maybe_normalize(ref))).item()
