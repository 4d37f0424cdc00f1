"""Triplet margin loss with mining: the autograd Function, the functional API and the Module.

Per triplet (anchor a, positive p, negative n), with d the distance (d = −s for the
similarity metrics "dot" and "cosine"):

    h = d_ap − d_an + margin,      term = relu(h)   (softplus(h) when smooth=True)

`mining` says which triplets count (see configs.TripletConfig for the exact rules):

    "batch_all"      every valid triplet
    "all" | "hard" | "semihard" | "easy"
                     pytorch-metric-learning's TripletMarginMiner filters on t = d_an − d_ap
                     with `miner_margin` (default: the loss margin): all t ≤ mm, hard t ≤ 0
                     and t ≤ mm, semihard 0 < t ≤ mm, easy t > mm
    "batch_hard"     per anchor the farthest positive and the nearest negative (Hermans et
                     al.); hard_fallback "drop" skips anchors lacking either (PML's
                     BatchHardMiner), "tfa" uses d_ap = 0 / the farthest reference instead
                     (TF Addons' triplet_hard_loss)
    "semihard_tfa"   per positive pair the nearest negative farther than the positive, else
                     the farthest negative (FaceNet / TF Addons' triplet_semihard_loss)

swap=True replaces d_an by min(d_an, d_pn) in the term (not in the mining filter).
Reduction: "mean" divides the sum of terms by the number of terms > 0 when
average="avg_nonzero" (pytorch-metric-learning's AvgNonZeroReducer, the default) or by the
number of terms when average="mean"; "sum"; "none" gives each anchor's sum of terms.

`indices_tuple` replaces mining by explicit triplets (a, p, n) or pairs (a1, p, a2, n)
(turned into triplets the way pytorch-metric-learning does: every positive pair with every
negative pair sharing its anchor), or takes a lazy `MinedTriplets` selection from the
compat miners, which is fused into the loss's own pass.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import torch
from torch import nn

from ._function import compiling, config_code, config_from, opaque_op, save_inputs, saved_inputs, with_references
from ._docs import COMMON, RAISES, doc
from ._reduce import LossTerms, index_counts, reduce_terms
from ._validation import (check_choice, check_embeddings, check_fits, check_labels, check_pair, check_query_ref,
                          check_real, check_reduction, full_precision, index_range_ok)
from .backend import BACKENDS, resolve_backend
from .configs import TripletConfig
from .metrics import (Metric, chunks, compute_dtype, matmul_precision, pairwise, prepare, resolve_metric,
                      row_distances)

MINING_MODES = ("batch_all", "all", "hard", "semihard", "easy", "batch_hard", "semihard_tfa")
HARD_FALLBACKS = ("drop", "tfa")
AVERAGES = ("avg_nonzero", "mean")
MINER_FILTERS = ("all", "hard", "semihard", "easy")

__all__ = ["MINING_MODES", "TripletFunction", "triplet_margin_loss", "TripletMarginLoss", "MinedTriplets"]


def _implementation(backend: str):
    """The implementation module of a resolved backend. The kernels (and so triton) are
    imported on first use; an import statement, unlike importlib, is something torch.compile
    traces, so the first call may happen inside a compiled region."""
    if backend == "triton":
        from .kernels import triplet as kernels_triplet
        return kernels_triplet
    from ._torch import triplet as torch_triplet
    return torch_triplet


def _torch_forward(q, r, q_labels, r_labels, cfg):
    values, counts, nonzero, _ = _implementation("torch").forward(
        *with_references(q, r, q_labels, r_labels), config_from(cfg, TripletConfig))
    return values, counts, nonzero


def _torch_forward_fake(q, r, q_labels, r_labels, cfg):
    b = q.shape[0]
    return (q.new_empty((b,), dtype=compute_dtype(q.dtype)), q.new_empty((b,), dtype=torch.int64),
            q.new_empty((b,), dtype=torch.int64))


def _torch_backward(grad_values, q, r, q_labels, r_labels, cfg):
    impl, inputs = _implementation("torch"), with_references(q, r, q_labels, r_labels)
    cfg = config_from(cfg, TripletConfig)
    # batch_hard's backward reads forward's selection; every other mode recomputes from the inputs
    saved = impl.forward(*inputs, cfg)[3] if cfg.mining == "batch_hard" else ()
    return impl.backward(grad_values, *inputs, cfg, saved)


def _torch_backward_fake(grad_values, q, r, q_labels, r_labels, cfg):
    return torch.empty_like(q), torch.empty_like(q if r is None else r)


# the PyTorch path as opaque ops, used while torch.compile traces (_function.py)
_SIGNATURE = "Tensor q, Tensor? r, Tensor q_labels, Tensor? r_labels, str cfg"
_torch_forward_op = opaque_op("torch_triplet_fwd", f"({_SIGNATURE}) -> (Tensor, Tensor, Tensor)",
                              _torch_forward, _torch_forward_fake)
_torch_backward_op = opaque_op("torch_triplet_bwd", f"(Tensor grad_values, {_SIGNATURE}) -> (Tensor, Tensor)",
                               _torch_backward, _torch_backward_fake)


class TripletFunction(torch.autograd.Function):
    """(q, r, q_labels, r_labels, cfg, backend, grad_expected, uniform_grad) → per-anchor
    (values, counts, nonzero); only `values` is differentiable. r = None (and r_labels = None)
    means the references are the anchors themselves: q's gradient is then the sum of both roles."""

    @staticmethod
    @full_precision
    def forward(ctx, q, r, q_labels, r_labels, cfg: TripletConfig, backend: str, grad_expected: bool = False,
                uniform_grad: bool = False):
        impl = _implementation(backend)
        inputs = (*with_references(q, r, q_labels, r_labels), cfg)
        ctx.opaque = backend == "torch" and compiling()
        if ctx.opaque:
            values, counts, nonzero = _torch_forward_op(q, r, q_labels, r_labels, config_code(cfg))
            saved = ()
        elif grad_expected and any(ctx.needs_input_grad[:2]) and (backend == "torch" or uniform_grad):
            # the unit gradients in the same pass (see the forwards): the PyTorch path checks in
            # backward that the incoming gradient is uniform; the Triton path, sync-free, takes
            # the caller's word (uniform_grad: the loss reduces the values with "mean" or "sum")
            values, counts, nonzero, saved = impl.forward(*inputs, unit_grad=True)
        else:
            values, counts, nonzero, saved = impl.forward(*inputs)
        ctx.cfg, ctx.backend = cfg, backend
        save_inputs(ctx, q, r, q_labels, r_labels, *saved)
        ctx.mark_non_differentiable(counts, nonzero)
        return values, counts, nonzero

    @staticmethod
    @full_precision
    def backward(ctx, grad_values, _grad_counts, _grad_nonzero):
        if ctx.opaque:
            q, r, q_labels, r_labels, *_ = ctx.saved_tensors
            grad_q, grad_r = _torch_backward_op(grad_values.contiguous(), q, r, q_labels, r_labels,
                                                config_code(ctx.cfg))
        else:
            q, r, q_labels, r_labels, saved = saved_inputs(ctx)
            grad_q, grad_r = _implementation(ctx.backend).backward(grad_values.contiguous(), q, r, q_labels,
                                                                   r_labels, ctx.cfg, saved)
        if ctx.same:
            grad_q, grad_r = grad_q + grad_r, None
        return grad_q, grad_r, None, None, None, None, None, None


# ----------------------------------------------------------------------------- explicit triplets

def _check_index(t, name: str, size: int, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"indices_tuple: {name} must be a torch.Tensor of indices, got {type(t).__name__}")
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"indices_tuple: {name} must be a 1-D integer tensor, got {t.dtype} of shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"indices_tuple: {name} is on {t.device} but embeddings are on {device}")
    if not index_range_ok(t, size):
        raise ValueError(f"indices_tuple: {name} has indices outside [0, {size})")


def explicit_triplets(indices_tuple, b: int, n: int, device):
    """Validate an explicit indices_tuple and return triplets (a, p, n) as int64 tensors.
    Pairs (a1, p, a2, n) become every (a1[i], p[i], n[j]) with a1[i] == a2[j]."""
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise TypeError("indices_tuple must be a tuple (anchors, positives, negatives) or "
                        "(anchors1, positives, anchors2, negatives) of index tensors")
    names = ("anchors", "positives", "negatives") if len(indices_tuple) == 3 else \
        ("anchors1", "positives", "anchors2", "negatives")
    sizes = (b, n, n) if len(indices_tuple) == 3 else (b, n, b, n)
    for t, name, size in zip(indices_tuple, names, sizes):
        _check_index(t, name, size, device)
    if len(indices_tuple) == 3:
        a, p, neg = (t.long() for t in indices_tuple)
        if not (a.shape == p.shape == neg.shape):
            raise ValueError("indices_tuple: anchors, positives and negatives must have the same length")
        return a, p, neg
    a1, p, a2, neg = (t.long() for t in indices_tuple)
    if a1.shape != p.shape or a2.shape != neg.shape:
        raise ValueError("indices_tuple: anchors1/positives and anchors2/negatives must have matching lengths")
    i, j = torch.where(a1[:, None] == a2[None, :])
    return a1[i], p[i], neg[j]


def check_term_bounds(term_bounds):
    """(low, high) as floats (None = unbounded), or None (no filter)."""
    if term_bounds is None:
        return None
    try:
        low, high = term_bounds
    except (TypeError, ValueError):
        raise TypeError("term_bounds must be a pair (low, high)") from None
    out = []
    for value, what, unbounded in ((low, "low", -math.inf), (high, "high", math.inf)):
        if value is None:
            value = unbounded
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            raise TypeError(f"term_bounds {what} must be a number or None, got {value!r}")
        out.append(float(value))
    return tuple(out)


def _explicit_terms(q, r, triplets, metric: Metric, margin, swap, smooth, term_bounds=None) -> LossTerms:
    a, p, n = triplets
    d_ap = row_distances(q[a], r[p], metric.kind)
    d_an = row_distances(q[a], r[n], metric.kind)
    if metric.is_similarity:
        d_ap, d_an = -d_ap, -d_an
    if swap:
        d_pn = row_distances(r[p], r[n], metric.kind)
        d_an = torch.minimum(d_an, -d_pn if metric.is_similarity else d_pn)
    h = d_ap - d_an + margin
    term = torch.nn.functional.softplus(h) if smooth else torch.relu(h)
    b = q.shape[0]
    if term_bounds is None:
        window = term.detach() > 0
    else:
        window = (term.detach() > term_bounds[0]) & (term.detach() < term_bounds[1])
        term = torch.where(window, term, term * 0)
    values = torch.zeros(b, dtype=term.dtype, device=q.device).index_add(0, a, term)
    counts, nonzero = index_counts(a, b), index_counts(a, b, window)
    return LossTerms(values, counts, nonzero)


# ----------------------------------------------------------------------------- lazy selections

class MinedTriplets:
    """A triplet selection that has not been enumerated.

    Made by the compat miners (fastcontrast.compat.pml.miners): it records the mining rule,
    its margin, the metric and the tensors it was asked about. A fastcontrast triplet loss
    given it as `indices_tuple` fuses it into its own pass (no triplet list is built) when it
    refers to the same tensors and metric; otherwise the loss materializes it.
    `materialize()` enumerates it as index tensors (a, p, n), anchor by anchor in increasing
    (a, p, n) order; iterating or unpacking does the same, so `a, p, n = miner(x, y)` works.
    """

    def __init__(self, mining: str, miner_margin: float, metric: Metric, embeddings, labels,
                 ref_emb=None, ref_labels=None, self_offset: int = 0, hard_fallback: str = "drop"):
        check_choice(mining, "mining", MINER_FILTERS + ("batch_hard",))
        self.mining, self.miner_margin, self.metric = mining, float(miner_margin), metric
        self.embeddings, self.labels = embeddings, labels
        self.ref_emb, self.ref_labels = ref_emb, ref_labels
        self.self_offset, self.hard_fallback = self_offset, hard_fallback
        self._materialized = None

    def config(self, margin=0.0, swap=False, smooth=False) -> TripletConfig:
        return TripletConfig(kind=self.metric.kind, negate=self.metric.is_similarity, mining=self.mining,
                             margin=float(margin), miner_margin=self.miner_margin, swap=swap, smooth=smooth,
                             hard_fallback=self.hard_fallback, self_offset=self.self_offset)

    @torch.no_grad()
    def materialize(self):
        if self._materialized is None:
            self._materialized = self._enumerate()
        return self._materialized

    def _enumerate(self):
        from ._torch import triplet as impl
        emb = self.embeddings.detach()
        cd = compute_dtype(emb.dtype)
        q = prepare(emb, self.metric).to(cd)
        r = q if self.ref_emb is None else prepare(self.ref_emb.detach(), self.metric).to(cd)
        q_labels = self.labels.long()
        r_labels = q_labels if self.ref_labels is None else self.ref_labels.long()
        cfg = self.config()
        b, n = q.shape[0], r.shape[0]
        parts = []
        if self.mining == "batch_hard":
            step = chunks(b, n, impl.CHUNK_BUDGET)
        else:
            step = chunks(b, n * n, impl.CHUNK_BUDGET)
        for rows in step:
            d = pairwise(q[rows], r, cfg.kind)
            d = -d if cfg.negate else d
            pos, neg = impl._masks(q_labels, r_labels, rows, cfg.self_offset)
            if self.mining == "batch_hard":
                _, p_idx, _, _, n_idx, _, valid = impl._batch_hard_select(d, pos, neg, cfg)
                anchors = torch.arange(rows.start, rows.stop, device=d.device)
                parts.append((anchors[valid], p_idx[valid], n_idx[valid]))
            else:
                cube = pos[:, :, None] & neg[:, None, :] & impl._kept(d[:, :, None], d[:, None, :], cfg)
                a, p, ng = cube.nonzero(as_tuple=True)
                parts.append((a + rows.start, p, ng))
        if not parts:
            empty = torch.zeros(0, dtype=torch.long, device=emb.device)
            return empty, empty.clone(), empty.clone()
        return tuple(torch.cat([part[k] for part in parts]) for k in range(3))

    def __iter__(self):
        return iter(self.materialize())

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.materialize()[i]

    def __repr__(self):
        return (f"MinedTriplets(mining={self.mining!r}, miner_margin={self.miner_margin}, "
                f"batch={self.embeddings.shape[0]}, materialized={self._materialized is not None})")


def _same_tensor(x, y) -> bool:
    if x is y:
        return True
    if x is None or y is None:
        return False
    return x.shape == y.shape and x.device == y.device and bool(torch.equal(x, y))


# ----------------------------------------------------------------------------- Module

class TripletMarginLoss(nn.Module):
    """Triplet margin loss with mining; see the module docstring for the options."""

    def __init__(self, *, margin: float = 0.05, mining: str = "all", miner_margin: float | None = None,
                 swap: bool = False, smooth: bool = False, hard_fallback: str = "drop",
                 distance: str = "euclidean", normalize: bool | None = True, reduction: str = "mean",
                 average: str = "avg_nonzero", backend: str | None = None):
        super().__init__()
        self.margin = check_real(margin, "margin")
        self.miner_margin = self.margin if miner_margin is None else check_real(miner_margin, "miner_margin")
        check_choice(mining, "mining", MINING_MODES)
        for value, name in ((swap, "swap"), (smooth, "smooth")):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
        check_choice(hard_fallback, "hard_fallback", HARD_FALLBACKS)
        self.metric = resolve_metric(distance, normalize)
        check_reduction(reduction)
        check_choice(average, "average", AVERAGES)
        if backend is not None:
            check_choice(backend, "backend", BACKENDS)
        self.mining, self.swap, self.smooth, self.hard_fallback = mining, swap, smooth, hard_fallback
        self.distance, self.reduction, self.average, self.backend = distance, reduction, average, backend
        self.normalize = normalize

    def extra_repr(self):
        return (f"margin={self.margin}, mining={self.mining!r}, miner_margin={self.miner_margin}, "
                f"swap={self.swap}, smooth={self.smooth}, hard_fallback={self.hard_fallback!r}, "
                f"distance={self.distance!r}, normalize={self.normalize!r}, reduction={self.reduction!r}, "
                f"average={self.average!r}, backend={self.backend!r}")

    def config(self, self_offset: int = 0, **override) -> TripletConfig:
        fields = dict(kind=self.metric.kind, negate=self.metric.is_similarity, mining=self.mining,
                      margin=self.margin, miner_margin=self.miner_margin, swap=self.swap, smooth=self.smooth,
                      hard_fallback=self.hard_fallback, self_offset=int(self_offset))
        fields.update(override)
        return TripletConfig(**fields)

    def _check_margins(self, dtype):
        check_fits(self.margin, "margin", dtype)
        check_fits(self.miner_margin, "miner_margin", dtype)

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset: int = 0,
              _config: TripletConfig | None = None, *, term_bounds=None, _uniform_grad: bool = False) -> LossTerms:
        """Per-anchor sums of terms, term counts and counts of terms > 0. Reference row
        i + self_offset is query row i's self pair (−1: none). term_bounds (low, high)
        (None: unbounded) keeps only the terms with low < term < high in the sums and in
        nonzero (pytorch-metric-learning's ThresholdReducer), inside the same pass.
        _uniform_grad (internal): the caller reduces the values with "mean" or "sum", so their
        gradient is one number for every anchor (lets the Triton path finish the gradient in
        the forward pass)."""
        check_query_ref(embeddings, labels, ref_emb, ref_labels)
        self._check_margins(embeddings.dtype)
        if isinstance(self_offset, bool) or not isinstance(self_offset, int) or self_offset < -1:
            raise ValueError(f"self_offset must be an int >= -1, got {self_offset!r}")
        cfg = _config if _config is not None else self.config(self_offset)
        cfg = dataclasses.replace(cfg, precision=matmul_precision(embeddings.dtype, embeddings.device))
        term_bounds = check_term_bounds(term_bounds)
        if term_bounds is not None:
            cfg = dataclasses.replace(cfg, term_keep=term_bounds)
        backend = resolve_backend(self.backend, embeddings.device, embeddings.dtype)
        q = prepare(embeddings, self.metric, backend)
        r = None if ref_emb is None else prepare(ref_emb, self.metric, backend)
        q_labels = labels.long()
        r_labels = None if ref_labels is None else ref_labels.long()
        values, counts, nonzero = TripletFunction.apply(q, r, q_labels, r_labels, cfg, backend,
                                                        torch.is_grad_enabled(), bool(_uniform_grad))
        return LossTerms(values, counts, nonzero)

    def reduce(self, terms: LossTerms, denominators=None):
        return reduce_terms(terms, self.reduction, "mean" if self.average == "mean" else "avg_nonzero", denominators)

    @full_precision
    def explicit_terms(self, embeddings, indices_tuple, ref_emb=None, labels=None, *, term_bounds=None) -> LossTerms:
        """Terms of exactly the given triplets (or pairs), by gathering their distances.
        `labels`, not needed by the terms, is checked like everywhere else when given;
        term_bounds as in terms()."""
        check_embeddings(embeddings, "embeddings")
        if labels is not None:
            check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
        self._check_margins(embeddings.dtype)
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb")
            check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
        n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        triplets = explicit_triplets(indices_tuple, embeddings.shape[0], n, embeddings.device)
        q = prepare(embeddings, self.metric)
        r = q if ref_emb is None else prepare(ref_emb, self.metric)
        return _explicit_terms(q, r, triplets, self.metric, self.margin, self.swap, self.smooth,
                               check_term_bounds(term_bounds))

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        # "mean" and "sum" give every anchor's value the same gradient (unless a subclass reduces)
        uniform = self.reduction != "none" and type(self).reduce is TripletMarginLoss.reduce
        return self.reduce(self._forward_terms(embeddings, labels, indices_tuple, ref_emb, ref_labels,
                                               uniform_grad=uniform))

    def _forward_terms(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, self_offset=None,
                       term_bounds=None, uniform_grad: bool = False):
        if self_offset is None:
            self_offset = 0 if ref_emb is None else -1
        if isinstance(indices_tuple, MinedTriplets):
            sel = indices_tuple
            if labels is None:
                labels = sel.labels
            if ref_emb is not None and ref_labels is None and sel.ref_emb is ref_emb:
                ref_labels = sel.ref_labels
            fusable = (sel.embeddings is embeddings and sel.metric == self.metric
                       and _same_tensor(sel.labels, labels) and sel.ref_emb is ref_emb
                       and _same_tensor(sel.ref_labels, ref_labels) and sel.self_offset == self_offset)
            if fusable:
                cfg = self.config(self_offset, mining=sel.mining, miner_margin=sel.miner_margin,
                                  hard_fallback=sel.hard_fallback)
                return self.terms(embeddings, labels, ref_emb, ref_labels, self_offset, _config=cfg,
                                  term_bounds=term_bounds, _uniform_grad=uniform_grad)
            indices_tuple = sel.materialize()
        if indices_tuple is not None:
            return self.explicit_terms(embeddings, indices_tuple, ref_emb, labels, term_bounds=term_bounds)
        if labels is None:
            raise ValueError("labels is required unless indices_tuple is given")
        return self.terms(embeddings, labels, ref_emb, ref_labels, self_offset, term_bounds=term_bounds,
                          _uniform_grad=uniform_grad)


def triplet_margin_loss(embeddings, labels=None, *, margin: float = 0.05, mining: str = "all",
                        miner_margin: float | None = None, swap: bool = False, smooth: bool = False,
                        hard_fallback: str = "drop", distance: str = "euclidean", normalize: bool | None = True,
                        ref_emb=None, ref_labels=None, indices_tuple=None, reduction: str = "mean",
                        average: str = "avg_nonzero", backend: str | None = None):
    """Triplet margin loss with mining (see the module docstring)."""
    module = TripletMarginLoss(margin=margin, mining=mining, miner_margin=miner_margin, swap=swap, smooth=smooth,
                               hard_fallback=hard_fallback, distance=distance, normalize=normalize,
                               reduction=reduction, average=average, backend=backend)
    return module(embeddings, labels, indices_tuple=indices_tuple, ref_emb=ref_emb, ref_labels=ref_labels)


# ----------------------------------------------------------------------------- docstrings

_TRIPLET_FORMULA = """
    Per triplet (anchor a, positive p, negative n), with d the distance (d = −s for "dot" and
    "cosine"): h = d_ap − d_an + margin and term = relu(h) (softplus(h) with smooth=True);
    the loss reduces the terms of the triplets `mining` selects.
"""
_TRIPLET_NOTES = """
    Defaults: margin 0.05 on L2-normalized embeddings (Euclidean distances in [0, 2]), every
    triplet, mean over the terms > 0 — the same numbers as pytorch-metric-learning's
    TripletMarginLoss() (whose LpDistance normalizes by default). Pass normalize=False for raw
    Euclidean distances, and then a margin on their scale.
"""
_TRIPLET_ARGS = {
    "margin": "(float, default 0.05): the margin added to d_ap − d_an.",
    "mining": "(str, default \"all\"): which triplets count: \"batch_all\" (every valid triplet); "
              "\"all\", \"hard\", \"semihard\", \"easy\" (pytorch-metric-learning's TripletMarginMiner "
              "filters on t = d_an − d_ap with miner_margin); \"batch_hard\" (per anchor the farthest "
              "positive and the nearest negative); \"semihard_tfa\" (FaceNet / TF Addons semi-hard).",
    "miner_margin": "(float or None, default None): the filters' margin; None means `margin`.",
    "swap": "(bool, default False): use min(d_an, d_pn) in the term (the distance swap).",
    "smooth": "(bool, default False): softplus(h) instead of relu(h).",
    "hard_fallback": "(str, default \"drop\"): batch_hard anchors lacking a positive or a negative: "
                     "\"drop\" skips them (PML's BatchHardMiner), \"tfa\" uses d_ap = 0 / the farthest "
                     "reference (TF Addons' triplet_hard_loss).",
    "distance": "(str, default \"euclidean\"): " + COMMON["distance"].split(": ", 1)[1],
    "normalize": "(bool or None, default True): L2-normalize the rows first (None: only for \"cosine\").",
}
_TRIPLET_EXAMPLE = """
    >>> import torch, fastcontrast as fc
    >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> loss = fc.TripletMarginLoss(margin=0.2, mining="semihard")
    >>> loss(x, y).shape
    torch.Size([])
    >>> fc.triplet_margin_loss(x, y, mining="batch_hard", reduction="none").shape
    torch.Size([8])
"""
_TRIPLET_RETURNS = ("Tensor: a scalar, or the per-anchor sums of terms, shape (B,), with "
                    "reduction=\"none\". The Module's forward(embeddings, labels=None, indices_tuple=None, "
                    "ref_emb=None, ref_labels=None) returns the same.")

TripletMarginLoss.__doc__ = doc(
    "Triplet margin loss with mining, as an nn.Module (all arguments keyword-only).", _TRIPLET_FORMULA,
    {**_TRIPLET_ARGS, "reduction": None, "average": None, "backend": None},
    _TRIPLET_RETURNS, RAISES, _TRIPLET_EXAMPLE, _TRIPLET_NOTES)
triplet_margin_loss.__doc__ = doc(
    "Triplet margin loss with mining of one batch (the functional form of TripletMarginLoss).",
    _TRIPLET_FORMULA,
    {"embeddings": None, "labels": "(Tensor (B,), integer, default None): class of each row; required "
                                   "unless indices_tuple is given.", **_TRIPLET_ARGS,
     "ref_emb": None, "ref_labels": None, "indices_tuple": None, "reduction": None, "average": None,
     "backend": None},
    _TRIPLET_RETURNS.split(" The Module")[0], RAISES, _TRIPLET_EXAMPLE, _TRIPLET_NOTES)
