"""Pair-weighted log-sum-exp losses: Multi-Similarity, Circle, (generalized) Lifted Structure.

All four run through the similarity-softmax family's Function (softmax.SoftmaxFunction,
the "ms" / "circle" / "glifted" / "lifted" variants of configs.SoftmaxConfig) with τ = 1:
per anchor i a log-sum-exp over its positives P_i and one over its negatives N_i, of
per-pair terms of l_ij = s_ij (a similarity; l = −d for a distance). Each log-sum-exp is
streamed separately, so neither side's digits are lost in the other's sum.

    multi_similarity_loss   (1/α)·log(1 + Σ_P e^{−α(s−λ)}) + (1/β)·log(1 + Σ_N e^{β(s−λ)})
    circle_loss             softplus(LSE_N γ·α_n·(s − Δ_n) + LSE_P −γ·α_p·(s − Δ_p)),
                            α_p = relu(1 + m − s), α_n = relu(s + m) (no gradient through α),
                            Δ_p = 1 − m, Δ_n = m; 0 unless the anchor has both kinds of pair
    generalized_lifted_structure_loss
                            relu(LSE₀_P (m_pos − s) + LSE₀_N (s − m_neg))   (LSE₀ of nothing = 0)
    lifted_structure_loss   per positive pair (a, p): relu(LSE₀_{N_a ∪ N_p}(s − m_neg) + m_pos − s_ap)²/2

With a distance d every comparison flips (m_pos − s becomes d − m_pos, s − m_neg becomes
m_neg − d), as pytorch-metric-learning's `distance.margin` does. Without a reference set the
batch is its own and self pairs are skipped.

"mean" averages, as pytorch-metric-learning's default reducer does: over every anchor
(Multi-Similarity, generalized Lifted), over the anchors whose loss is > 0 (Circle), over
positive pairs (Lifted). "none" gives each anchor's value (Lifted: its pairs' sum).

`indices_tuple` (pairs (a1, p, a2, n), triplets (a, p, n) or a miner selection with
`.materialize()`): the loss on exactly those pairs, with plain autograd on a dense B×N
tile (sets of pairs; Lifted counts repeated negative pairs as often as they occur, as
pytorch-metric-learning does).
"""
from __future__ import annotations

import torch
from torch import nn

from . import metrics
from ._reduce import LossTerms, index_counts, reduce_terms
from ._torch.softmax import softplus
from ._validation import (check_choice, check_disjoint_pairs, check_embeddings, check_labels, check_pair,
                          check_positive, check_query_ref, check_real, check_reduction, full_precision)
from .backend import BACKENDS
from .softmax import _check_indices_tuple, resolve, softmax_values

__all__ = ["multi_similarity_loss", "circle_loss", "lifted_structure_loss",
           "generalized_lifted_structure_loss", "MultiSimilarityLoss", "CircleLoss",
           "LiftedStructureLoss", "GeneralizedLiftedStructureLoss"]


class _PairLSELoss(nn.Module):
    """Options, checks and the terms()/reduce() protocol shared by the four losses."""

    variant = ""
    average = "mean"
    similarity_only = False

    def __init__(self, *, distance, normalize, reduction, backend):
        super().__init__()
        check_reduction(reduction)
        if backend is not None:
            check_choice(backend, "backend", BACKENDS)
        self.metric = metrics.resolve_metric(distance, normalize)
        if self.similarity_only and not self.metric.is_similarity:
            raise ValueError(f"{type(self).__name__} needs a similarity (distance='cosine' or 'dot'), "
                             f"got distance={distance!r}")
        self.distance, self.normalize = distance, normalize
        self.reduction, self.backend = reduction, backend

    # the per-variant numbers of SoftmaxConfig, in similarity units
    def shifts(self) -> dict:
        raise NotImplementedError

    def _settings(self) -> str:
        return ""

    def extra_repr(self) -> str:
        return (f"{self._settings()}, distance={self.distance!r}, normalize={self.normalize}, "
                f"reduction={self.reduction!r}, backend={self.backend!r}")

    def _flip(self, value: float) -> float:
        """A margin in l units: l = s for similarities, l = −d for distances."""
        return value if self.metric.is_similarity else -value

    def _check(self, embeddings, labels, ref_emb, ref_labels, need_labels=True):
        check_embeddings(embeddings, "embeddings")
        if labels is not None:
            check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
        elif need_labels:
            raise ValueError("labels are required unless indices_tuple is given")
        if ref_emb is not None:
            if labels is not None and ref_labels is not None:
                check_query_ref(embeddings, labels, ref_emb, ref_labels)
            else:
                check_embeddings(ref_emb, "ref_emb")
                check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
                if need_labels:
                    raise ValueError("ref_labels is required when ref_emb is given")
        elif ref_labels is not None:
            raise ValueError("ref_labels was given without ref_emb")

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0, *,
              row_bounds=None, bound_slack: float = 0.0) -> LossTerms:
        """Per-anchor LossTerms of all pairs. self_offset: anchor i is reference i + self_offset
        and that pair is skipped (−1: no self pair). row_bounds (B, 2), optional: a miner's
        selection fused (every pair-LSE loss): with l = s (or −d), a
        positive pair counts only when l − bound_slack < row_bounds[i, 0], a negative pair only
        when l + bound_slack > row_bounds[i, 1] (SoftmaxConfig.row_bounds)."""
        self._check(embeddings, labels, ref_emb, ref_labels)
        backend = resolve(self.backend, embeddings)
        q = metrics.prepare(embeddings, self.metric, backend)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric, backend)
        r_labels = labels if ref_emb is None else ref_labels
        bounded = {}
        if row_bounds is not None:
            if not isinstance(row_bounds, torch.Tensor) or row_bounds.shape != (embeddings.shape[0], 2):
                raise ValueError(f"row_bounds must be a ({embeddings.shape[0]}, 2) tensor")
            bounded = dict(row_bounds=True, bound_slack=check_real(bound_slack, "bound_slack"),
                           bounds=row_bounds.to(q.device))
        values, n_pos = softmax_values(q, r, labels, r_labels, kind=self.metric.kind, variant=self.variant,
                                       self_offset=self_offset, temperature=1.0, backend=backend,
                                       **self.shifts(), **bounded)
        return self._terms_from(values, n_pos)

    def _terms_from(self, values, n_pos) -> LossTerms:
        ones = torch.ones_like(n_pos)
        return LossTerms(values, ones, (values.detach() > 0).long())

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        return reduce_terms(terms, self.reduction, self.average, denominators)

    # ----------------------------------------------------------------- explicit pairs
    def _dense_logits(self, embeddings, ref_emb):
        q = metrics.prepare(embeddings, self.metric)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric)
        d = metrics.pairwise_differentiable(q, r, self.metric.kind)
        return d if self.metric.kind == "dot" else -d

    @full_precision
    def tuple_terms(self, embeddings, tuples, ref_emb=None) -> LossTerms:
        """Per-anchor LossTerms of the pairs (a1, p, a2, n) (sets), dense B×N autograd."""
        a1, p, a2, n = tuples
        logits = self._dense_logits(embeddings, ref_emb)
        pos = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        neg = torch.zeros_like(pos)
        pos[a1, p] = True
        neg[a2, n] = True
        check_disjoint_pairs(pos, neg)
        values = dense_values(self.variant, logits, pos, neg, **self.shifts())
        return self._terms_from(values, pos.sum(1))

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self._check(embeddings, labels, ref_emb, ref_labels, need_labels=indices_tuple is None)
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            tuples = _check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            return self.reduce(self.tuple_terms(embeddings, tuples, ref_emb))
        return self.reduce(self.terms(embeddings, labels, ref_emb, ref_labels, 0 if ref_emb is None else -1))


def _masked_lse(x, mask, empty: float):
    lowest = torch.finfo(x.dtype).min
    has = mask.any(1)
    lse = torch.logsumexp(torch.where(mask, x, lowest), 1)
    return torch.where(has, lse, torch.full_like(lse, empty)), has


def dense_values(variant, logits, pos, neg, *, scale_pos=1.0, scale_neg=1.0, shift_pos=0.0, shift_neg=0.0):
    """Per-anchor values of "ms" / "circle" / "glifted" from a dense logit tile and boolean
    pair masks, with plain autograd (the explicit-pairs path)."""
    if variant == "ms":
        a = (shift_pos - logits) * scale_pos
        b = (logits - shift_neg) * scale_neg
        lse_p, _ = _masked_lse(a, pos, float("-inf"))
        lse_n, _ = _masked_lse(b, neg, float("-inf"))
        return softplus(lse_p) / scale_pos + softplus(lse_n) / scale_neg
    if variant == "circle":
        fixed = logits.detach()
        a = -scale_pos * torch.relu(2.0 - shift_pos - fixed) * (logits - shift_pos)
        b = scale_neg * torch.relu(fixed + shift_neg) * (logits - shift_neg)
        lse_p, has_p = _masked_lse(a, pos, 0.0)
        lse_n, has_n = _masked_lse(b, neg, 0.0)
        out = softplus(lse_p + lse_n)
        return torch.where(has_p & has_n, out, out * 0)
    if variant == "glifted":
        lse_p, _ = _masked_lse(shift_pos - logits, pos, 0.0)
        lse_n, _ = _masked_lse(logits - shift_neg, neg, 0.0)
        return torch.relu(lse_p + lse_n)
    raise ValueError(f"unknown variant {variant!r}")


class MultiSimilarityLoss(_PairLSELoss):
    """Multi-Similarity loss (Wang et al. 2019), per anchor
    (1/α)·log(1 + Σ_{p∈P} e^{−α(s_ap − λ)}) + (1/β)·log(1 + Σ_{n∈N} e^{β(s_an − λ)}).

    With a distance d the exponents are α(d_ap − λ) and β(λ − d_an). "mean" averages over
    every anchor (pytorch-metric-learning's MeanReducer over its per-anchor losses).

    Args:
        alpha (float, default 2): scale of the positive pairs' exponent (> 0).
        beta (float, default 50): scale of the negative pairs' exponent (> 0).
        base (float, default 0.5): the similarity λ both exponents are measured from.
        distance (str, default "cosine"): "cosine", "dot", "euclidean" or "squared_euclidean".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's
            own default, True only for "cosine").
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton" (None: the process default).

    Returns:
        A scalar loss, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: a non-positive alpha/beta, an unknown distance or reduction, bad tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
        >>> loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    variant = "ms"

    def __init__(self, *, alpha=2.0, beta=50.0, base=0.5, distance="cosine", normalize=None,
                 reduction="mean", backend=None):
        check_positive(alpha, "alpha")
        check_positive(beta, "beta")
        super().__init__(distance=distance, normalize=normalize, reduction=reduction, backend=backend)
        self.alpha, self.beta, self.base = float(alpha), float(beta), check_real(base, "base")

    def _settings(self):
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}"

    def shifts(self):
        lam = self._flip(self.base)
        return dict(scale_pos=self.alpha, scale_neg=self.beta, shift_pos=lam, shift_neg=lam)


class CircleLoss(_PairLSELoss):
    """Circle loss (Sun et al. 2020), per anchor with positives and negatives
    softplus(LSE_n γ·α_n·(s_an − Δ_n) + LSE_p −γ·α_p·(s_ap − Δ_p)),
    α_p = relu(1 + m − s_ap), α_n = relu(s_an + m) taken as constants (no gradient, as in the
    paper and pytorch-metric-learning), Δ_p = 1 − m, Δ_n = m. "mean" averages over the
    anchors whose loss is > 0 (pytorch-metric-learning's AvgNonZeroReducer).

    Args:
        m (float, default 0.4): the relaxation margin.
        gamma (float, default 80): the scale γ (> 0).
        distance (str, default "cosine"): "cosine" or "dot" (a similarity is required).
        normalize (bool | None, default None): L2-normalize the rows first (None: True for "cosine").
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton".

    Returns:
        A scalar loss, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: gamma ≤ 0, a distance that is not a similarity, bad tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.CircleLoss(m=0.25, gamma=128)
        >>> loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    variant = "circle"
    average = "avg_nonzero"
    similarity_only = True

    def __init__(self, *, m=0.4, gamma=80.0, distance="cosine", normalize=None, reduction="mean",
                 backend=None):
        check_positive(gamma, "gamma")
        super().__init__(distance=distance, normalize=normalize, reduction=reduction, backend=backend)
        self.m, self.gamma = check_real(m, "m"), float(gamma)

    def _settings(self):
        return f"m={self.m}, gamma={self.gamma}"

    def shifts(self):
        return dict(scale_pos=self.gamma, scale_neg=self.gamma, shift_pos=1.0 - self.m, shift_neg=self.m)


class GeneralizedLiftedStructureLoss(_PairLSELoss):
    """Generalized lifted structure loss (Hermans et al. 2017), per anchor
    relu(LSE_{p∈P}(m_pos − s_ap) + LSE_{n∈N}(s_an − m_neg)), a log-sum-exp over no pair
    counting 0; with a distance relu(LSE_P(d_ap − m_pos) + LSE_N(m_neg − d_an)). "mean"
    averages over every anchor.

    Args:
        neg_margin (float, default 1): the negative pairs' margin.
        pos_margin (float, default 0): the positive pairs' margin.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton".

    Returns:
        A scalar loss, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: non-finite margins, an unknown distance or reduction, bad tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.GeneralizedLiftedStructureLoss(neg_margin=1.0, normalize=True)
        >>> loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    variant = "glifted"

    def __init__(self, *, neg_margin=1.0, pos_margin=0.0, distance="euclidean", normalize=None,
                 reduction="mean", backend=None):
        super().__init__(distance=distance, normalize=normalize, reduction=reduction, backend=backend)
        self.neg_margin, self.pos_margin = check_real(neg_margin, "neg_margin"), check_real(pos_margin, "pos_margin")

    def _settings(self):
        return f"neg_margin={self.neg_margin}, pos_margin={self.pos_margin}"

    def shifts(self):
        return dict(shift_pos=self._flip(self.pos_margin), shift_neg=self._flip(self.neg_margin))


class LiftedStructureLoss(GeneralizedLiftedStructureLoss):
    """Lifted structure loss (Oh Song et al. 2016), per positive pair (a, p)
    relu(LSE_{n∈N_a ∪ N_p}(s_n − m_neg) + m_pos − s_ap)² / 2, where N_a ∪ N_p are the
    negative pairs of anchor row a and of anchor row p (pytorch-metric-learning's choice;
    with a reference set, anchor row p when p < B), a log-sum-exp over nothing counting 0;
    with a distance the comparisons flip. "mean" averages over positive pairs; the loss is
    0 when the batch has no negative pair. backend="triton": the similarity-softmax kernels
    ("glifted") compute each row's LSE over its negatives and its gradient, kernels/lifted.py
    the per-positive-pair terms and their gradient (O(B) memory, no host sync). Under
    distributed.GlobalBatchLoss every rank computes the whole gathered batch's terms and keeps
    its anchors' ("whole_rows": a pair's negatives include those of its positive's anchor row,
    which another rank may hold).

    Args:
        neg_margin (float, default 1): the negative pairs' margin.
        pos_margin (float, default 0): the positive pairs' margin.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor sums over its pairs).
        backend (str | None, default None): "auto", "torch" or "triton".

    Returns:
        A scalar loss, or (B,) per-anchor sums with reduction="none".

    Raises:
        ValueError: non-finite margins, an unknown distance or reduction, bad tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.LiftedStructureLoss(neg_margin=1.0, normalize=True)
        >>> loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """

    variant = "lifted"

    def _terms_from(self, values, n_pos) -> LossTerms:
        return LossTerms(values, n_pos, n_pos)

    def distributed_mode(self) -> str:
        """How fastcontrast.distributed.GlobalBatchLoss shares this loss: "whole_rows" (every
        rank computes the terms of the whole gathered batch and keeps its own anchors' rows,
        since a positive pair (a, p) also uses the negatives of anchor row p)."""
        return "whole_rows"

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0, *,
              row_bounds=None, bound_slack: float = 0.0) -> LossTerms:
        """As _PairLSELoss.terms; with row_bounds a positive pair (a, p) is one only inside row
        a's bounds and its log-sum-exp runs over the negatives inside rows a's and p's."""
        terms = super().terms(embeddings, labels, ref_emb, ref_labels, self_offset, row_bounds=row_bounds,
                              bound_slack=bound_slack)
        r_labels = labels if ref_emb is None else ref_labels
        from .softmax import different_label_counts
        # no negative pair at all: 0 (read on the device, no host sync; torch.compile traces it)
        has_negative = (different_label_counts(labels, r_labels) > 0).any()
        return LossTerms(torch.where(has_negative, terms.values, terms.values * 0), terms.counts,
                         torch.where(has_negative, terms.nonzero, terms.nonzero * 0))

    @full_precision
    def tuple_terms(self, embeddings, tuples, ref_emb=None) -> LossTerms:
        """Per-anchor sums over the listed positive pairs; every listed negative pair counts
        as often as it occurs."""
        a1, p, a2, n = tuples
        b = embeddings.shape[0]
        q = metrics.prepare(embeddings, self.metric)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric)
        sign = 1.0 if self.metric.kind == "dot" else -1.0
        lp = sign * metrics.row_distances(q[a1], r[p], self.metric.kind)
        ln = sign * metrics.row_distances(q[a2], r[n], self.metric.kind)
        sh = self.shifts()
        cd = lp.dtype
        if a1.numel() == 0 or a2.numel() == 0:
            zero = torch.zeros(b, dtype=cd, device=q.device) + 0 * (lp.sum() + ln.sum())
            return LossTerms(zero, index_counts(a1, b), index_counts(a1, b))
        bneg = ln - sh["shift_neg"]
        row_max = torch.full((b,), float("-inf"), dtype=cd, device=q.device).scatter_reduce(
            0, a2, bneg.detach(), "amax")
        has = torch.isfinite(row_max)
        safe_max = torch.where(has, row_max, torch.zeros_like(row_max))
        total = torch.zeros(b, dtype=cd, device=q.device).index_add(0, a2, torch.exp(bneg - safe_max[a2]))
        row_lse = torch.where(has, safe_max + torch.where(has, total, torch.ones_like(total)).log(),
                              torch.full_like(total, float("-inf")))
        mine = row_lse[a1]
        theirs = torch.where(p < b, row_lse[p.clamp_max(b - 1)], torch.full_like(mine, float("-inf")))
        theirs = torch.where(p == a1, torch.full_like(mine, float("-inf")), theirs)
        both_inf = torch.isneginf(mine) & torch.isneginf(theirs)
        union = torch.logaddexp(torch.where(both_inf, torch.zeros_like(mine), mine),
                                torch.where(both_inf, torch.full_like(mine, float("-inf")), theirs))
        h = torch.relu(union + sh["shift_pos"] - lp)
        per_pair = h * h / 2
        values = torch.zeros(b, dtype=cd, device=q.device).index_add(0, a1, per_pair)
        counts = index_counts(a1, b)
        return LossTerms(values, counts, counts)


# ---------------------------------------------------------------------------------------
# functional API


def multi_similarity_loss(embeddings, labels=None, *, alpha=2.0, beta=50.0, base=0.5, distance="cosine",
                          normalize=None, ref_emb=None, ref_labels=None, indices_tuple=None,
                          reduction="mean", backend=None):
    """Multi-Similarity loss of a batch; see MultiSimilarityLoss for the formula and options.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor | None): (B,) integer labels (optional with indices_tuple).
        alpha (float, default 2): scale of the positive pairs' exponent (> 0).
        beta (float, default 50): scale of the negative pairs' exponent (> 0).
        base (float, default 0.5): the similarity λ both exponents are measured from.
        distance (str, default "cosine"): "cosine", "dot", "euclidean" or "squared_euclidean".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's
            own default, True only for "cosine").
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton" (None: the process default).
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        indices_tuple (tuple | None): explicit pairs (a1, p, a2, n), triplets, or a miner selection.

    Returns:
        A scalar, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.multi_similarity_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])).dim()
        0
    """
    loss = MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, distance=distance, normalize=normalize,
                               reduction=reduction, backend=backend)
    return loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)


def circle_loss(embeddings, labels=None, *, m=0.4, gamma=80.0, distance="cosine", normalize=None,
                ref_emb=None, ref_labels=None, indices_tuple=None, reduction="mean", backend=None):
    """Circle loss of a batch; see CircleLoss for the formula and options.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor | None): (B,) integer labels (optional with indices_tuple).
        m (float, default 0.4): the relaxation margin.
        gamma (float, default 80): the scale γ (> 0).
        distance (str, default "cosine"): "cosine" or "dot" (a similarity is required).
        normalize (bool | None, default None): L2-normalize the rows first (None: True for "cosine").
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton".
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        indices_tuple (tuple | None): explicit pairs, triplets, or a miner selection.

    Returns:
        A scalar, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.circle_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])).dim()
        0
    """
    loss = CircleLoss(m=m, gamma=gamma, distance=distance, normalize=normalize, reduction=reduction,
                      backend=backend)
    return loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)


def generalized_lifted_structure_loss(embeddings, labels=None, *, neg_margin=1.0, pos_margin=0.0,
                                      distance="euclidean", normalize=None, ref_emb=None, ref_labels=None,
                                      indices_tuple=None, reduction="mean", backend=None):
    """Generalized lifted structure loss of a batch; see GeneralizedLiftedStructureLoss.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor | None): (B,) integer labels (optional with indices_tuple).
        neg_margin (float, default 1): the negative pairs' margin.
        pos_margin (float, default 0): the positive pairs' margin.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor values).
        backend (str | None, default None): "auto", "torch" or "triton".
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        indices_tuple (tuple | None): explicit pairs, triplets, or a miner selection.

    Returns:
        A scalar, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.generalized_lifted_structure_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])).dim()
        0
    """
    loss = GeneralizedLiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin, distance=distance,
                                          normalize=normalize, reduction=reduction, backend=backend)
    return loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)


def lifted_structure_loss(embeddings, labels=None, *, neg_margin=1.0, pos_margin=0.0, distance="euclidean",
                          normalize=None, ref_emb=None, ref_labels=None, indices_tuple=None,
                          reduction="mean", backend=None):
    """Lifted structure loss of a batch; see LiftedStructureLoss.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor | None): (B,) integer labels (optional with indices_tuple).
        neg_margin (float, default 1): the negative pairs' margin.
        pos_margin (float, default 0): the positive pairs' margin.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean", "sum" or "none" (per-anchor sums over its pairs).
        backend (str | None, default None): "auto", "torch" or "triton".
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        indices_tuple (tuple | None): explicit pairs, triplets, or a miner selection.

    Returns:
        A scalar, or (B,) per-anchor sums with reduction="none".

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.lifted_structure_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])).dim()
        0
    """
    loss = LiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin, distance=distance,
                               normalize=normalize, reduction=reduction, backend=backend)
    return loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
