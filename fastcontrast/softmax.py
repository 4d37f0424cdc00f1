"""Similarity-softmax losses: SupCon, NT-Xent, multi-class N-pair, InfoNCE/CLIP.

All four are one computation (fastcontrast/configs.py, SoftmaxConfig): logits l_ij = s_ij/τ
between anchors and references, masks from labels, and per anchor either

    "supcon"  v_i = LSE_{j≠i} l_ij − mean_{p∈P(i)} l_ip          (cross-entropy against the
              positives; N-pair and InfoNCE are this with one positive per anchor)
    "ntxent"  v_i = Σ_{p∈P(i)} softplus(LSE_{n∈Neg(i)} l_in − l_ip)
              (one term per positive pair; other positives stay out of the denominator)

`SoftmaxFunction` computes it with the Triton kernels or the chunked PyTorch path
(backend.resolve_backend), never keeping a B×N tensor between forward and backward.

How each loss reduces ("mean"):

    supcon_loss                  mean over anchors that have a positive
    nt_xent_loss(form="pair")    mean over positive pairs (pytorch-metric-learning NTXentLoss)
    nt_xent_loss(form="simclr")  mean over all anchors (the SimCLR paper; SupContrast with
                                 base_temperature = temperature)
    npair_loss                   mean over the selected pairs, + the L2 penalty (second part)
    info_nce_loss                mean over queries (symmetric: average of both directions)

labels=None (supcon, nt_xent): two views per sample, row i and row i + B/2 are a positive
pair (B must be even).

`indices_tuple` (pytorch-metric-learning pairs (a1, p, a2, n), triplets (a, p, n), or an
object with `.materialize()` returning one): the loss uses exactly those pairs. That path
is plain autograd on gathered rows: NT-Xent needs O(#pairs) memory, SupCon builds dense
B×N masks and logits (O(B·N) memory). NT-Xent counts repeated pairs as often as they occur;
SupCon treats the tuples as sets (as pytorch-metric-learning does).
"""
from __future__ import annotations

import torch
from torch import nn

from . import metrics
from ._function import compiling, config_code, config_from, opaque_op, save_inputs, saved_inputs, with_references
from ._docs import COMMON, RAISES, doc
from ._reduce import LossTerms, reduce_terms
from ._validation import (check_choice, check_disjoint_pairs, check_query_keys, check_embeddings, check_labels,
                          check_pair, check_positive, check_query_ref, check_real, check_reduction, full_precision,
                          index_range_ok)
from .backend import BACKENDS, resolve_backend
from ._torch import softmax as _torch_softmax
from ._torch.softmax import softplus
from .configs import SoftmaxConfig

__all__ = ["SoftmaxFunction", "supcon_loss", "nt_xent_loss", "npair_loss", "info_nce_loss",
           "SupConLoss", "NTXentLoss", "NPairLoss", "InfoNCELoss"]

NTXENT_FORMS = ("pair", "simclr")


def _implementation(backend: str, variant: str = ""):
    """The implementation module of a resolved backend. The kernels (and so triton) are
    imported on first use; an import statement, unlike importlib, is something torch.compile
    traces, so the first call may happen inside a compiled region. "lifted" on Triton: the
    softmax kernels' per-row LSE with kernels/lifted.py's pair pass (_lifted_triton)."""
    if backend == "triton" and variant == "lifted":
        from . import _lifted_triton
        return _lifted_triton
    if backend == "triton":
        from .kernels import softmax as kernels_softmax
        return kernels_softmax
    return _torch_softmax


def _torch_forward(q, r, q_labels, r_labels, temperature, cfg):
    values, n_pos, _ = _torch_softmax.forward(*with_references(q, r, q_labels, r_labels),
                                              config_from(cfg, SoftmaxConfig), temperature)
    return values, n_pos


def _torch_forward_fake(q, r, q_labels, r_labels, temperature, cfg):
    b = q.shape[0]
    cd = metrics.compute_dtype((q if r is None else r).dtype)
    return q.new_empty((b,), dtype=cd), q.new_empty((b,), dtype=torch.int64)


def _torch_backward(grad_values, q, r, q_labels, r_labels, temperature, cfg, needs_temperature_grad):
    grad_q, grad_r, grad_t = _torch_softmax.backward(
        grad_values, *with_references(q, r, q_labels, r_labels), config_from(cfg, SoftmaxConfig), temperature, (),
        needs_temperature_grad=needs_temperature_grad)
    return grad_q, grad_r, torch.zeros_like(temperature) if grad_t is None else grad_t


def _torch_backward_fake(grad_values, q, r, q_labels, r_labels, temperature, cfg, needs_temperature_grad):
    return torch.empty_like(q), torch.empty_like(q if r is None else r), torch.empty_like(temperature)


# the PyTorch path as opaque ops, used while torch.compile traces (_function.py)
_SIGNATURE = "Tensor q, Tensor? r, Tensor q_labels, Tensor? r_labels, Tensor temperature, str cfg"
_torch_forward_op = opaque_op("torch_softmax_fwd", f"({_SIGNATURE}) -> (Tensor, Tensor)",
                              _torch_forward, _torch_forward_fake)
_torch_backward_op = opaque_op("torch_softmax_bwd",
                               f"(Tensor grad_values, {_SIGNATURE}, bool needs_temperature_grad) -> "
                               "(Tensor, Tensor, Tensor)", _torch_backward, _torch_backward_fake)


class SoftmaxFunction(torch.autograd.Function):
    """(q, r, q_labels, r_labels, temperature, cfg, backend, symmetric=False, bias=None)
    -> (values (B,), n_pos (B,)), or with symmetric=True (values (B,), n_pos (B,),
    values_r (N,), n_pos_r (N,)): also the reverse direction, anchors r against references q.
    bias: the "sigmoid" variant's 0-dim logit bias (SigLIP), differentiable like temperature.
    bounds: (B, 2) per-anchor pair bounds with cfg.row_bounds (a fused miner selection; not
    differentiable).

    q, r already prepared (normalized when the metric says so); temperature a 0-dim tensor;
    backend "torch" or "triton" (already resolved). r = None means the references are the
    anchors themselves (both implementations then get r = q, and q's gradient is the sum of
    both roles); r_labels = None means the reference labels are q_labels. Never pass one
    tensor twice: torch.compile breaks the graph on an autograd.Function given a duplicate
    tensor input. symmetric=True needs an implementation with forward_symmetric /
    backward_symmetric (the kernels: one backward pass gives both directions' gradients)."""

    @staticmethod
    @full_precision
    def forward(ctx, q, r, q_labels, r_labels, temperature, cfg, backend, symmetric=False, bias=None,
                bounds=None):
        # while torch.compile traces, the PyTorch path runs as one opaque op (_function.py)
        ctx.opaque = backend == "torch" and not symmetric and bias is None and bounds is None and compiling()
        if ctx.opaque:
            outputs, saved = _torch_forward_op(q, r, q_labels, r_labels, temperature, config_code(cfg)), ()
        else:
            impl = _implementation(backend, cfg.variant)
            inputs = (*with_references(q, r, q_labels, r_labels), cfg, temperature)
            if bias is not None:  # the "sigmoid" variant's logit bias (SigLIP)
                *outputs, saved = impl.forward(*inputs, bias=bias)
            elif bounds is not None:  # a fused miner selection's per-anchor bounds
                *outputs, saved = impl.forward(*inputs, bounds=bounds)
            else:
                *outputs, saved = (impl.forward_symmetric if symmetric else impl.forward)(*inputs)
        ctx.cfg, ctx.backend, ctx.symmetric = cfg, backend, symmetric
        ctx.has_bias, ctx.has_bounds = bias is not None, bounds is not None
        if ctx.has_bias:
            saved = (bias, *saved)
        if ctx.has_bounds:
            saved = (bounds, *saved)
        save_inputs(ctx, q, r, q_labels, r_labels, temperature, *saved)
        ctx.mark_non_differentiable(*outputs[1::2])  # the n_pos counts
        return tuple(outputs)

    @staticmethod
    @full_precision
    def backward(ctx, grad_values, _grad_n_pos, *reverse_grads):
        needs = tuple(ctx.needs_input_grad) + (False,) * (10 - len(ctx.needs_input_grad))
        if ctx.opaque:
            q, r, q_labels, r_labels, temperature = ctx.saved_tensors
            grad_q, grad_r, grad_t = _torch_backward_op(grad_values.contiguous(), q, r, q_labels, r_labels,
                                                        temperature, config_code(ctx.cfg), bool(needs[4]))
            if ctx.same:
                grad_q, grad_r = grad_q + grad_r, None
            return (grad_q if needs[0] else None, grad_r if needs[1] else None, None, None,
                    grad_t if needs[4] else None, None, None, None, None, None)
        q, r, q_labels, r_labels, (temperature, *saved) = saved_inputs(ctx)
        impl = _implementation(ctx.backend, ctx.cfg.variant)
        grad_b = None
        if ctx.has_bounds:
            bounds, *saved = saved
            grad_q, grad_r, grad_t = impl.backward(
                grad_values.contiguous(), q, r, q_labels, r_labels, ctx.cfg, temperature, tuple(saved),
                needs_temperature_grad=bool(needs[4]), bounds=bounds)
        elif ctx.has_bias:
            bias, *saved = saved
            grad_q, grad_r, grad_t, grad_b = impl.backward(
                grad_values.contiguous(), q, r, q_labels, r_labels, ctx.cfg, temperature, tuple(saved),
                needs_temperature_grad=bool(needs[4]), bias=bias, needs_bias_grad=bool(needs[8]))
        elif ctx.symmetric:
            grad_q, grad_r, grad_t = impl.backward_symmetric(
                grad_values.contiguous(), reverse_grads[0].contiguous(), q, r, q_labels, r_labels, ctx.cfg,
                temperature, tuple(saved), needs_temperature_grad=bool(needs[4]))
        else:
            # constant references (a memory bank): the PyTorch path skips their gradient
            extra = {} if ctx.same or needs[1] or ctx.backend != "torch" else {"needs_reference_grad": False}
            grad_q, grad_r, grad_t = impl.backward(
                grad_values.contiguous(), q, r, q_labels, r_labels, ctx.cfg, temperature, tuple(saved),
                needs_temperature_grad=bool(needs[4]), **extra)
        if ctx.same:
            grad_q, grad_r = grad_q + grad_r, None
        return (grad_q if needs[0] else None, grad_r if needs[1] else None, None, None,
                grad_t if needs[4] else None, None, None, None, grad_b if needs[8] else None, None)


# ---------------------------------------------------------------------------------------
# shared pieces


def _check_temperature(temperature, dtype=None):
    check_positive(temperature, "temperature", allow_tensor=True, dtype=dtype)


def _temperature_from(temperature, logit_scale, default):
    """temperature, or 1 / logit_scale (CLIP's multiplier; a detached value here, for the
    checks: the Module divides by its logit_scale at each call), or the default."""
    if logit_scale is None:
        return default if temperature is None else temperature
    if temperature is not None:
        raise ValueError("give temperature or logit_scale, not both (temperature = 1 / logit_scale)")
    check_positive(logit_scale, "logit_scale", allow_tensor=True)
    if isinstance(logit_scale, torch.Tensor):
        return 1.0 / logit_scale.detach()
    return 1.0 / float(logit_scale)


def _temperature_tensor(temperature, like: torch.Tensor) -> torch.Tensor:
    """τ as a 0-dim tensor in like's compute dtype, checked against that dtype's range."""
    _check_temperature(temperature, like.dtype)
    cd = metrics.compute_dtype(like.dtype)
    if isinstance(temperature, torch.Tensor):
        t = temperature.reshape(())
        if not t.is_floating_point():
            t = t.to(cd)
        return t.to(like.device)
    return torch.full((), float(temperature), dtype=cd, device=like.device)  # a fill: no host-to-device copy


def _bias_tensor(bias, like: torch.Tensor) -> torch.Tensor:
    """A logit bias as a 0-dim tensor in like's compute dtype (a tensor keeps its graph)."""
    if isinstance(bias, torch.Tensor):
        b = bias.reshape(())
        if not b.is_floating_point():
            b = b.to(metrics.compute_dtype(like.dtype))
        return b.to(like.device)
    return torch.full((), float(bias), dtype=metrics.compute_dtype(like.dtype), device=like.device)


def _check_backend(backend):
    if backend is not None:
        check_choice(backend, "backend", BACKENDS)


def _check_indices_tuple(indices_tuple, b: int, n: int):
    """Materialize and check a PML-style tuple; returns (a1, p, a2, n) long tensors."""
    if hasattr(indices_tuple, "materialize") and callable(indices_tuple.materialize):
        indices_tuple = indices_tuple.materialize()
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise TypeError("indices_tuple must be (anchors, positives, negatives) or "
                        "(anchors1, positives, anchors2, negatives)")
    parts = []
    for k, t in enumerate(indices_tuple):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"indices_tuple[{k}] must be a 1-D integer tensor")
        parts.append(t.long())
    if len(parts) == 3:
        parts = [parts[0], parts[1], parts[0], parts[2]]
    a1, p, a2, neg = parts
    if a1.shape != p.shape or a2.shape != neg.shape:
        raise ValueError("indices_tuple: anchors and their positives/negatives must have equal lengths")
    for t, bound, what in ((a1, b, "anchor"), (a2, b, "anchor"), (p, n, "reference"), (neg, n, "reference")):
        if not index_range_ok(t, bound):
            raise ValueError(f"indices_tuple holds a {what} index outside [0, {bound})")
    return a1, p, a2, neg


def view_labels(b: int, device) -> torch.Tensor:
    """labels=None: two views per sample, rows i and i + b/2 share label i."""
    if b % 2:
        raise ValueError(f"labels=None pairs row i with row i + B/2, so embeddings needs an even "
                         f"number of rows; got {b}")
    return torch.arange(b, device=device) % (b // 2)


def different_label_counts(q_labels: torch.Tensor, r_labels: torch.Tensor) -> torch.Tensor:
    """For each anchor, how many references have another label (sort + binary search)."""
    ordered = r_labels.sort().values
    same = torch.searchsorted(ordered, q_labels, right=True) - torch.searchsorted(ordered, q_labels)
    return r_labels.shape[0] - same


def resolve(backend, embeddings: torch.Tensor) -> str:
    """The backend ("torch" | "triton") that computes a loss of `embeddings` (float64 never
    reaches the kernels: backend.resolve_backend), decided before any computation."""
    return resolve_backend(backend, embeddings.device, embeddings.dtype)


def softmax_values(q, r, q_labels, r_labels, *, kind, variant, self_offset, temperature, backend,
                   precision=None, symmetric=False, positive_offset=-1, bias=None, all_negative=False,
                   bounds=None, **options):
    """Run SoftmaxFunction on prepared inputs. r may be q and r_labels may be q_labels (the
    batch is its own reference set): the Function then gets None for them. symmetric=True
    (Triton backend only): (values, n_pos, values_r, n_pos_r), both directions at once.
    positive_offset ≥ 0: the labels make reference i + positive_offset the only positive of
    query i (SoftmaxConfig.positive_offset). `options`: the pair-weighted variants' scales and
    shifts (SoftmaxConfig), and with row_bounds=True their bound_slack and `bounds` (B, 2), a
    fused miner selection (SoftmaxConfig.row_bounds)."""
    if precision is None:
        precision = metrics.matmul_precision(q.dtype, q.device)
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=int(self_offset), precision=precision,
                        positive_offset=int(positive_offset), all_negative=bool(all_negative), **options)
    resolved = resolve(backend, q)
    if q.shape[0] == 0 or r.shape[0] == 0:
        resolved = "torch"  # nothing to launch a kernel for
    t = _temperature_tensor(temperature, q)
    same, same_labels = r is q, r_labels is q_labels
    if bias is not None:
        bias = _bias_tensor(bias, q)
    return SoftmaxFunction.apply(q, None if same else r, q_labels.long(),
                                 None if same_labels else r_labels.long(), t, cfg, resolved, symmetric, bias,
                                 bounds)


def _prepared(embeddings, ref_emb, metric, backend="torch"):
    q = metrics.prepare(embeddings, metric, backend)
    return q, (q if ref_emb is None else metrics.prepare(ref_emb, metric, backend))


def _pair_logits(x, y, kind, temperature):
    """Row-wise logits s(x_k, y_k)/τ with plain autograd (metrics.row_distances)."""
    d = metrics.row_distances(x, y, kind)
    return (d if kind == "dot" else -d) / _temperature_tensor(temperature, d)


def _dense_logits(q, r, kind, temperature):
    """Dense B×N logits with plain autograd; the indices_tuple path."""
    d = metrics.pairwise_differentiable(q, r, kind)
    return (d if kind == "dot" else -d) / _temperature_tensor(temperature, d)


# ---------------------------------------------------------------------------------------
# Modules


class _SoftmaxLoss(nn.Module):
    """Shared options and the terms()/reduce() protocol of the family."""

    average = "mean"

    def __init__(self, *, temperature, distance, normalize, reduction, backend):
        super().__init__()
        _check_temperature(temperature)
        check_reduction(reduction)
        _check_backend(backend)
        self.metric = metrics.resolve_metric(distance, normalize)
        self.temperature = temperature
        self.distance = distance
        self.normalize = normalize
        self.reduction = reduction
        self.backend = backend

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        return reduce_terms(terms, self.reduction, self.average, denominators)

    def _settings(self) -> dict:
        """Every constructor argument and its value, in signature order (extra_repr)."""
        return {"temperature": self.temperature, "distance": self.distance, "normalize": self.normalize,
                "reduction": self.reduction, "backend": self.backend}

    def extra_repr(self) -> str:
        def show(v):
            if isinstance(v, torch.Tensor):
                return f"tensor({v.detach().float().item():g})" if v.numel() == 1 else "tensor"
            return repr(v)
        return ", ".join(f"{k}={show(v)}" for k, v in self._settings().items())

    def _check_tensors(self, embeddings, labels, ref_emb, ref_labels, labels_needed=True):
        check_embeddings(embeddings, "embeddings")
        if labels is not None:
            check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
        if ref_emb is not None or ref_labels is not None:
            if labels is None and (labels_needed or ref_labels is not None):
                raise ValueError("labels are required when ref_emb is given")
            if labels is None:  # explicit pairs: the reference labels are not used
                check_embeddings(ref_emb, "ref_emb")
                check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
            else:
                check_query_ref(embeddings, labels, ref_emb, ref_labels)

    def _softmax(self, embeddings, labels, ref_emb, ref_labels, self_offset, variant):
        backend = resolve(self.backend, embeddings)
        q, r = _prepared(embeddings, ref_emb, self.metric, backend)
        if ref_emb is None:
            ref_labels = labels
        return softmax_values(q, r, labels, ref_labels, kind=self.metric.kind, variant=variant,
                              self_offset=self_offset, temperature=self.temperature, backend=backend)

    def _default_labels(self, embeddings, labels, indices_tuple, ref_emb):
        if labels is None and indices_tuple is None:
            if ref_emb is not None:
                raise ValueError("labels are required when ref_emb is given")
            return view_labels(embeddings.shape[0], embeddings.device)
        return labels

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self._check_tensors(embeddings, labels, ref_emb, ref_labels, labels_needed=indices_tuple is None)
        labels = self._default_labels(embeddings, labels, indices_tuple, ref_emb)
        if indices_tuple is not None:
            n = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
            tuples = _check_indices_tuple(indices_tuple, embeddings.shape[0], n)
            return self.reduce(self.tuple_terms(embeddings, tuples, ref_emb))
        self_offset = 0 if ref_emb is None else -1
        return self.reduce(self.terms(embeddings, labels, ref_emb, ref_labels, self_offset=self_offset))

    @full_precision
    def tuple_terms(self, embeddings, tuples, ref_emb):
        raise ValueError(f"{type(self).__name__} does not take indices_tuple")


def _supcon_tuple_terms(module, embeddings, tuples, ref_emb):
    """SupCon on explicit pairs: dense B×N masks (sets) and logits."""
    a1, p, a2, n = tuples
    q, r = _prepared(embeddings, ref_emb, module.metric)
    logits = _dense_logits(q, r, module.metric.kind, module.temperature)
    pos = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    check_disjoint_pairs(pos, neg)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    lse = logits.masked_fill(~(pos | neg), float("-inf")).logsumexp(1)
    count = pos.sum(1)
    has_pos = count > 0
    lse = torch.where(has_pos, lse, zero)
    values = torch.where(has_pos, lse - torch.where(pos, logits, zero).sum(1) / count.clamp_min(1), zero)
    return LossTerms(values, has_pos.long(), (has_pos & (values.detach() > 0)).long())


class SupConLoss(_SoftmaxLoss):
    """Supervised contrastive loss (Khosla et al.): per anchor with positives,
    LSE_{j≠i} s_ij/τ − mean_{p} s_ip/τ; "mean" averages over anchors that have a positive.
    labels=None: two views per sample (rows i and i + B/2)."""

    def __init__(self, *, temperature=0.1, distance="cosine", normalize=None, reduction="mean",
                 backend=None):
        super().__init__(temperature=temperature, distance=distance, normalize=normalize,
                         reduction=reduction, backend=backend)

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=0) -> LossTerms:
        values, n_pos = self._softmax(embeddings, labels, ref_emb, ref_labels, self_offset, "supcon")
        has_pos = n_pos > 0
        return LossTerms(values, has_pos.long(), (has_pos & (values.detach() > 0)).long())

    @full_precision
    def tuple_terms(self, embeddings, tuples, ref_emb):
        return _supcon_tuple_terms(self, embeddings, tuples, ref_emb)


class NTXentLoss(_SoftmaxLoss):
    """NT-Xent. form="pair" (pytorch-metric-learning): one term per positive pair,
    −log(e^{l_ap} / (e^{l_ap} + Σ_{n∈Neg(a)} e^{l_an})), mean over positive pairs.
    form="simclr" (the SimCLR paper): per anchor −log(e^{l_ap} / Σ_{k≠a} e^{l_ak}), mean
    over all anchors. labels=None: two views per sample (rows i and i + B/2)."""

    def __init__(self, *, temperature=0.07, form="pair", distance="cosine", normalize=None,
                 reduction="mean", backend=None):
        check_choice(form, "form", NTXENT_FORMS)
        super().__init__(temperature=temperature, distance=distance, normalize=normalize,
                         reduction=reduction, backend=backend)
        self.form = form

    def _settings(self) -> dict:
        settings = super()._settings()
        return {"temperature": settings.pop("temperature"), "form": self.form, **settings}

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=0) -> LossTerms:
        if self.form == "simclr":
            values, n_pos = self._softmax(embeddings, labels, ref_emb, ref_labels, self_offset, "supcon")
            ones = torch.ones_like(n_pos)
            return LossTerms(values, ones, (values.detach() > 0).long())
        values, n_pos = self._softmax(embeddings, labels, ref_emb, ref_labels, self_offset, "ntxent")
        refs = labels if ref_labels is None else ref_labels
        has_neg = different_label_counts(labels, refs) > 0
        return LossTerms(values, n_pos, n_pos * has_neg)

    @full_precision
    def tuple_terms(self, embeddings, tuples, ref_emb):
        if self.form == "simclr":
            raise ValueError("indices_tuple is not supported with form='simclr'")
        a1, p, a2, n = tuples
        q, r = _prepared(embeddings, ref_emb, self.metric)
        kind, t = self.metric.kind, self.temperature
        pos_logits = _pair_logits(q[a1], r[p], kind, t)
        neg_logits = _pair_logits(q[a2], r[n], kind, t)
        b = q.shape[0]
        # per-anchor LSE over its negative entries, by scatter (repeated entries count)
        row_max = torch.full((b,), float("-inf"), dtype=neg_logits.dtype, device=q.device)
        row_max = row_max.scatter_reduce(0, a2, neg_logits.detach(), "amax")
        has_neg = torch.isfinite(row_max)
        row_max = torch.where(has_neg, row_max, torch.zeros_like(row_max))
        total = torch.zeros(b, dtype=neg_logits.dtype, device=q.device).index_add(
            0, a2, torch.exp(neg_logits - row_max[a2]))
        lse = row_max + torch.where(has_neg, total, torch.ones_like(total)).log()
        on = has_neg[a1]
        values = torch.where(on, softplus(lse[a1] - pos_logits), torch.zeros_like(pos_logits))
        # per anchor, like every other path: the sum of its pairs' terms and how many there were
        per_anchor = torch.zeros(b, dtype=values.dtype, device=q.device).index_add(0, a1, values)
        counts = torch.zeros(b, dtype=torch.int64, device=q.device).index_add(0, a1, torch.ones_like(a1))
        nonzero = torch.zeros(b, dtype=torch.int64, device=q.device).index_add(0, a1, on.long())
        return LossTerms(per_anchor, counts, nonzero)


def _second_of_label(labels: torch.Tensor):
    """(stable sort order of labels, mask of the sorted positions that hold the second row of
    their label)."""
    order = torch.sort(labels, stable=True).indices
    ordered = labels[order]
    second = torch.zeros_like(ordered, dtype=torch.bool)
    second[1:] = ordered[1:] == ordered[:-1]
    second[2:] &= ordered[2:] != ordered[:-2]
    return order, second


def npair_indices(labels: torch.Tensor, pairs=None):
    """One positive pair per label, as pytorch-metric-learning's NPairsLoss picks it: among the
    candidate pairs (all same-label pairs in row-major order, or `pairs` = (a, p) as given),
    the first one whose anchor has that label. Returns (anchors, positives) ordered by label."""
    if pairs is None:
        # all pairs in row-major order: a label's first pair is (its lowest row, its second-lowest)
        order, second = _second_of_label(labels)
        at = second.nonzero().squeeze(1)
        return order[at - 1], order[at]
    a, p = pairs
    lab = labels[a]
    order = torch.sort(lab, stable=True).indices
    ordered = lab[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    keep = order[first]
    return a[keep], p[keep]


def npair_slots(labels: torch.Tensor):
    """npair_indices(labels) in a layout of fixed size, max(B // 2, 1) slots (at most B // 2
    labels have two rows): (anchors, positives, valid), the valid slots first and in
    npair_indices' order, the others pointing at row 0. Sized by the shape alone: no host
    sync (the Triton path masks the absent slots out)."""
    order, second = _second_of_label(labels)
    b = labels.shape[0]
    k = max(b // 2, 1)
    slot = torch.where(second, torch.cumsum(second, 0) - 1, k)  # a label's slot; k: a spare one
    at = torch.zeros(k + 1, dtype=torch.int64, device=labels.device).scatter_(
        0, slot, torch.arange(b, device=labels.device))[:k]
    valid = torch.arange(k, device=labels.device) < second.sum()
    return order[(at - 1).clamp_min(0)], order[at], valid


class NPairLoss(_SoftmaxLoss):
    """Multi-class N-pair loss (Sohn 2016): one (anchor, positive) pair per label; row i of
    sim(anchors, positives) is a softmax cross-entropy with target i. l2_reg adds
    0.25·l2_reg·(‖f_a‖² + ‖f_p‖²) per pair, averaged (a second LossTerms part)."""

    def __init__(self, *, l2_reg=0.0, distance="dot", normalize=True, reduction="mean", backend=None):
        super().__init__(temperature=1.0, distance=distance, normalize=normalize,
                         reduction=reduction, backend=backend)
        self.l2_reg = check_real(l2_reg, "l2_reg", nonnegative=True)

    def _settings(self) -> dict:
        settings = super()._settings()
        del settings["temperature"]  # fixed at 1
        return {"l2_reg": self.l2_reg, **settings}

    def _check_tensors(self, embeddings, labels, ref_emb, ref_labels, labels_needed=True):
        if ref_emb is not None or ref_labels is not None:
            raise ValueError("ref_emb is not supported by the N-pair loss")
        check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise ValueError("labels are required by the N-pair loss")
        check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)

    def _default_labels(self, embeddings, labels, indices_tuple, ref_emb):
        return labels

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self._check_tensors(embeddings, labels, ref_emb, ref_labels)
        pairs = None
        if indices_tuple is not None:
            a1, p, _, _ = _check_indices_tuple(indices_tuple, embeddings.shape[0], embeddings.shape[0])
            pairs = (a1, p)
        return self.reduce(self._pair_terms(embeddings, labels, pairs))

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=0) -> LossTerms:
        self._check_tensors(embeddings, labels, ref_emb, ref_labels)
        return self._pair_terms(embeddings, labels, None)

    def distributed_mode(self) -> str:
        """How fastcontrast.distributed.GlobalBatchLoss shares this loss: "global_pairs" (the
        pairs are picked from the global batch, each rank computes a slice of their rows
        with global_terms)."""
        return "global_pairs"

    def global_terms(self, all_embeddings, all_labels, rank: int, world: int) -> LossTerms:
        """Rank `rank`'s share of the global batch's terms: the same pairs every rank picks
        from all_embeddings / all_labels (every rank's rows), and of them the rows
        [K·rank/world, K·(rank+1)/world) against all K positives."""
        anchors, positives = npair_indices(all_labels)
        k = anchors.shape[0]
        part = slice(k * rank // world, k * (rank + 1) // world)
        return self._pair_terms(all_embeddings, all_labels, None, part=part, selected=(anchors, positives))

    def _padded_pair_terms(self, embeddings, labels):
        """The terms of _pair_terms(…, pairs=None) with shapes fixed by the batch, for
        torch.compile (the number of labels with a pair depends on the labels' values): one
        slot per row of the label-sorted batch, slots without a pair masked out (value, count
        and nonzero 0). Plain autograd on the dense slots × slots logits."""
        order, valid = _second_of_label(labels)
        positives = order
        anchors = order[(torch.arange(order.shape[0], device=order.device) - 1).clamp_min(0)]
        backend = resolve(self.backend, embeddings)
        qa = metrics.prepare(embeddings[anchors], self.metric, backend)
        qp = metrics.prepare(embeddings[positives], self.metric, backend)
        logits = _dense_logits(qa, qp, self.metric.kind, 1.0)
        logits = logits.masked_fill(~valid[None, :], torch.finfo(logits.dtype).min)
        values = torch.logsumexp(logits, 1) - logits.diagonal()
        values = torch.where(valid, values, torch.zeros_like(values))
        return self._terms_with_penalty(values, valid, embeddings, anchors, positives)

    def _terms_with_penalty(self, values, valid, embeddings, anchors, positives):
        """LossTerms of the pairs' values (0 on invalid slots), with Sohn's L2 penalty on the
        raw anchor and positive rows as a second column when l2_reg > 0."""
        ones = valid.long()
        nonzero = (values.detach() > 0).long()
        if self.l2_reg == 0:
            return LossTerms(values, ones, nonzero)
        fa = embeddings[anchors].to(values.dtype)
        fp = embeddings[positives].to(values.dtype)
        penalty = 0.25 * self.l2_reg * ((fa * fa).sum(1) + (fp * fp).sum(1))
        penalty = torch.where(valid, penalty, torch.zeros_like(penalty))
        return LossTerms(torch.stack([values, penalty], 1), torch.stack([ones, ones], 1),
                         torch.stack([nonzero, (penalty.detach() > 0).long()], 1))

    def _slot_terms(self, embeddings, labels, backend):
        """The terms of _pair_terms(…, pairs=None) on the Triton path, with no host sync: one
        slot per possible pair (npair_slots), the absent ones a masked-out kernel column
        (SoftmaxConfig.masked_refs) and a row without a positive (value, count and nonzero 0)."""
        anchors, positives, valid = npair_slots(labels)
        zero = torch.zeros((), dtype=embeddings.dtype, device=embeddings.device)
        # absent slots as zero rows: no part in the kernels' frame scale either
        qa, qp = (torch.where(valid[:, None], metrics.prepare(embeddings[rows], self.metric, backend), zero)
                  for rows in (anchors, positives))
        ids = torch.arange(valid.shape[0], device=embeddings.device)
        values, _ = softmax_values(qa, qp, ids, torch.where(valid, ids, -1), kind=self.metric.kind,
                                   variant="supcon", self_offset=-1, temperature=1.0, backend=backend,
                                   masked_refs=True)
        return self._terms_with_penalty(values, valid, embeddings, anchors, positives)

    def _pair_terms(self, embeddings, labels, pairs, part: slice | None = None, selected=None):
        if pairs is None and selected is None and part is None:
            if compiling():
                return self._padded_pair_terms(embeddings, labels)
            backend = resolve(self.backend, embeddings)
            # reduction="none" returns one value per selected pair: a shape set by the labels
            if backend == "triton" and self.reduction != "none":
                return self._slot_terms(embeddings, labels, backend)
        if selected is not None:
            anchors, positives = selected
        else:
            anchors, positives = (npair_indices(labels) if pairs is None
                                  else npair_indices(labels, pairs))
        k = anchors.shape[0]
        part = slice(0, k) if part is None else part
        anchors = anchors[part]
        backend = resolve(self.backend, embeddings)
        # the selected rows only (normalization is row-wise): a few pairs out of a large batch
        qa = metrics.prepare(embeddings[anchors], self.metric, backend)
        qp = metrics.prepare(embeddings[positives], self.metric, backend)
        ids = torch.arange(k, device=embeddings.device)
        values, _ = softmax_values(qa, qp, ids[part], ids, kind=self.metric.kind,
                                   variant="supcon", self_offset=-1, temperature=1.0, backend=backend,
                                   positive_offset=part.start)
        ones = torch.ones_like(ids[part])
        nonzero = (values.detach() > 0).long()
        if self.l2_reg == 0:
            return LossTerms(values, ones, nonzero)
        fa = embeddings[anchors].to(values.dtype)
        fp = embeddings[positives[part]].to(values.dtype)
        penalty = 0.25 * self.l2_reg * ((fa * fa).sum(1) + (fp * fp).sum(1))
        return LossTerms(torch.stack([values, penalty], 1), torch.stack([ones, ones], 1),
                         torch.stack([nonzero, (penalty.detach() > 0).long()], 1))


class InfoNCELoss(_SoftmaxLoss):
    """InfoNCE / CLIP: query i's positive is key i, every other key is a negative (keys may
    outnumber queries: extra keys are negatives only). symmetric=True averages the
    query→key and key→query directions (needs as many keys as queries).

    forward(query, keys, labels=None, ref_labels=None): optional labels make every key with
    the query's label a positive. terms(query, labels, keys, key_labels, self_offset): with
    labels None, query i's positive is key i + max(self_offset, 0).

    temperature divides the similarities (default 0.07 when neither is given); logit_scale,
    CLIP's multiplier, is the alternative: logits = logit_scale · s, the same as temperature
    = 1 / logit_scale. Give one or the other. Either may be a tensor that requires grad; a
    tensor logit_scale is read at every call, so a learnable Parameter stays in the graph."""

    def __init__(self, *, temperature=None, logit_scale=None, symmetric=False, distance="cosine",
                 normalize=None, reduction="mean", backend=None):
        temperature = _temperature_from(temperature, logit_scale, default=0.07)
        super().__init__(temperature=temperature, distance=distance, normalize=normalize,
                         reduction=reduction, backend=backend)
        self.logit_scale = logit_scale
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be True or False, got {type(symmetric).__name__}")
        self.symmetric = symmetric

    def _settings(self) -> dict:
        settings = super()._settings()
        if self.logit_scale is not None:
            settings["temperature"] = None
        return {"temperature": settings.pop("temperature"), "logit_scale": self.logit_scale,
                "symmetric": self.symmetric, **settings}

    def _check(self, query, keys, labels, ref_labels):
        check_query_keys(query, keys, labels, ref_labels)
        if self.symmetric and keys.shape[0] != query.shape[0]:
            raise ValueError("symmetric=True needs as many keys as queries, got "
                             f"{keys.shape[0]} keys and {query.shape[0]} queries")

    @full_precision
    def forward(self, query, keys, labels=None, ref_labels=None):
        self._check(query, keys, labels, ref_labels)
        return self.reduce(self.terms(query, labels, keys, ref_labels, self_offset=-1))

    def distributed_mode(self) -> str:
        """How fastcontrast.distributed.GlobalBatchLoss shares this loss: "paired" (called as
        (query, keys); each rank's queries against every rank's keys, `terms`) or, when
        symmetric, "paired_symmetric" (each rank also its keys against every rank's queries,
        `symmetric_terms`)."""
        return "paired_symmetric" if self.symmetric else "paired"

    @full_precision
    def symmetric_terms(self, query, keys, labels, ref_labels, all_query, all_keys, all_labels, all_ref_labels,
                        offset: int) -> LossTerms:
        """One rank's share of the symmetric loss of the global batch: its B_r queries against
        all keys (rows) and its B_r keys against all queries (columns), each half-weighted.
        labels None: global query i's positive is global key i (offset: this rank's first
        global row, the same for queries and keys)."""
        if query.shape[0] != keys.shape[0]:
            raise ValueError("symmetric=True needs as many keys as queries on every rank, got "
                             f"{keys.shape[0]} keys and {query.shape[0]} queries")
        backend = resolve(self.backend, query)
        q, k = (metrics.prepare(x, self.metric, backend) for x in (query, keys))
        aq, ak = (metrics.prepare(x, self.metric, backend) for x in (all_query, all_keys))
        temperature = self.temperature if self.logit_scale is None else 1.0 / self.logit_scale
        kw = dict(kind=self.metric.kind, variant="supcon", self_offset=-1, temperature=temperature,
                  backend=backend)
        if labels is None:
            local = torch.arange(q.shape[0], device=q.device) + offset
            rows, _ = softmax_values(q, ak, local, torch.arange(ak.shape[0], device=q.device),
                                     positive_offset=offset, **kw)
            cols, _ = softmax_values(k, aq, local.clone(), torch.arange(aq.shape[0], device=q.device),
                                     positive_offset=offset, **kw)
        else:
            rows, _ = softmax_values(q, ak, labels, all_ref_labels, **kw)
            cols, _ = softmax_values(k, aq, ref_labels, all_labels, **kw)
        both = torch.stack([0.5 * rows, 0.5 * cols], 1)
        ones = torch.ones(both.shape, dtype=torch.int64, device=both.device)
        return LossTerms(both, ones, (both.detach() > 0).long())

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=-1) -> LossTerms:
        keys = embeddings if ref_emb is None else ref_emb
        shift = -1  # query i's positive is key i + shift (labels None), or by labels (-1)
        if labels is None:
            shift = max(int(self_offset), 0)
            labels = torch.arange(embeddings.shape[0], device=embeddings.device) + shift
            ref_labels = torch.arange(keys.shape[0], device=keys.device)
        backend = resolve(self.backend, embeddings)
        q, r = _prepared(embeddings, ref_emb, self.metric, backend)  # r is q without ref_emb
        temperature = self.temperature if self.logit_scale is None else 1.0 / self.logit_scale
        kw = dict(kind=self.metric.kind, variant="supcon", self_offset=-1,
                  temperature=temperature, backend=backend)
        if not self.symmetric:
            values, n_pos = softmax_values(q, r, labels, ref_labels, positive_offset=shift, **kw)
            return LossTerms(values, torch.ones_like(n_pos), (values.detach() > 0).long())
        if backend == "triton" and q.shape[0] > 0:
            # both directions at once: one pass of the backward kernels for every gradient
            values, n_pos, back, _ = softmax_values(q, r, labels, ref_labels, symmetric=True, **kw)
        else:
            values, n_pos = softmax_values(q, r, labels, ref_labels, positive_offset=shift, **kw)
            # key j's positive is query j − shift: positional only without a shift
            back, _ = softmax_values(r, q, ref_labels, labels, positive_offset=0 if shift == 0 else -1, **kw)
        ones = torch.ones_like(n_pos)
        both = torch.stack([0.5 * values, 0.5 * back], 1)
        return LossTerms(both, torch.stack([ones, ones], 1), (both.detach() > 0).long())


# ---------------------------------------------------------------------------------------
# functional API: module.reduce(module.terms(...))


def supcon_loss(embeddings, labels=None, *, temperature=0.1, distance="cosine", normalize=None,
                ref_emb=None, ref_labels=None, indices_tuple=None, reduction="mean", backend=None):
    """Supervised contrastive loss; see SupConLoss."""
    loss = SupConLoss(temperature=temperature, distance=distance, normalize=normalize, reduction=reduction,
                      backend=backend)
    return loss(embeddings, labels, indices_tuple=indices_tuple, ref_emb=ref_emb, ref_labels=ref_labels)


def nt_xent_loss(embeddings, labels=None, *, temperature=0.07, form="pair", distance="cosine",
                 normalize=None, ref_emb=None, ref_labels=None, indices_tuple=None, reduction="mean",
                 backend=None):
    """NT-Xent; see NTXentLoss."""
    loss = NTXentLoss(temperature=temperature, form=form, distance=distance, normalize=normalize,
                      reduction=reduction, backend=backend)
    return loss(embeddings, labels, indices_tuple=indices_tuple, ref_emb=ref_emb, ref_labels=ref_labels)


def npair_loss(embeddings, labels, *, l2_reg=0.0, distance="dot", normalize=True, indices_tuple=None,
               reduction="mean", backend=None):
    """Multi-class N-pair loss; see NPairLoss."""
    loss = NPairLoss(l2_reg=l2_reg, distance=distance, normalize=normalize, reduction=reduction,
                     backend=backend)
    return loss(embeddings, labels, indices_tuple=indices_tuple)


def info_nce_loss(query, keys, *, temperature=None, logit_scale=None, symmetric=False, distance="cosine",
                  normalize=None, reduction="mean", backend=None):
    """InfoNCE / CLIP loss; see InfoNCELoss. temperature (default 0.07) or logit_scale (CLIP's
    multiplier, = 1 / temperature), not both."""
    loss = InfoNCELoss(temperature=temperature, logit_scale=logit_scale, symmetric=symmetric, distance=distance,
                       normalize=normalize, reduction=reduction, backend=backend)
    return loss(query, keys)


# ---------------------------------------------------------------------------------------
# docstrings

_SM = {
    "temperature": "(float or Tensor, default {t}): τ, the logits are s/τ; a tensor that requires grad "
                   "is learned.",
    "distance": "(str, default \"{d}\"): " + COMMON["distance"].split(": ", 1)[1],
    "normalize": "(bool or None, default {n}): L2-normalize the rows first (None: only for \"cosine\").",
}


def _sm(**values):
    return {name: _SM[name].format(**values) for name in _SM}


_VIEWS = "(Tensor (B,), integer, default None): class of each row; None means two views per sample " \
         "(row i and row i + B/2 are a positive pair, B even)."
_MODULE_RETURNS = ("Tensor: a scalar, or per-anchor values, shape (B,), with reduction=\"none\". "
                   "forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None).")
_RETURNS = "Tensor: a scalar, or per-anchor values, shape (B,), with reduction=\"none\"."

_SUPCON = ("Supervised contrastive loss (Khosla et al. 2020)", """
    With logits l_ij = s_ij/τ (s the similarity, −d for a distance), per anchor i with
    positives P(i): v_i = LSE_{j≠i} l_ij − mean_{p∈P(i)} l_ip; "mean" averages over the anchors
    that have a positive.
""", """
    Defaults: τ = 0.1, cosine similarity — pytorch-metric-learning's SupConLoss().
""", """
    >>> import torch, fastcontrast as fc
    >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> fc.SupConLoss(temperature=0.3)(x, y).shape
    torch.Size([])
    >>> fc.supcon_loss(x, None, reduction="none").shape  # two views per sample
    torch.Size([8])
""")
SupConLoss.__doc__ = doc(_SUPCON[0] + ", as an nn.Module (all arguments keyword-only).", _SUPCON[1],
                         {**_sm(t=0.1, d="cosine", n=None), "reduction": None, "backend": None},
                         _MODULE_RETURNS, RAISES, _SUPCON[3], _SUPCON[2])
supcon_loss.__doc__ = doc(_SUPCON[0] + " of one batch (the functional form of SupConLoss).", _SUPCON[1],
                          {"embeddings": None, "labels": _VIEWS, **_sm(t=0.1, d="cosine", n=None),
                           "ref_emb": None, "ref_labels": None, "indices_tuple": None, "reduction": None,
                           "backend": None}, _RETURNS, RAISES, _SUPCON[3], _SUPCON[2])

_NTX = ("NT-Xent (normalized temperature-scaled cross-entropy)", """
    form="pair": one term per positive pair (a, p),
    −log(e^{l_ap} / (e^{l_ap} + Σ_{n∈Neg(a)} e^{l_an})), mean over positive pairs;
    form="simclr": per anchor −log(e^{l_ap} / Σ_{k≠a} e^{l_ak}), mean over all anchors.
""", """
    Defaults: τ = 0.07, cosine similarity, form="pair" — pytorch-metric-learning's NTXentLoss();
    form="simclr" with labels=None is the SimCLR paper's loss.
""", """
    >>> import torch, fastcontrast as fc
    >>> x = torch.randn(8, 4)  # two views of 4 samples: rows i and i + 4
    >>> fc.NTXentLoss(temperature=0.5, form="simclr")(x).shape
    torch.Size([])
    >>> fc.nt_xent_loss(x, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])).shape
    torch.Size([])
""")
_FORM = {"form": "(str, default \"pair\"): \"pair\" or \"simclr\" (see above)."}
_ntx_args = _sm(t=0.07, d="cosine", n=None)
NTXentLoss.__doc__ = doc(_NTX[0] + ", as an nn.Module (all arguments keyword-only).", _NTX[1],
                         {"temperature": _ntx_args["temperature"], **_FORM, "distance": _ntx_args["distance"],
                          "normalize": _ntx_args["normalize"], "reduction": None, "backend": None},
                         _MODULE_RETURNS, RAISES, _NTX[3], _NTX[2])
nt_xent_loss.__doc__ = doc(_NTX[0] + " of one batch (the functional form of NTXentLoss).", _NTX[1],
                           {"embeddings": None, "labels": _VIEWS, "temperature": _ntx_args["temperature"],
                            **_FORM, "distance": _ntx_args["distance"], "normalize": _ntx_args["normalize"],
                            "ref_emb": None, "ref_labels": None, "indices_tuple": None, "reduction": None,
                            "backend": None}, _RETURNS, RAISES, _NTX[3], _NTX[2])

_NP = ("Multi-class N-pair loss (Sohn 2016)", """
    One (anchor, positive) pair per label (the first one in row order, as
    pytorch-metric-learning picks it); with S = sim(anchors, positives) (K × K), pair i's term
    is the cross-entropy LSE_j S_ij − S_ii, averaged over the K pairs; l2_reg adds
    0.25·l2_reg·(‖f_a‖² + ‖f_p‖²) per pair, averaged.
""", """
    Defaults: dot product of L2-normalized rows (cosine), no L2 term — pytorch-metric-learning's
    NPairsLoss() (its DotProductSimilarity normalizes by default). Sohn's original form is
    normalize=False with a small l2_reg. Under torch.compile, reduction="none" gives one slot
    per row of the label-sorted batch (0 where no pair), as the number of pairs depends on the
    labels' values.
""", """
    >>> import torch, fastcontrast as fc
    >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    >>> fc.NPairLoss()(x, y).shape
    torch.Size([])
    >>> fc.npair_loss(x, y, normalize=False, l2_reg=0.01, reduction="none").shape  # one per label
    torch.Size([4])
""")
_np_args = {"l2_reg": "(float, default 0.0): weight of the embeddings' L2 penalty (≥ 0).",
            "distance": _SM["distance"].format(d="dot"), "normalize": _SM["normalize"].format(n=True)}
NPairLoss.__doc__ = doc(_NP[0] + ", as an nn.Module (all arguments keyword-only).", _NP[1],
                        {**_np_args, "reduction": None, "backend": None},
                        "Tensor: a scalar, or per-pair values, shape (K,), with reduction=\"none\". "
                        "forward(embeddings, labels, indices_tuple=None).", RAISES, _NP[3], _NP[2])
npair_loss.__doc__ = doc(_NP[0] + " of one batch (the functional form of NPairLoss).", _NP[1],
                         {"embeddings": None, "labels": "(Tensor (B,), integer): class of each row (required).",
                          **_np_args, "indices_tuple": None, "reduction": None, "backend": None},
                         "Tensor: a scalar, or per-pair values, shape (K,), with reduction=\"none\".",
                         RAISES, _NP[3], _NP[2])

_NCE = ("InfoNCE / CLIP loss", """
    Query i's positive is key i, every other key a negative: v_i = LSE_j l_ij − l_ii with
    l_ij = s(query_i, key_j)/τ = logit_scale · s(query_i, key_j); symmetric=True averages the
    query→key and key→query directions (CLIP).
""", """
    Defaults: τ = 0.07 when neither temperature nor logit_scale is given, cosine similarity.
    logit_scale is CLIP's multiplier (pass logit_scale.exp() of a CLIP model): the same as
    temperature = 1 / logit_scale; give one or the other.
""", """
    >>> import torch, fastcontrast as fc
    >>> image, text = torch.randn(6, 4), torch.randn(6, 4)
    >>> fc.InfoNCELoss(logit_scale=14.3, symmetric=True)(image, text).shape
    torch.Size([])
    >>> fc.info_nce_loss(image, text, temperature=0.1, reduction="none").shape
    torch.Size([6])
""")
_nce_args = {"temperature": "(float or Tensor or None, default None): τ (0.07 when logit_scale is None "
                            "too); a tensor that requires grad is learned.",
             "logit_scale": "(float or Tensor or None, default None): CLIP's multiplier, = 1/τ; a tensor "
                            "(e.g. a Parameter) is read at every call.",
             "symmetric": "(bool, default False): average both directions (needs as many keys as queries).",
             "distance": _SM["distance"].format(d="cosine"), "normalize": _SM["normalize"].format(n=None)}
InfoNCELoss.__doc__ = doc(_NCE[0] + ", as an nn.Module (all arguments keyword-only).", _NCE[1],
                          {**_nce_args, "reduction": None, "backend": None},
                          "Tensor: a scalar, or per-query values, shape (B,), with reduction=\"none\". "
                          "forward(query (B, D), keys (N ≥ B, D), labels=None, ref_labels=None).",
                          RAISES + " ValueError also when both temperature and logit_scale are given.",
                          _NCE[3], _NCE[2])
info_nce_loss.__doc__ = doc(_NCE[0] + " (the functional form of InfoNCELoss).", _NCE[1],
                            {"query": "(Tensor (B, D), floating): the queries (e.g. image embeddings).",
                             "keys": "(Tensor (N, D), N ≥ B, floating): the keys; key i is query i's "
                                     "positive, extra keys are negatives only.",
                             **_nce_args, "reduction": None, "backend": None},
                            "Tensor: a scalar, or per-query values, shape (B,), with reduction=\"none\".",
                            RAISES + " ValueError also when both temperature and logit_scale are given.",
                            _NCE[3], _NCE[2])
