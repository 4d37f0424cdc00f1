"""SigLIP: the sigmoid image-text loss (Zhai et al. 2023), a variant of the softmax family.

Query i (an image) and key j (a text) give the logit u_ij = t·s_ij + b, with s the
similarity (cosine or dot), t > 0 the logit scale and b the logit bias. Every pair is one
binary classification, z_ij = +1 for the matching pair and −1 for every other:

    v_i  = Σ_j −log σ(z_ij · u_ij) = Σ_j softplus(−z_ij · u_ij)
    loss = (1/B) Σ_i v_i

(open_clip's SigLipLoss at world size 1). No softmax, so no row statistics: the kernels
stream over key tiles summing one term per pair (SoftmaxConfig variant "sigmoid"), and
neither backend keeps a B×N tensor between forward and backward. t and b may be tensors
that require grad; both get exact gradients (∂L/∂b = Σ_ij ∂L/∂u_ij, ∂L/∂t through
τ = 1/t).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from . import metrics
from ._reduce import LossTerms, reduce_terms
from ._validation import _values_checked, check_positive, check_query_keys, check_reduction, full_precision
from .softmax import _check_backend, _prepared, resolve, softmax_values

__all__ = ["siglip_loss", "SigLIPLoss"]


def _check_bias(bias, name: str = "logit_bias") -> None:
    if isinstance(bias, torch.Tensor):
        if bias.numel() != 1 or not bias.is_floating_point():
            raise ValueError(f"{name} must be a float or a one-element floating-point tensor, "
                             f"got shape {tuple(bias.shape)} and dtype {bias.dtype}")
        if _values_checked(bias) and not bool(torch.isfinite(bias.detach()).all()):
            raise ValueError(f"{name} must be finite")
        return
    if isinstance(bias, bool) or not isinstance(bias, numbers.Real):
        raise TypeError(f"{name} must be a real number or a tensor, got {type(bias).__name__}")
    if not math.isfinite(float(bias)):
        raise ValueError(f"{name} must be finite, got {bias}")


def _check_inputs(query, keys, labels, ref_labels) -> None:
    check_query_keys(query, keys, labels, ref_labels)


def sigmoid_terms(query, keys, labels, ref_labels, *, scale, bias, metric, backend, self_offset=-1) -> LossTerms:
    """Per-query SigLIP values v_i against `keys` (LossTerms with count 1 per query).

    labels None: query i's positive is key i + max(self_offset, 0) (a rank's row offset in
    distributed use); otherwise every key with the query's label is a positive."""
    if labels is None:
        shift = max(int(self_offset), 0)
        labels = torch.arange(query.shape[0], device=query.device) + shift
        ref_labels = torch.arange(keys.shape[0], device=keys.device)
    resolved = resolve(backend, query)
    q, r = _prepared(query, keys, metric, resolved)
    temperature = 1.0 / scale
    values, _ = softmax_values(q, r, labels, ref_labels, kind=metric.kind, variant="sigmoid", self_offset=-1,
                               temperature=temperature, backend=resolved, bias=bias)
    ones = torch.ones(values.shape, dtype=torch.int64, device=values.device)
    return LossTerms(values, ones, (values.detach() > 0).long())


class SigLIPLoss(nn.Module):
    """SigLIP sigmoid loss with a learnable, log-parametrized logit scale and a learnable bias.

    loss = (1/B) Σ_i Σ_j softplus(−z_ij (t·s(x_i, y_j) + b)), t = exp(log_scale), z_ij = +1
    when key j is query i's positive (key i, or the same label) and −1 otherwise. The scale
    is stored as its logarithm, as open_clip does (``logit_scale`` parameter, used as
    ``logit_scale.exp()``), so it stays positive under any optimizer step.

    Args:
        init_logit_scale (float): initial log t; default log 10 (SigLIP's t = 10).
        init_logit_bias (float): initial b; default −10 (SigLIP's init).
        learnable (bool): True (default): log t and b are nn.Parameters receiving gradients;
            False: fixed buffers.
        distance (str): "cosine" (default; rows L2-normalized inside) or "dot".
        normalize (bool | None): override the L2 normalization implied by `distance`.
        reduction (str): "mean" (default: the sum over pairs divided by the number of
            queries, as SigLIP), "sum", or "none" (per-query v_i, shape (B,)).
        backend (str | None): "auto" | "triton" | "torch"; None follows FASTCONTRAST_BACKEND.

    Returns:
        forward(query (B, D), keys (N, D), labels=None, ref_labels=None): a 0-dim tensor, or
        (B,) with reduction="none". Without labels query i's positive is key i (N ≥ B; extra
        keys are negatives for every query).

    Raises:
        ValueError: bad shapes, labels, a non-finite initial scale or bias, an unknown
            reduction, distance or backend (raised before any computation).

    Example:
        >>> import torch, fastcontrast as fc
        >>> loss = fc.SigLIPLoss()
        >>> image, text = torch.randn(8, 32, requires_grad=True), torch.randn(8, 32)
        >>> value = loss(image, text)
        >>> value.backward()
        >>> loss.logit_scale.grad is not None and loss.logit_bias.grad is not None
        True
    """

    def __init__(self, *, init_logit_scale: float = math.log(10.0), init_logit_bias: float = -10.0,
                 learnable: bool = True, distance: str = "cosine", normalize: bool | None = None,
                 reduction: str = "mean", backend: str | None = None):
        super().__init__()
        _check_bias(init_logit_scale, "init_logit_scale")
        _check_bias(init_logit_bias, "init_logit_bias")
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable must be True or False, got {type(learnable).__name__}")
        check_reduction(reduction)
        _check_backend(backend)
        self.metric = metrics.resolve_metric(distance, normalize)
        self.distance, self.normalize = distance, normalize
        self.reduction, self.backend, self.learnable = reduction, backend, learnable
        scale = torch.tensor(float(init_logit_scale))
        bias = torch.tensor(float(init_logit_bias))
        if learnable:
            self.logit_scale = nn.Parameter(scale)
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_scale", scale)
            self.register_buffer("logit_bias", bias)

    def extra_repr(self) -> str:
        return (f"logit_scale={float(self.logit_scale.detach().exp()):.4g} (log {float(self.logit_scale.detach()):.4g}), "
                f"logit_bias={float(self.logit_bias.detach()):.4g}, learnable={self.learnable}, "
                f"distance={self.distance!r}, normalize={self.normalize}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")

    def distributed_mode(self) -> str:
        """fastcontrast.distributed.GlobalBatchLoss: "paired" — each rank's queries against
        every rank's keys (`terms` with the rank's key offset), Σ over the global batch / B."""
        return "paired"

    def reduce(self, terms: LossTerms, denominators=None) -> torch.Tensor:
        """LossTerms -> the loss (`reduction`); denominators: the global counts (distributed)."""
        return reduce_terms(terms, self.reduction, "mean", denominators)

    @full_precision
    def terms(self, embeddings, labels=None, ref_emb=None, ref_labels=None, self_offset=-1) -> LossTerms:
        """Per-query values against ref_emb (the keys); see sigmoid_terms."""
        keys = embeddings if ref_emb is None else ref_emb
        return sigmoid_terms(embeddings, keys, labels, ref_labels, scale=self.logit_scale.exp(),
                             bias=self.logit_bias, metric=self.metric, backend=self.backend,
                             self_offset=self_offset)

    @full_precision
    def forward(self, query, keys, labels=None, ref_labels=None):
        _check_inputs(query, keys, labels, ref_labels)
        return self.reduce(self.terms(query, labels, keys, ref_labels))


@full_precision
def siglip_loss(query, keys, *, logit_scale=10.0, logit_bias=-10.0, labels=None, ref_labels=None,
                distance="cosine", normalize=None, reduction="mean", backend=None):
    """SigLIP sigmoid loss of queries against keys with a given scale t and bias b.

    loss = (1/B) Σ_i Σ_j softplus(−z_ij (t·s(x_i, y_j) + b)), z_ij = +1 for query i's
    positive key (key i, or the same label) and −1 otherwise.

    Args:
        query (Tensor): (B, D) float, e.g. image embeddings.
        keys (Tensor): (N, D) float, e.g. text embeddings; N ≥ B without labels.
        logit_scale (float | Tensor): the multiplier t > 0 (already exponentiated, as
            open_clip passes ``logit_scale.exp()``); default 10. A tensor keeps its graph.
        logit_bias (float | Tensor): b; default −10. A tensor keeps its graph.
        labels (Tensor | None): (B,) int; with ref_labels, keys of the query's label are its
            positives.
        ref_labels (Tensor | None): (N,) int, given together with labels.
        distance (str): "cosine" (default) or "dot".
        normalize (bool | None): override the normalization implied by `distance`.
        reduction (str): "mean" (default, Σ / B), "sum" or "none" ((B,) per query).
        backend (str | None): "auto" | "triton" | "torch".

    Returns:
        Tensor: 0-dim, or (B,) with reduction="none".

    Raises:
        ValueError: bad shapes, labels, logit_scale ≤ 0, a non-finite bias, unknown options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> x, y = torch.randn(4, 8), torch.randn(4, 8)
        >>> fc.siglip_loss(x, y, logit_scale=10.0, logit_bias=-10.0).shape
        torch.Size([])
    """
    check_positive(logit_scale, "logit_scale", allow_tensor=True)
    _check_bias(logit_bias)
    check_reduction(reduction)
    _check_backend(backend)
    metric = metrics.resolve_metric(distance, normalize)
    _check_inputs(query, keys, labels, ref_labels)
    terms = sigmoid_terms(query, keys, labels, ref_labels, scale=logit_scale, bias=logit_bias, metric=metric,
                          backend=backend)
    return reduce_terms(terms, reduction, "mean")
