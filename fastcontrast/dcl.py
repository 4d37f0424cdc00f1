"""Decoupled contrastive learning (Yeh et al. 2022): DCL and its von Mises-Fisher weighted
form DCLW, a variant of the softmax family.

Anchor i with positives P(i) and negatives Neg(i) (other labels; the self pair is neither),
logits l_ij = s_ij / τ:

    v_i = LSE_{n∈Neg(i)} l_in − w_i · (1/|P(i)|) Σ_{p∈P(i)} l_ip

The positive is taken out of the softmax denominator (the "decoupling"); the loss is the
mean of v_i over anchors with a positive. DCL has w_i = 1. DCLW (two views per sample,
rows i and i + B/2) weighs each positive pair by

    w_i = 2 − M · softmax_k(s(x_k, x_k')/σ)_i      (M pairs, s computed without gradient)

so that hard positive pairs (low similarity) count more. With two views per sample this is
lightly's DCLLoss / DCLWLoss. The LSE over negatives and the positive mean run in the
softmax kernels (SoftmaxConfig variant "dcl"); the weighted correction uses only the M
positive pairs, O(B·D).
"""
from __future__ import annotations

import torch

from . import metrics
from ._reduce import LossTerms
from ._validation import check_positive, full_precision
from .softmax import _SoftmaxLoss, resolve, softmax_values

__all__ = ["dcl_loss", "DCLLoss", "von_mises_fisher_weights"]


def von_mises_fisher_weights(x0: torch.Tensor, x1: torch.Tensor, sigma: float, kind: str = "dot") -> torch.Tensor:
    """DCLW's weights w_k = 2 − M·softmax_k(s(x0_k, x1_k)/σ) of M positive pairs (no gradient).

    Args:
        x0 (Tensor): (M, D) first views, already prepared (normalized for cosine).
        x1 (Tensor): (M, D) second views.
        sigma (float): the weighting's temperature σ > 0.
        kind (str): the metric kind of the similarity ("dot" or a distance, s = −d).

    Returns:
        Tensor: (M,) weights in the compute dtype; their mean is 1.

    Example:
        >>> import torch
        >>> x = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
        >>> float(von_mises_fisher_weights(x, x, 0.5).mean())
        1.0
    """
    with torch.no_grad():
        cd = metrics.compute_dtype(x0.dtype)
        d = metrics.row_distances(x0.detach().to(cd), x1.detach().to(cd), kind)
        s = d if kind == "dot" else -d
        return 2.0 - x0.shape[0] * torch.softmax(s / sigma, 0)


class DCLLoss(_SoftmaxLoss):
    """Decoupled contrastive loss (DCL), or with `sigma` its weighted form DCLW.

    v_i = LSE_{n∈Neg(i)} s_in/τ − w_i · mean_{p∈P(i)} s_ip/τ, averaged over anchors that have
    a positive; w_i = 1 (DCL) or the von Mises-Fisher weights 2 − M·softmax(s_kk'/σ) (DCLW,
    two views per sample). Anchors without negatives contribute −w_i·mean_P l only.

    Args:
        temperature (float | Tensor): τ > 0; default 0.1 (lightly's). A tensor may require grad.
        sigma (float | None): None (default): DCL. A float σ > 0: DCLW, which needs the
            two-view layout (labels=None: rows i and i + B/2 are the two views).
        distance (str): "cosine" (default), "dot", "euclidean" or "sqeuclidean".
        normalize (bool | None): override the L2 normalization implied by `distance`.
        reduction (str): "mean" (default), "sum" or "none" (per anchor, shape (B,)).
        backend (str | None): "auto" | "triton" | "torch".

    Returns:
        forward(embeddings (B, D), labels=None, ref_emb=None, ref_labels=None): 0-dim tensor
        (or (B,) with reduction="none"). labels=None: rows i and i + B/2 are a positive pair.

    Raises:
        ValueError: bad shapes or labels, τ ≤ 0, σ ≤ 0, DCLW with labels or ref_emb, unknown
            options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> views = torch.randn(8, 16, requires_grad=True)   # 4 samples, two views each
        >>> fc.DCLLoss(temperature=0.1)(views).backward()
        >>> fc.DCLLoss(temperature=0.1, sigma=0.5)(views).shape
        torch.Size([])
    """

    def __init__(self, *, temperature=0.1, sigma=None, distance="cosine", normalize=None, reduction="mean",
                 backend=None):
        super().__init__(temperature=temperature, distance=distance, normalize=normalize, reduction=reduction,
                         backend=backend)
        if sigma is not None:
            check_positive(sigma, "sigma")
            sigma = float(sigma)
        self.sigma = sigma
        self.normalize = normalize

    def extra_repr(self) -> str:
        t = self.temperature
        t = float(t.detach()) if isinstance(t, torch.Tensor) else t
        return (f"temperature={t}, sigma={self.sigma}, distance={self.distance!r}, normalize={self.normalize}, "
                f"reduction={self.reduction!r}, backend={self.backend!r}")

    def _check_tensors(self, embeddings, labels, ref_emb, ref_labels, labels_needed=True):
        super()._check_tensors(embeddings, labels, ref_emb, ref_labels, labels_needed)
        if self.sigma is not None and (labels is not None or ref_emb is not None):
            raise ValueError("DCLW (sigma given) weighs the two views of each sample: call it with "
                             "labels=None and no ref_emb (rows i and i + B/2 are the two views)")

    @full_precision
    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if indices_tuple is not None:
            raise ValueError("DCLLoss does not take indices_tuple")
        return super().forward(embeddings, labels, None, ref_emb, ref_labels)

    @full_precision
    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=0) -> LossTerms:
        """Per-anchor v_i against ref_emb (default: the batch itself, self pair excluded at
        reference i + self_offset). DCLW: the local rows must be two views (i, i + B/2)."""
        backend = resolve(self.backend, embeddings)
        q = metrics.prepare(embeddings, self.metric, backend)
        r = q if ref_emb is None else metrics.prepare(ref_emb, self.metric, backend)
        r_labels = labels if ref_emb is None else ref_labels
        values, n_pos = softmax_values(q, r, labels, r_labels, kind=self.metric.kind, variant="dcl",
                                       self_offset=self_offset, temperature=self.temperature, backend=backend)
        if self.sigma is not None:
            b = q.shape[0]
            if b % 2:
                raise ValueError(f"DCLW pairs row i with row i + B/2: embeddings needs an even number of rows, got {b}")
            half = b // 2
            partner = torch.cat([torch.arange(half, b), torch.arange(0, half)]).to(q.device)
            w = von_mises_fisher_weights(q[:half], q[half:], self.sigma, self.metric.kind)
            w = torch.cat([w, w])
            d = metrics.row_distances(q, q[partner], self.metric.kind).to(values.dtype)
            t = self.temperature
            t = t.to(values.dtype) if isinstance(t, torch.Tensor) else t
            pos_logit = (d if self.metric.kind == "dot" else -d) / t
            values = values + (1.0 - w) * pos_logit  # −w·l_ip = −l_ip + (1 − w)·l_ip
        has_pos = n_pos > 0
        values = torch.where(has_pos, values, torch.zeros_like(values))
        return LossTerms(values, has_pos.long(), (has_pos & (values.detach() > 0)).long())


def dcl_loss(embeddings, labels=None, *, temperature=0.1, sigma=None, distance="cosine", normalize=None,
             ref_emb=None, ref_labels=None, reduction="mean", backend=None):
    """Decoupled contrastive loss (DCL), or DCLW with `sigma`; see DCLLoss.

    loss = mean over anchors with a positive of LSE_{n∈Neg(i)} s_in/τ − w_i·mean_P s_ip/τ.

    Args:
        embeddings (Tensor): (B, D) float.
        labels (Tensor | None): (B,) int; None: rows i and i + B/2 are two views of sample i.
        temperature (float | Tensor): τ > 0, default 0.1.
        sigma (float | None): DCLW's σ (two-view layout only); None: DCL.
        distance (str): "cosine" (default), "dot", "euclidean", "sqeuclidean".
        normalize (bool | None): override the normalization implied by `distance`.
        ref_emb (Tensor | None): (N, D) references instead of the batch (with ref_labels).
        ref_labels (Tensor | None): (N,) int.
        reduction (str): "mean" (default), "sum", "none".
        backend (str | None): "auto" | "triton" | "torch".

    Returns:
        Tensor: 0-dim, or (B,) with reduction="none".

    Raises:
        ValueError: see DCLLoss.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.dcl_loss(torch.randn(6, 4)).shape
        torch.Size([])
    """
    loss = DCLLoss(temperature=temperature, sigma=sigma, distance=distance, normalize=normalize,
                   reduction=reduction, backend=backend)
    return loss(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels)
