"""Max-margin contrastive loss (the pair-margin family).

For every positive pair (same label, not the anchor itself) and negative pair (different
label) of anchor i and reference j, with d a distance:

    positive term  relu(d_ij − pos_margin) ** power
    negative term  relu(neg_margin − d_ij) ** power

With a similarity s ("dot", "cosine") every comparison flips: relu(pos_margin − s_ij) and
relu(s_ij − neg_margin). power=1 is pytorch-metric-learning's ContrastiveLoss; power=2 with
pos_margin=0 is the squared form of Hadsell, Chopra & LeCun (2006).

Reduction: the positive and the negative terms are averaged separately and the two averages
added. average="avg_nonzero" divides each sum by its number of terms > 0 (PML's default
reducer), average="mean" by its number of pairs; an empty part contributes an exact 0.
reduction="sum" adds every term, reduction="none" gives each anchor's sum of terms.

The all-pairs loss runs through one autograd Function that calls either the memory-lean
PyTorch path (fastcontrast/_torch/pair_margin.py) or the Triton kernels
(kernels/pair_margin.py); neither ever holds the B×N distance matrix. Explicit pairs
(`indices_tuple`) are computed directly from the selected rows, O(pairs) time and memory.
"""
from __future__ import annotations

import math
import numbers

import torch

from . import metrics
from ._function import compiling, config_code, config_from, opaque_op, save_inputs, saved_inputs, with_references
from ._docs import COMMON, RAISES, doc
from ._reduce import LossTerms, index_counts, reduce_terms
from ._validation import (check_choice, check_embeddings, check_fits, check_labels, check_pair, check_real,
                          check_reduction, full_precision, index_range_ok)
from .backend import BACKENDS, resolve_backend
from .configs import PairMarginConfig

AVERAGES = ("avg_nonzero", "mean")
POWERS = (1, 2)

__all__ = ["contrastive_loss", "ContrastiveLoss", "PairMarginFunction"]


def _implementation(backend: str):
    """The implementation module of a resolved backend. The kernels (and so triton) are
    imported on first use; an import statement, unlike importlib, is something torch.compile
    traces, so the first call may happen inside a compiled region."""
    if backend == "triton":
        from .kernels import pair_margin as kernels_pair_margin
        return kernels_pair_margin
    from ._torch import pair_margin as torch_pair_margin
    return torch_pair_margin


def _torch_forward(q, r, q_labels, r_labels, shift, cfg):
    extra = {} if shift is None else {"shift": shift}
    values, counts, nonzero, _ = _implementation("torch").forward(
        *with_references(q, r, q_labels, r_labels), config_from(cfg, PairMarginConfig), **extra)
    return values, counts, nonzero


def _torch_forward_fake(q, r, q_labels, r_labels, shift, cfg):
    b = q.shape[0]
    return (q.new_empty((b, 2), dtype=metrics.compute_dtype(q.dtype)),
            q.new_empty((b, 2), dtype=torch.int64), q.new_empty((b, 2), dtype=torch.int64))


def _torch_backward(grad_values, q, r, q_labels, r_labels, shift, cfg):
    """(grad_q, grad_r, grad_shift); grad_shift is empty without a shift."""
    inputs = (grad_values, *with_references(q, r, q_labels, r_labels), config_from(cfg, PairMarginConfig), ())
    if shift is None:
        grad_q, grad_r = _implementation("torch").backward(*inputs)
        return grad_q, grad_r, q.new_empty((0,))
    return _implementation("torch").backward(*inputs, shift=shift)


def _torch_backward_fake(grad_values, q, r, q_labels, r_labels, shift, cfg):
    return (torch.empty_like(q), torch.empty_like(q if r is None else r),
            q.new_empty((0,)) if shift is None else torch.empty_like(shift))


# the PyTorch path as opaque ops, used while torch.compile traces (_function.py)
_SIGNATURE = "Tensor q, Tensor? r, Tensor q_labels, Tensor? r_labels, Tensor? shift, str cfg"
_torch_forward_op = opaque_op("torch_pair_margin_fwd", f"({_SIGNATURE}) -> (Tensor, Tensor, Tensor)",
                              _torch_forward, _torch_forward_fake)
_torch_backward_op = opaque_op("torch_pair_margin_bwd",
                               f"(Tensor grad_values, {_SIGNATURE}) -> (Tensor, Tensor, Tensor)",
                               _torch_backward, _torch_backward_fake)


class PairMarginFunction(torch.autograd.Function):
    """(q, r, q_labels, r_labels, cfg, backend, shift=None) → per-anchor (values, counts,
    nonzero), each (B, 2); only `values` is differentiable. r = None (and r_labels = None)
    means the references are the anchors themselves: q's gradient is then the sum of both
    roles. shift (B,), optional: anchor i's margins are pos_margin + shift_i and
    neg_margin + shift_i (MarginLoss's learnable β), and shift gets its gradient. bounds (B, 2),
    optional, with cfg.row_bounds: each anchor's selected pairs (a fused miner selection), not
    differentiable."""

    @staticmethod
    @full_precision
    def forward(ctx, q, r, q_labels, r_labels, cfg: PairMarginConfig, backend: str, shift=None, bounds=None):
        # while torch.compile traces, the PyTorch path runs as one opaque op (_function.py)
        ctx.opaque = backend == "torch" and bounds is None and compiling()
        if ctx.opaque:
            values, counts, nonzero = _torch_forward_op(q, r, q_labels, r_labels, shift, config_code(cfg))
            saved = ()
        else:
            extra = {} if shift is None else {"shift": shift}
            if bounds is not None:
                extra["bounds"] = bounds
            values, counts, nonzero, saved = _implementation(backend).forward(
                *with_references(q, r, q_labels, r_labels), cfg, **extra)
        ctx.cfg, ctx.backend, ctx.has_shift, ctx.has_bounds = cfg, backend, shift is not None, bounds is not None
        if bounds is not None:
            saved = (*saved, bounds)
        if shift is not None:
            saved = (*saved, shift)
        save_inputs(ctx, q, r, q_labels, r_labels, *saved)
        ctx.mark_non_differentiable(counts, nonzero)
        return values, counts, nonzero

    @staticmethod
    @full_precision
    def backward(ctx, grad_values, _grad_counts, _grad_nonzero):
        grad_shift = None
        if ctx.opaque:
            q, r, q_labels, r_labels, *rest = ctx.saved_tensors
            shift = rest[-1] if ctx.has_shift else None
            grad_q, grad_r, grad_shift = _torch_backward_op(grad_values.contiguous(), q, r, q_labels, r_labels,
                                                            shift, config_code(ctx.cfg))
            grad_shift = grad_shift if ctx.has_shift else None
        else:
            q, r, q_labels, r_labels, saved = saved_inputs(ctx)
            impl = _implementation(ctx.backend)
            extra = {}
            if ctx.has_shift:
                *saved, extra["shift"] = saved
            if ctx.has_bounds:
                *saved, extra["bounds"] = saved
            if ctx.has_shift:
                grad_q, grad_r, grad_shift = impl.backward(grad_values.contiguous(), q, r, q_labels, r_labels,
                                                           ctx.cfg, tuple(saved), **extra)
            else:
                grad_q, grad_r = impl.backward(grad_values.contiguous(), q, r, q_labels, r_labels, ctx.cfg,
                                               tuple(saved), **extra)
        if ctx.same:
            grad_q, grad_r = grad_q + grad_r, None
        return grad_q, grad_r, None, None, None, None, grad_shift, None


# ---------------------------------------------------------------------------------------
# argument checks

def _check_power(power) -> int:
    if isinstance(power, bool) or not isinstance(power, numbers.Real):
        raise TypeError(f"power must be 1 or 2, got {type(power).__name__}")
    if power not in POWERS:
        raise ValueError(f"power must be 1 or 2, got {power}")
    return int(power)


def _check_options(pos_margin, neg_margin, power, distance, normalize, reduction, average, backend):
    pos_margin = check_real(pos_margin, "pos_margin")
    neg_margin = check_real(neg_margin, "neg_margin")
    power = _check_power(power)
    metric = metrics.resolve_metric(distance, normalize)
    check_reduction(reduction)
    check_choice(average, "average", AVERAGES)
    if backend is not None:
        check_choice(backend, "backend", BACKENDS)
    return pos_margin, neg_margin, power, metric


def materialize_indices(indices_tuple):
    """PML-style pairs (a1, p, a2, n) from pairs, triplets (a, p, n) → (a, p, a, n), or an
    object with `.materialize()` (a lazy miner selection) returning either."""
    if hasattr(indices_tuple, "materialize") and callable(indices_tuple.materialize):
        indices_tuple = indices_tuple.materialize()
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise TypeError("indices_tuple must be a tuple of 3 (anchors, positives, negatives) or 4 "
                        "(anchors, positives, anchors, negatives) index tensors, or a miner selection")
    for k, t in enumerate(indices_tuple):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"indices_tuple[{k}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"indices_tuple[{k}] must be 1-D, got shape {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"indices_tuple[{k}] must be an integer tensor, got {t.dtype}")
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        if not (len(a) == len(p) == len(n)):
            raise ValueError("indices_tuple: anchors, positives and negatives must have the same length")
        return a, p, a, n
    a1, p, a2, n = indices_tuple
    if len(a1) != len(p):
        raise ValueError("indices_tuple: positive-pair anchors and positives must have the same length")
    if len(a2) != len(n):
        raise ValueError("indices_tuple: negative-pair anchors and negatives must have the same length")
    return tuple(indices_tuple)


def _check_term_bounds(term_bounds):
    """((pos_low, pos_high), (neg_low, neg_high)) as floats (None = unbounded), or None."""
    if term_bounds is None:
        return None
    try:
        (pl, ph), (nl, nh) = term_bounds
    except (TypeError, ValueError):
        raise TypeError("term_bounds must be ((pos_low, pos_high), (neg_low, neg_high))") from None
    out = []
    for (low, high), side in (((pl, ph), "pos"), ((nl, nh), "neg")):
        pair = []
        for value, what, unbounded in ((low, "low", -math.inf), (high, "high", math.inf)):
            if value is None:
                value = unbounded
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
                raise TypeError(f"term_bounds {side} {what} must be a number or None, got {value!r}")
            pair.append(float(value))
        out.append(tuple(pair))
    return tuple(out)


def _check_indices(pairs, b: int, n: int, device):
    out = []
    for k, (t, size, what) in enumerate(zip(pairs, (b, n, b, n), ("embeddings", "references") * 2)):
        t = t.to(device=device, dtype=torch.int64)
        if not index_range_ok(t, size):
            raise ValueError(f"indices_tuple[{k}] has entries outside [0, {size}) ({what} rows)")
        out.append(t)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# explicit pairs: O(pairs)

def _explicit_pair_terms(q, r, pairs, cfg: PairMarginConfig) -> LossTerms:
    a1, p, a2, n = pairs
    b = q.shape[0]
    cdt = metrics.compute_dtype(q.dtype)
    qc, rc = q.to(cdt), r.to(cdt)
    sign = -1.0 if cfg.negate else 1.0
    d_pos = sign * metrics.row_distances(qc[a1], rc[p], cfg.kind)
    d_neg = sign * metrics.row_distances(qc[a2], rc[n], cfg.kind)
    t_pos = (d_pos - cfg.pos_margin).clamp_min(0) ** cfg.power
    t_neg = (cfg.neg_margin - d_neg).clamp_min(0) ** cfg.power
    # the terms that count (cfg.pos_keep / neg_keep; the default keeps every term > 0)
    k_pos = (t_pos > cfg.pos_keep[0]) & (t_pos < cfg.pos_keep[1])
    k_neg = (t_neg > cfg.neg_keep[0]) & (t_neg < cfg.neg_keep[1])
    t_pos, t_neg = torch.where(k_pos, t_pos, 0.0), torch.where(k_neg, t_neg, 0.0)
    values = torch.stack([qc.new_zeros(b).index_add(0, a1, t_pos), qc.new_zeros(b).index_add(0, a2, t_neg)], 1)
    counts = torch.stack([index_counts(a1, b), index_counts(a2, b)], 1)
    nonzero = torch.stack([index_counts(a1, b, k_pos), index_counts(a2, b, k_neg)], 1)
    return LossTerms(values, counts, nonzero)


# ---------------------------------------------------------------------------------------
# the loss

class ContrastiveLoss(torch.nn.Module):
    """Max-margin contrastive loss as a Module; see the module docstring for the formula.

    forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None).
    terms(...) gives the per-anchor LossTerms (column 0 positives, 1 negatives) and
    reduce(terms) the loss; forward is reduce(terms(...)).
    """

    def __init__(self, *, pos_margin: float = 0.0, neg_margin: float = 1.0, power: int = 1,
                 distance: str = "euclidean", normalize: bool | None = True, reduction: str = "mean",
                 average: str = "avg_nonzero", backend: str | None = None):
        super().__init__()
        self.pos_margin, self.neg_margin, self.power, self.metric = _check_options(
            pos_margin, neg_margin, power, distance, normalize, reduction, average, backend)
        self.distance, self.normalize = distance, normalize
        self.reduction, self.average, self.backend = reduction, average, backend

    def extra_repr(self):
        return (f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, power={self.power}, "
                f"distance={self.distance!r}, normalize={self.normalize!r}, reduction={self.reduction!r}, "
                f"average={self.average!r}, backend={self.backend!r}")

    def config(self, self_offset: int = 0, precision: str = "ieee", term_bounds=None,
               bound_slack=None) -> PairMarginConfig:
        """The seam config: margins flipped for similarities (d = −s); term_bounds
        ((pos_low, pos_high), (neg_low, neg_high)) or None: which terms count; bound_slack (a
        float) or None: row bounds come beside (PairMarginConfig)."""
        sim = self.metric.is_similarity
        keep = {} if term_bounds is None else dict(pos_keep=term_bounds[0], neg_keep=term_bounds[1])
        if bound_slack is not None:
            keep.update(row_bounds=True, bound_slack=float(bound_slack))
        return PairMarginConfig(kind=self.metric.kind, negate=sim,
                                pos_margin=-self.pos_margin if sim else self.pos_margin,
                                neg_margin=-self.neg_margin if sim else self.neg_margin,
                                power=self.power, self_offset=self_offset, precision=precision, **keep)

    @full_precision
    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset: int = 0,
              indices_tuple=None, *, term_bounds=None, row_bounds=None, bound_slack: float = 0.0) -> LossTerms:
        """Per-anchor sums of positive and negative terms, their pair counts and non-zero counts.

        Without ref_emb the references are the embeddings themselves. self_offset: anchor i is
        reference i + self_offset and that pair is skipped (-1: no self pair). term_bounds
        ((pos_low, pos_high), (neg_low, neg_high)): only terms with low < term < high enter
        the sums (and "non-zero" counts those); None = every term. row_bounds (B, 2), optional
        (labels only, no indices_tuple): each anchor's selected pairs, a miner's selection fused
        — with d the distance (−s for a similarity) a positive pair is one only when
        d + bound_slack > row_bounds[i, 0], a negative pair only when d − bound_slack <
        row_bounds[i, 1]; counts are then the selected pairs."""
        term_bounds = _check_term_bounds(term_bounds)
        check_embeddings(embeddings, "embeddings")
        for value, name in ((self.pos_margin, "pos_margin"), (self.neg_margin, "neg_margin")):
            check_fits(value, name, embeddings.dtype, self.power)
        if isinstance(self_offset, bool) or not isinstance(self_offset, int):
            raise TypeError(f"self_offset must be an int, got {type(self_offset).__name__}")
        if labels is not None:
            check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb")
            check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
            if ref_labels is not None:
                check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb", ref_emb.device)
        elif ref_labels is not None:
            raise ValueError("ref_labels was given without ref_emb")
        pairs = None
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            pairs = _check_indices(materialize_indices(indices_tuple), embeddings.shape[0], n, embeddings.device)
        else:
            if labels is None:
                raise ValueError("labels are required unless indices_tuple is given")
            if ref_emb is not None and ref_labels is None:
                raise ValueError("ref_emb and ref_labels must be given together (or pass indices_tuple)")
        backend = resolve_backend(self.backend, embeddings.device, embeddings.dtype)
        if row_bounds is not None:
            if pairs is not None:
                raise ValueError("row_bounds select among all pairs: give no indices_tuple with them")
            if not isinstance(row_bounds, torch.Tensor) or row_bounds.shape != (embeddings.shape[0], 2):
                raise ValueError(f"row_bounds must be a ({embeddings.shape[0]}, 2) tensor")
            bound_slack = check_real(bound_slack, "bound_slack")

        q = metrics.prepare(embeddings, self.metric, backend)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric, backend)
        if pairs is not None:
            return _explicit_pair_terms(q, r, pairs, self.config(term_bounds=term_bounds))
        q_labels = labels.to(torch.int64).contiguous()
        if ref_emb is None:
            r, r_labels = None, None
        else:
            r_labels = ref_labels.to(torch.int64).contiguous()
        cfg = self.config(self_offset, metrics.matmul_precision(q.dtype, q.device), term_bounds,
                          None if row_bounds is None else bound_slack)
        bounds = None if row_bounds is None else row_bounds.to(q.device)
        values, counts, nonzero = PairMarginFunction.apply(q, r, q_labels, r_labels, cfg, backend, None, bounds)
        return LossTerms(values, counts, nonzero)

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        return reduce_terms(terms, self.reduction, self.average, denominators)

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self_offset = 0 if ref_emb is None else -1
        return self.reduce(self.terms(embeddings, labels, ref_emb, ref_labels, self_offset, indices_tuple))


def contrastive_loss(embeddings, labels=None, *, pos_margin=0.0, neg_margin=1.0, power=1,
                     distance="euclidean", normalize=True, ref_emb=None, ref_labels=None,
                     indices_tuple=None, reduction="mean", average="avg_nonzero", backend=None):
    """Max-margin contrastive loss of a batch (see the module docstring).

    embeddings (B, D) float; labels (B,) int (optional when indices_tuple is given);
    ref_emb (N, D) / ref_labels (N,): compare the anchors against this set instead of the
    batch (no self pairs then). indices_tuple: explicit pairs (a1, p, a2, n), triplets
    (a, p, n) or a miner selection. Returns a scalar (per-anchor (B,) for reduction="none").
    """
    module = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, power=power, distance=distance,
                             normalize=normalize, reduction=reduction, average=average, backend=backend)
    return module(embeddings, labels, indices_tuple, ref_emb, ref_labels)


# ---------------------------------------------------------------------------------------
# docstrings

_FORMULA = """
    For every positive pair (same label, not the anchor itself) and negative pair (other
    label) with distance d: relu(d − pos_margin) ** power and relu(neg_margin − d) ** power
    (for "dot"/"cosine" similarities s: relu(pos_margin − s), relu(s − neg_margin)). The
    positive and the negative terms are averaged separately and the two averages added.
"""
_NOTES = """
    Defaults: pos_margin 0, neg_margin 1 on L2-normalized embeddings (Euclidean distances in
    [0, 2]), power 1, averaged over the terms > 0 — the same numbers as
    pytorch-metric-learning's ContrastiveLoss(). power=2 with pos_margin=0 is the squared
    form of Hadsell, Chopra & LeCun (2006). normalize=False compares raw distances (then
    choose neg_margin on their scale).
"""
_ARGS = {
    "pos_margin": "(float, default 0.0): positive pairs closer than this cost nothing.",
    "neg_margin": "(float, default 1.0): negative pairs farther than this cost nothing.",
    "power": "(int, default 1): 1 or 2, the exponent of each hinge.",
    "distance": "(str, default \"euclidean\"): " + COMMON["distance"].split(": ", 1)[1],
    "normalize": "(bool or None, default True): L2-normalize the rows first (None: only for \"cosine\").",
}
_EXAMPLE = """
    >>> import torch, fastcontrast as fc
    >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> fc.ContrastiveLoss(neg_margin=0.8)(x, y).shape
    torch.Size([])
    >>> fc.contrastive_loss(x, y, reduction="none").shape
    torch.Size([8])
"""
_RETURNS = ("Tensor: a scalar, or each anchor's sum of positive and negative terms, shape (B,), with "
            "reduction=\"none\".")

ContrastiveLoss.__doc__ = doc(
    "Max-margin contrastive loss, as an nn.Module (all arguments keyword-only).", _FORMULA,
    {**_ARGS, "reduction": None, "average": None, "backend": None},
    _RETURNS + " forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None).",
    RAISES, _EXAMPLE, _NOTES)
contrastive_loss.__doc__ = doc(
    "Max-margin contrastive loss of one batch (the functional form of ContrastiveLoss).", _FORMULA,
    {"embeddings": None, "labels": "(Tensor (B,), integer, default None): class of each row; required "
                                   "unless indices_tuple is given.", **_ARGS,
     "ref_emb": None, "ref_labels": None, "indices_tuple": None, "reduction": None, "average": None,
     "backend": None},
    _RETURNS, RAISES, _EXAMPLE, _NOTES)
