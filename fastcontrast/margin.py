"""Margin loss (Wu et al. 2017) with a learnable boundary β (the pair-margin family).

Over every triplet (a, p, n) of the batch (a positive pair and a negative pair sharing the
anchor), with d a distance and β_a the boundary of the anchor (one β, or one per class):

    term(a, p, n) = relu(d_ap − β_a + margin) + relu(β_a − d_an + margin)

With a similarity s the comparisons flip: relu(β_a − s_ap + margin) + relu(s_an − β_a + margin).
The triplets are never listed: a positive pair's hinge occurs once per negative of its
anchor, a negative pair's once per positive, so per anchor

    v_a = |N(a)|·Σ_p relu(d_ap − β_a + margin) + |P(a)|·Σ_n relu(β_a − d_an + margin)

and the hinge sums come from one pass of the pair-margin Function
(pair_margin.PairMarginFunction with a per-anchor margin shift β_a, whose gradient the
Function returns: −(active positive hinges) + (active negative hinges) per anchor).

"mean" divides Σ_a v_a by the number of non-zero hinge terms counted over the triplets
(pytorch-metric-learning's DivisorReducer with its divisor), 0 when there are none. With
nu > 0 the boundary regularization nu·β is added (one β: nu·β; one per class:
nu·Σ_triplets β_a / divisor), as in pytorch-metric-learning; 0 when the batch has no triplet.
"""
from __future__ import annotations

import torch
from torch import nn

from . import metrics
from ._reduce import LossTerms, reduce_terms, safe_ratio
from ._validation import (check_choice, check_embeddings, check_labels, check_pair, check_real,
                          check_reduction, full_precision, index_range_ok)
from .backend import BACKENDS, resolve_backend
from .configs import PairMarginConfig
from .pair_margin import PairMarginFunction, _check_indices, materialize_indices

__all__ = ["margin_loss", "MarginLoss"]


def _beta_tensor(beta, like: torch.Tensor) -> torch.Tensor:
    """β as a 1-D tensor (one value, or one per class) in like's compute dtype."""
    cd = metrics.compute_dtype(like.dtype)
    if isinstance(beta, torch.Tensor):
        if beta.is_complex() or not beta.is_floating_point():
            raise TypeError(f"beta must be a float tensor, got {beta.dtype}")
        if beta.dim() > 1 or beta.numel() == 0:
            raise ValueError(f"beta must be a number or a 1-D tensor (one β or one per class), "
                             f"got shape {tuple(beta.shape)}")
        return beta.reshape(-1).to(device=like.device, dtype=cd)
    return torch.full((1,), check_real(beta, "beta"), dtype=cd, device=like.device)


def anchor_beta(beta: torch.Tensor, labels: torch.Tensor | None, anchors: torch.Tensor | None = None):
    """β of each anchor: the one β, or β[label] per class (labels needed then)."""
    if beta.numel() == 1:
        n = labels.shape[0] if anchors is None else anchors.shape[0]
        return beta.expand(n)
    if labels is None:
        raise ValueError("a per-class beta needs labels")
    y = labels if anchors is None else labels[anchors]
    if not index_range_ok(y, beta.numel()):
        raise ValueError(f"labels must lie in [0, {beta.numel()}) to index a per-class beta")
    return beta[y.long()]


class MarginLoss(nn.Module):
    """Margin loss with a boundary β, per anchor |N(a)|·Σ_p relu(d_ap − β_a + margin) +
    |P(a)|·Σ_n relu(β_a − d_an + margin) (comparisons flipped for similarities); see the
    module docstring.

    Args:
        margin (float, default 0.2): the margin on either side of β.
        nu (float, default 0): weight of the β regularization (added with learn_beta only).
        beta (float, default 1.2): the initial boundary.
        learn_beta (bool, default False): make β a Parameter (it gets its gradient).
        num_classes (int | None, default None): one β per class (labels index it) instead of one.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean" (sum over the non-zero hinge terms' count, plus
            the regularization), "sum" (every triplet's hinge terms, plus nu·β_a per triplet with
            the regularization) or "none" (those sums per anchor).
        backend (str | None, default None): "auto", "torch" or "triton".

    Returns:
        A scalar loss, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: bad options or tensors, labels outside [0, num_classes) with a per-class β.

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.MarginLoss(margin=0.2, beta=1.2, learn_beta=True, nu=0.01, normalize=True)
        >>> loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
        >>> loss.beta.grad.shape
        torch.Size([1])
    """

    def __init__(self, *, margin=0.2, nu=0.0, beta=1.2, learn_beta=False, num_classes=None,
                 distance="euclidean", normalize=None, reduction="mean", backend=None):
        super().__init__()
        self.margin = check_real(margin, "margin")
        self.nu = check_real(nu, "nu")
        if not isinstance(learn_beta, bool):
            raise TypeError(f"learn_beta must be True or False, got {type(learn_beta).__name__}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
        check_reduction(reduction)
        if backend is not None:
            check_choice(backend, "backend", BACKENDS)
        self.metric = metrics.resolve_metric(distance, normalize)
        self.distance, self.normalize, self.reduction, self.backend = distance, normalize, reduction, backend
        self.learn_beta, self.num_classes = learn_beta, num_classes
        value = torch.full((num_classes or 1,), check_real(beta, "beta"))
        if learn_beta:
            self.beta = nn.Parameter(value)
        else:
            self.register_buffer("beta", value)

    def extra_repr(self) -> str:
        beta = [round(v, 6) for v in self.beta.detach().tolist()]
        return (f"margin={self.margin}, nu={self.nu}, beta={beta}, "
                f"learn_beta={self.learn_beta}, num_classes={self.num_classes}, distance={self.distance!r}, "
                f"normalize={self.normalize}, reduction={self.reduction!r}, backend={self.backend!r}")

    def config(self, self_offset: int = 0, precision: str = "ieee", bound_slack=None) -> PairMarginConfig:
        """The seam config: pos hinge d − (−margin + β), neg hinge (margin + β) − d; bound_slack
        (a float) or None: row bounds come beside (PairMarginConfig.row_bounds)."""
        bounded = {} if bound_slack is None else dict(row_bounds=True, bound_slack=float(bound_slack))
        return PairMarginConfig(kind=self.metric.kind, negate=self.metric.is_similarity,
                                pos_margin=-self.margin, neg_margin=self.margin, power=1,
                                self_offset=self_offset, precision=precision, **bounded)

    def _check(self, embeddings, labels, ref_emb, ref_labels, need_labels):
        check_embeddings(embeddings, "embeddings")
        if labels is not None:
            check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
        elif need_labels:
            raise ValueError("labels are required unless indices_tuple is given")
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb")
            check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
            if ref_labels is not None:
                check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb", ref_emb.device)
            elif need_labels:
                raise ValueError("ref_labels is required when ref_emb is given")
        elif ref_labels is not None:
            raise ValueError("ref_labels was given without ref_emb")

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0,
              beta=None, regularize=None, *, row_bounds=None, bound_slack: float = 0.0) -> LossTerms:
        """Per-anchor LossTerms, (B, 1) or with the β regularization (B, 2): part 0 v_a over
        its triplets |P(a)|·|N(a)| and its non-zero hinge terms counted over the triplets (the
        divisor's share); part 1 nu·β·|P(a)||N(a)| over |P(a)||N(a)| (one β) or
        nu·β_a·|P(a)||N(a)| over the divisor's share (per class). reduce() of them is the loss
        (and GlobalBatchLoss's exact global loss: every part is a ratio of global sums).
        beta: overrides self.beta; regularize: overrides learn_beta. row_bounds (B, 2),
        optional: a miner's selection fused (pair_margin.ContrastiveLoss.terms' rule, in d = the
        distance or −s units): the triplets are then every selected positive pair with every
        selected negative pair of its anchor, as pytorch-metric-learning turns mined pairs into
        triplets."""
        t, beta_a = self._anchor_terms(embeddings, labels, ref_emb, ref_labels, self_offset, beta,
                                       row_bounds, bound_slack)
        regularize = self.learn_beta if regularize is None else regularize
        if not regularize or self.nu == 0:
            return LossTerms(t.values[:, None], t.counts[:, None], t.nonzero[:, None])
        n_trip = t.counts.to(beta_a.dtype)
        reg = self.nu * beta_a * n_trip
        reg_den = t.counts if _beta_tensor(self.beta if beta is None else beta, embeddings).numel() == 1 \
            else t.nonzero
        return LossTerms(torch.stack([t.values, reg.to(t.values.dtype)], 1), torch.stack([t.counts, t.counts], 1),
                         torch.stack([t.nonzero, reg_den], 1))

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        """"mean": each part over its divisor (0 when it is 0); "sum": every term; "none": per anchor."""
        return reduce_terms(terms, self.reduction, "avg_nonzero", denominators)

    @full_precision
    def _anchor_terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0,
                      beta=None, row_bounds=None, bound_slack: float = 0.0) -> tuple[LossTerms, torch.Tensor]:
        """(LossTerms per anchor: v_a, its triplets |P(a)|·|N(a)|, its non-zero hinge terms
        counted over the triplets; β of each anchor). beta: overrides self.beta."""
        self._check(embeddings, labels, ref_emb, ref_labels, need_labels=True)
        backend = resolve_backend(self.backend, embeddings.device, embeddings.dtype)
        if embeddings.shape[0] == 0 or (ref_emb is not None and ref_emb.shape[0] == 0):
            backend = "torch"  # nothing to launch a kernel for
        q = metrics.prepare(embeddings, self.metric, backend)
        r = None if ref_emb is None else metrics.prepare(ref_emb, self.metric, backend)
        beta_a = anchor_beta(_beta_tensor(self.beta if beta is None else beta, embeddings), labels)
        shift = -beta_a if self.metric.is_similarity else beta_a
        r_labels = None if ref_emb is None else ref_labels.to(torch.int64).contiguous()
        bounds, slack = None, None
        if row_bounds is not None:
            if not isinstance(row_bounds, torch.Tensor) or row_bounds.shape != (embeddings.shape[0], 2):
                raise ValueError(f"row_bounds must be a ({embeddings.shape[0]}, 2) tensor")
            bounds, slack = row_bounds.to(q.device), check_real(bound_slack, "bound_slack")
        values, counts, nonzero = PairMarginFunction.apply(
            q, r, labels.to(torch.int64).contiguous(), r_labels,
            self.config(self_offset, metrics.matmul_precision(q.dtype, q.device), slack), backend,
            shift.contiguous(), bounds)
        n_pos, n_neg = counts[:, 0], counts[:, 1]
        v = values[:, 0] * n_neg.to(values.dtype) + values[:, 1] * n_pos.to(values.dtype)
        return LossTerms(v, n_pos * n_neg, nonzero[:, 0] * n_neg + nonzero[:, 1] * n_pos), beta_a

    @full_precision
    def triplet_terms(self, embeddings, labels, triplets, ref_emb=None, beta=None):
        """(per-triplet terms, per-triplet non-zero counts, β of each triplet's anchor) of
        explicit triplets (a, p, n), gathered rows, plain autograd."""
        a, p, n = triplets
        q = metrics.prepare(embeddings, self.metric)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric)
        sign = -1.0 if self.metric.is_similarity else 1.0
        d_ap = sign * metrics.row_distances(q[a], r[p], self.metric.kind)
        d_an = sign * metrics.row_distances(q[a], r[n], self.metric.kind)
        beta_t = anchor_beta(_beta_tensor(self.beta if beta is None else beta, embeddings), labels, a)
        shift = sign * beta_t
        pos = torch.relu(d_ap + self.margin - shift)
        neg = torch.relu(shift + self.margin - d_an)
        return pos + neg, (pos > 0).long() + (neg > 0).long(), beta_t

    def regularization(self, beta_weighted_sum, n_triplets, divisor, beta, regularize: bool):
        """nu·β (one β) or nu·Σ_triplets β_a / divisor (per class), 0 without triplets; None
        when there is none (regularize False, or nu = 0)."""
        if not regularize or self.nu == 0:
            return None
        if beta.numel() == 1:
            reg = self.nu * beta.reshape(())
            return torch.where(torch.as_tensor(n_triplets) > 0, reg, reg * 0)
        return safe_ratio(self.nu * beta_weighted_sum, divisor)

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        return self.loss_with(embeddings, labels, indices_tuple, ref_emb, ref_labels, self.beta, self.learn_beta)

    def loss_with(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, beta, regularize: bool,
                  self_offset=None, row_bounds=None, bound_slack: float = 0.0):
        """The loss with a given β (a number or a (1,) / (C,) tensor, whose graph is kept) and
        with or without the β regularization. self_offset: see terms() (default 0 without
        ref_emb, −1 with it); row_bounds / bound_slack (no indices_tuple): see terms()."""
        self._check(embeddings, labels, ref_emb, ref_labels, need_labels=indices_tuple is None)
        if indices_tuple is not None:
            triplets = _triplets(indices_tuple, embeddings, ref_emb)
            terms, nz, beta_t = self.triplet_terms(embeddings, labels, triplets, ref_emb, beta)
            if self.reduction != "mean":  # every term, the regularization per triplet
                if regularize and self.nu != 0:
                    terms = terms + self.nu * beta_t.to(terms.dtype)
                if self.reduction == "sum":
                    return terms.sum()
                return terms.new_zeros(embeddings.shape[0]).index_add(0, triplets[0], terms)
            total, divisor, n_triplets = terms.sum(), nz.sum(), triplets[0].numel()
            weighted = beta_t.sum()
            beta = _beta_tensor(beta, embeddings)
        else:
            if self_offset is None:
                self_offset = 0 if ref_emb is None else -1
            return self.reduce(self.terms(embeddings, labels, ref_emb, ref_labels, self_offset, beta, regularize,
                                          row_bounds=row_bounds, bound_slack=bound_slack))
        loss = safe_ratio(total, divisor)
        reg = self.regularization(weighted, n_triplets, divisor, beta, regularize)
        if reg is not None:
            loss = loss + reg
        return loss if n_triplets > 0 else loss * 0  # n_triplets: the triplets' number, known here


def _triplets(indices_tuple, embeddings, ref_emb):
    """Explicit triplets, from triplets or from pairs as pytorch-metric-learning converts them
    (every positive pair with every negative pair of the same anchor)."""
    if hasattr(indices_tuple, "materialize") and callable(indices_tuple.materialize):
        indices_tuple = indices_tuple.materialize()
    n_ref = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
    if isinstance(indices_tuple, (tuple, list)) and len(indices_tuple) == 3:
        a1, p, a2, n = _check_indices(materialize_indices(indices_tuple), embeddings.shape[0], n_ref,
                                      embeddings.device)
        return a1, p, n
    a1, p, a2, n = _check_indices(materialize_indices(indices_tuple), embeddings.shape[0], n_ref,
                                  embeddings.device)
    pi, ni = torch.where(a1[:, None] == a2[None, :])
    return a1[pi], p[pi], n[ni]


def margin_loss(embeddings, labels=None, *, margin=0.2, nu=0.0, beta=1.2, distance="euclidean",
                normalize=None, ref_emb=None, ref_labels=None, indices_tuple=None, reduction="mean",
                backend=None):
    """Margin loss of a batch; see MarginLoss for the formula and options.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor | None): (B,) integer labels (optional with indices_tuple and one β).
        margin (float, default 0.2): the margin on either side of β.
        nu (float, default 0): weight of the β regularization (added with learn_beta only).
        beta (float | Tensor, default 1.2): the boundary: a number, or a (1,) / (C,) tensor
            (one per class, indexed by the labels) that may require grad.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "cosine" or "dot".
        normalize (bool | None, default None): L2-normalize the rows first.
        reduction (str, default "mean"): "mean" (sum over the non-zero hinge terms' count, plus
            the regularization), "sum" (every triplet's hinge terms, plus nu·β_a per triplet with
            the regularization) or "none" (those sums per anchor).
        backend (str | None, default None): "auto", "torch" or "triton".
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        indices_tuple (tuple | None): explicit triplets (a, p, n), pairs (converted to
            triplets), or a miner selection.

    Returns:
        A scalar, or (B,) per-anchor values with reduction="none".

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> beta = torch.tensor([1.2], requires_grad=True)
        >>> fc.margin_loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]), beta=beta).backward()
        >>> beta.grad.shape
        torch.Size([1])
    """
    module = MarginLoss(margin=margin, nu=nu, distance=distance, normalize=normalize, reduction=reduction,
                        backend=backend)
    return module.loss_with(embeddings, labels, indices_tuple, ref_emb, ref_labels, beta, regularize=nu != 0)
