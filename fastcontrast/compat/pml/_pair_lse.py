"""pytorch-metric-learning's MultiSimilarityLoss, CircleLoss, LiftedStructureLoss,
GeneralizedLiftedStructureLoss and MarginLoss, computed by fastcontrast.

    loss_fn = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    loss = loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)

Same constructors and defaults as PML 2.9.0: CosineSimilarity() for MultiSimilarityLoss and
CircleLoss (which accepts nothing else), LpDistance() (normalized Euclidean) for the lifted
losses and MarginLoss. Reducers: MeanReducer over every anchor (MultiSimilarity,
generalized Lifted), AvgNonZeroReducer over anchors (Circle), MeanReducer over positive
pairs (Lifted), DivisorReducer over the non-zero hinge terms (MarginLoss, with its β
regularization). Other reducers, embedding regularizers, distances without a fused form:
see fastcontrast.compat.pml._base (LiftedStructureLoss and MarginLoss fuse only their
default reducer, MeanReducer/SumReducer for Lifted; other reducers use PML's own loss).

PML conventions kept on purpose:
- self pairs are dropped only when the references are the batch itself or `ref_labels` is
  the very same tensor object as `labels`;
- the loss is an exact 0 (attached to the graph) when there is at most one positive pair
  and at most one negative pair (PML's early exit); LiftedStructureLoss also when there is
  no positive or no negative pair; MarginLoss when there is no triplet;
- triplets in `indices_tuple` become pairs (a, p) and (a, n); MarginLoss turns pairs into
  triplets (every positive pair with every negative pair of its anchor), as PML does;
- a lazy PairMarginMiner / MultiSimilarityMiner selection of the same batch and distance
  is fused by every loss here (the mined pairs as per-anchor bounds in their pass, never
  listed; MarginLoss's triplets are every mined positive pair with every mined negative pair
  of its anchor, counted per anchor; LiftedStructureLoss's pairs use the mined negatives of
  both rows); otherwise a lazy selection is materialized first;
- MarginLoss's `beta` is a Parameter with learn_beta (it gets its gradient), a plain tensor
  otherwise; triplets_per_anchor=N draws PML's own random triplets (same generator) and
  computes the loss on exactly those;
- the result has the embeddings' dtype.
"""
from __future__ import annotations

import torch

from ..._reduce import LossTerms
from ..._validation import check_embeddings, check_pair
from ... import margin as _margin
from ... import pair_lse as _pair_lse
from ... import softmax as _softmax
from . import _pml
from ._base import PMLLossBase, pml_reducers
from ._triplet import check_triplets_per_anchor, distance_options, pml_self_offset
from ._pair_miners import _MinedSelection
from .distances import CosineSimilarity, LpDistance

__all__ = ["MultiSimilarityLoss", "CircleLoss", "LiftedStructureLoss", "GeneralizedLiftedStructureLoss",
           "MarginLoss"]


def _zero(embeddings):
    return (embeddings * 0).sum()


def _pair_totals(labels, ref_labels, self_offset):
    diff = _softmax.different_label_counts(labels, ref_labels)
    n_pos = int((ref_labels.shape[0] - diff).sum()) - (labels.shape[0] if self_offset >= 0 else 0)
    return n_pos, int(diff.sum())


def _references(labels, ref_emb, ref_labels, indices_tuple):
    """(ref_labels to use, self_offset) as PML pairs the batch with its references."""
    if ref_emb is None:
        return labels, 0
    if ref_labels is None and indices_tuple is None:
        if labels is None or not isinstance(ref_emb, torch.Tensor) or ref_emb.dim() != 2 \
                or ref_emb.shape[0] != labels.shape[0]:
            raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
        return labels, 0  # PML compares labels with themselves
    return ref_labels, pml_self_offset(labels, ref_emb, ref_labels)


class _PMLPairLSELoss(PMLLossBase):
    """The four log-sum-exp losses: argument handling, early exits and the reducer plans."""

    sub_losses = ("loss",)
    reduction_types = ("element",)
    default_reducer = "MeanReducer"
    native = None  # the fastcontrast Module class

    def _setup(self, hyper, distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats, backend):
        super().__init__()
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats, hyper)
        for k, v in hyper.items():
            setattr(self, k, v)
        self.loss = None
        if self.metric is not None:
            self.loss = self.native(**hyper, **distance_options(self.metric), backend=backend)

    def default_distance(self):
        return CosineSimilarity()

    def _fused(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, plans):
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        check_embeddings(embeddings, "embeddings")
        given_ref_labels = ref_labels
        ref_labels, self_offset = _references(labels, ref_emb, ref_labels, indices_tuple)
        if self._self_offset_override is not None and indices_tuple is None:
            self_offset = self._self_offset_override
        n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb")
            check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
        rows = {}
        if isinstance(indices_tuple, _MinedSelection) and \
                indices_tuple.fuses_with(self.metric, embeddings, labels, ref_emb, given_ref_labels):
            # a miner's selection fused as per-anchor bounds: the pairs are never listed
            mined, indices_tuple = indices_tuple, None
            ref_labels, self_offset = (labels if mined.ref_emb is None else mined._refs()[1]), mined.self_offset
            bounds, slack = mined.row_bounds()
            rows = dict(row_bounds=bounds, bound_slack=slack)
            n_pos, n_neg = (int(c) for c in mined.pair_counts().sum(0))
        elif indices_tuple is not None:
            tuples = _softmax._check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            n_pos, n_neg = tuples[0].numel(), tuples[2].numel()
        else:
            n_pos, n_neg = _pair_totals(labels.long(), ref_labels.long(), self_offset)
        if (n_pos <= 1 and n_neg <= 1) or self._zero_without(n_pos, n_neg):
            return _zero(embeddings)
        if indices_tuple is not None:
            terms = self.loss.tuple_terms(embeddings, tuples, ref_emb)
        else:
            terms = self.loss.terms(embeddings, labels, ref_emb, ref_labels if ref_emb is not None else None,
                                    self_offset, **rows)
        if plans is None:
            return self.loss.reduce(terms).to(embeddings.dtype)
        return self.apply_plans(plans, terms, labels).to(embeddings.dtype)

    def _zero_without(self, n_pos, n_neg) -> bool:
        return False


class MultiSimilarityLoss(_PMLPairLSELoss):
    """pytorch_metric_learning.losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5,
    distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
    collect_stats=None): per anchor (1/α)·log(1 + Σ_P e^{−α(s−base)}) + (1/β)·log(1 + Σ_N e^{β(s−base)}).

    Args:
        alpha, beta, base: as in PML; distance, reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as in PML; backend: fastcontrast's backend.

    Returns:
        forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None): a scalar.

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import losses
        >>> losses.MultiSimilarityLoss()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).dim()
        0
    """

    pml_name = "MultiSimilarityLoss"
    native = _pair_lse.MultiSimilarityLoss

    def __init__(self, alpha=2, beta=50, base=0.5, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        self._setup(dict(alpha=alpha, beta=beta, base=base), distance, reducer, embedding_regularizer,
                    embedding_reg_weight, collect_stats, backend)


class CircleLoss(_PMLPairLSELoss):
    """pytorch_metric_learning.losses.CircleLoss(m=0.4, gamma=80, distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None): per anchor
    softplus(LSE_N γ·α_n·(s − m) + LSE_P −γ·α_p·(s − 1 + m)), α detached; CosineSimilarity only.

    Args:
        m, gamma: as in PML; distance (CosineSimilarity only), reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as in PML; backend: fastcontrast's backend.

    Returns:
        forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None): a scalar.

    Raises:
        ValueError: a distance other than CosineSimilarity, bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import losses
        >>> losses.CircleLoss()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).dim()
        0
    """

    pml_name = "CircleLoss"
    default_reducer = "AvgNonZeroReducer"
    native = _pair_lse.CircleLoss

    def __init__(self, m=0.4, gamma=80, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        theirs = _pml.module("distances")
        if distance is not None and not (isinstance(distance, CosineSimilarity) or
                                         (theirs is not None and isinstance(distance, theirs.CosineSimilarity))):
            raise ValueError(f"CircleLoss takes distance=CosineSimilarity() only, got {type(distance).__name__}")
        self._setup(dict(m=m, gamma=gamma), distance, reducer, embedding_regularizer, embedding_reg_weight,
                    collect_stats, backend)
        self.op, self.on, self.delta_p, self.delta_n = 1 + m, -m, 1 - m, m


class GeneralizedLiftedStructureLoss(_PMLPairLSELoss):
    """pytorch_metric_learning.losses.GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0,
    distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
    collect_stats=None): per anchor relu(LSE_P(d − pos_margin) + LSE_N(neg_margin − d)).

    Args:
        neg_margin, pos_margin: as in PML; distance, reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as in PML; backend: fastcontrast's backend.

    Returns:
        forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None): a scalar.

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import losses
        >>> losses.GeneralizedLiftedStructureLoss()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).dim()
        0
    """

    pml_name = "GeneralizedLiftedStructureLoss"
    native = _pair_lse.GeneralizedLiftedStructureLoss

    def __init__(self, neg_margin=1, pos_margin=0, distance=None, reducer=None, embedding_regularizer=None,
                 embedding_reg_weight=1, collect_stats=None, backend=None):
        self._setup(dict(neg_margin=neg_margin, pos_margin=pos_margin), distance, reducer, embedding_regularizer,
                    embedding_reg_weight, collect_stats, backend)

    def default_distance(self):
        return LpDistance()


class LiftedStructureLoss(GeneralizedLiftedStructureLoss):
    """pytorch_metric_learning.losses.LiftedStructureLoss(neg_margin=1, pos_margin=0,
    distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
    collect_stats=None): per positive pair relu(LSE_{N_a ∪ N_p}(neg_margin − d) + d_ap − pos_margin)²/2.

    Args:
        neg_margin, pos_margin: as in PML; distance, reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as in PML; backend: fastcontrast's backend.

    Returns:
        forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None): a scalar.

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import losses
        >>> losses.LiftedStructureLoss()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).dim()
        0
    """

    pml_name = "LiftedStructureLoss"
    reduction_types = ("pos_pair",)
    native = _pair_lse.LiftedStructureLoss

    def _wants_dense(self, indices_tuple, ref_emb, labels) -> bool:
        R = pml_reducers()
        return R is not None and type(self.reducer) not in (R.MeanReducer, R.SumReducer)

    def _zero_without(self, n_pos, n_neg) -> bool:
        return n_pos == 0 or n_neg == 0


class MarginLoss(PMLLossBase):
    """pytorch_metric_learning.losses.MarginLoss(margin=0.2, nu=0, beta=1.2,
    triplets_per_anchor="all", learn_beta=False, num_classes=None, distance=None, reducer=None,
    embedding_regularizer=None, embedding_reg_weight=1, collect_stats=None): over triplets
    relu(d_ap − β + margin) + relu(β − d_an + margin), DivisorReducer over the non-zero terms,
    plus nu·β with learn_beta.

    Args:
        margin, nu, beta, triplets_per_anchor, learn_beta, num_classes: as in PML; distance,
            reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in PML;
            backend: fastcontrast's backend.

    Returns:
        forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None): a scalar.

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import losses
        >>> loss_fn = losses.MarginLoss(learn_beta=True, nu=0.01)
        >>> loss_fn(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
        >>> loss_fn.beta.grad.shape
        torch.Size([1])
    """

    pml_name = "MarginLoss"
    sub_losses = ("margin_loss", "beta_reg_loss")
    reduction_types = ("triplet", "element")
    default_reducer = "DivisorReducer"

    def __init__(self, margin=0.2, nu=0, beta=1.2, triplets_per_anchor="all", learn_beta=False, num_classes=None,
                 distance=None, reducer=None, embedding_regularizer=None, embedding_reg_weight=1,
                 collect_stats=None, backend=None):
        super().__init__()
        check_triplets_per_anchor(triplets_per_anchor)
        self._setup_pml(distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats,
                        dict(margin=margin, nu=nu, beta=beta, triplets_per_anchor=triplets_per_anchor,
                             learn_beta=learn_beta, num_classes=num_classes))
        self.margin, self.nu, self.learn_beta = margin, nu, learn_beta
        self.triplets_per_anchor, self.num_classes = triplets_per_anchor, num_classes
        value = torch.tensor([float(beta)])
        if num_classes:
            value = torch.ones(num_classes) * value
        self.beta = torch.nn.Parameter(value) if learn_beta else value
        loss = None
        if self.metric is not None:
            loss = _margin.MarginLoss(margin=margin, nu=nu, learn_beta=False, **distance_options(self.metric),
                                      backend=backend)
        # not a submodule: its own β is never used (self.beta is passed in), nor in state_dict
        object.__setattr__(self, "loss", loss)

    def default_distance(self):
        return LpDistance()

    def dense_loss(self):
        loss = super().dense_loss()
        loss.beta = self.beta  # one β, shared (and learned) by both paths
        return loss

    def _divisor_reducer(self) -> bool:
        R = pml_reducers()
        if R is None:
            return True
        given = self._given_reducer
        return given is None or type(given) is R.DivisorReducer

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if self.metric is None or not self._divisor_reducer():
            return self._dense_forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if labels is None and indices_tuple is None:
            raise ValueError("labels and indices_tuple cannot both be None")
        if isinstance(indices_tuple, _MinedSelection) and \
                indices_tuple.fuses_with(self.metric, embeddings, labels, ref_emb, ref_labels):
            # every mined positive pair with every mined negative pair of its anchor, unlisted
            mined = indices_tuple
            l_bounds, slack = mined.row_bounds()
            self._set_distance_stats(embeddings, ref_emb)
            beta = self.beta.to(device=embeddings.device, dtype=embeddings.dtype)
            out = self.loss.loss_with(embeddings, labels, None, ref_emb, mined._refs()[1], beta, self.learn_beta,
                                      mined.self_offset, row_bounds=-l_bounds, bound_slack=slack)
            return self._add_regularization(out, embeddings).to(embeddings.dtype)
        ref_labels_eff, self_offset = _references(labels, ref_emb, ref_labels, indices_tuple)
        if indices_tuple is None and self.triplets_per_anchor != "all":
            lmu = _pml.require("utils.loss_and_miner_utils", "MarginLoss with triplets_per_anchor=N")
            indices_tuple = lmu.convert_to_triplets(None, labels, ref_labels_eff if ref_emb is not None else labels,
                                                    self.triplets_per_anchor)
        self._set_distance_stats(embeddings, ref_emb)
        beta = self.beta.to(device=embeddings.device, dtype=embeddings.dtype)
        out = self.loss.loss_with(embeddings, labels, indices_tuple, ref_emb,
                                  ref_labels_eff if ref_emb is not None else None, beta, self.learn_beta,
                                  self_offset)
        return self._add_regularization(out, embeddings).to(embeddings.dtype)

    def terms(self, *args, **kwargs) -> LossTerms:
        raise ValueError("MarginLoss has no per-anchor terms() protocol in the compat layer")
