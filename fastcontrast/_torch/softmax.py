"""Similarity-softmax family, the memory-lean PyTorch path.

Logits l_ij = s_ij / τ with s = q·r ("dot") or s = −d (the distance kinds). Masks come from
the label vectors, one anchor chunk at a time: valid_ij = (j ≠ i + self_offset),
pos_ij = valid_ij ∧ (y_i = y'_j), neg_ij = valid_ij ∧ (y_i ≠ y'_j).

    supcon  v_i = LSE_{j valid} l_ij − (1/|P_i|) Σ_{p∈P_i} l_ip          (0 when P_i = ∅)
            ∂v_i/∂l_ij = softmax_valid(l_i)_j − pos_ij / |P_i|
    ntxent  v_i = Σ_{p∈P_i} softplus(L_i − l_ip),  L_i = LSE_{n∈Neg_i} l_in   (0 when Neg_i = ∅)
            ∂v_i/∂l_ip = −σ(L_i − l_ip),  ∂v_i/∂l_in = W_i · softmax_neg(l_i)_n,
            W_i = Σ_p σ(L_i − l_ip)
    ∂l_ij/∂τ = −l_ij / τ

Forward walks the anchors in chunks (a chunk×N tile at a time, `metrics.chunks`) and keeps
only O(B) row statistics: the LSE, |P_i| and, for ntxent, W_i. Backward recomputes each
chunk's tile from q and r, so nothing of size B×N outlives one chunk.
"""
from __future__ import annotations

import torch

from ..configs import SoftmaxConfig
from ..metrics import chunks, compute_dtype, pairwise, pairwise_backward

# Elements per chunk×N tile (4 MiB in fp32); tests lower it to force many small chunks.
CHUNK_BUDGET = 1 << 20


class _Refs:
    """The reference set in the compute dtype, with its squared norms, cast once."""

    def __init__(self, r: torch.Tensor, kind: str):
        self.cd = compute_dtype(r.dtype)
        self.r = r.to(self.cd)
        self.sq = None if kind == "dot" else (self.r * self.r).sum(1)


def _tile(q, refs: _Refs, rows: slice, kind: str, tau: torch.Tensor):
    """Logits of one anchor chunk, plus what backward needs to map them back to q and r."""
    qc = q[rows].to(refs.cd)
    q_sq = None if kind == "dot" else (qc * qc).sum(1)
    raw = pairwise(qc, refs.r, kind, q_sq, refs.sq)
    logits = (raw if kind == "dot" else -raw) / tau
    return qc, raw, logits


def _masks(q_labels, r_labels, rows: slice, self_offset: int):
    """(valid, same) boolean chunk×N masks built from the label vectors."""
    same = q_labels[rows, None] == r_labels[None, :]
    n = r_labels.shape[0]
    if self_offset < 0:
        valid = torch.ones_like(same)
    else:
        self_col = torch.arange(rows.start, rows.stop, device=same.device) + self_offset
        valid = torch.arange(n, device=same.device)[None, :] != self_col[:, None]
    return valid, same


def softplus(x):
    """log(1 + eˣ) to full precision (torch's softplus switches to x above 20)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def _positive_gaps(logits, row_lse, pos):
    """L_i − l_ip on the positive pairs, −inf elsewhere (softplus and σ of −inf are exactly 0).
    Dense masks rather than a gather of the positive entries: no data-dependent shapes, so
    torch.compile traces the whole step."""
    return torch.where(pos, row_lse[:, None] - logits, torch.full_like(logits, float("-inf")))


def _masked_lse(logits, mask):
    """Row-wise LSE over `mask`; rows with an empty mask give 0 (and `any` = False)."""
    lse = logits.masked_fill(~mask, float("-inf")).logsumexp(1)
    any_ = mask.any(1)
    return torch.where(any_, lse, torch.zeros_like(lse)), any_


def forward(q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature):
    if cfg.variant not in ("supcon", "ntxent"):
        raise ValueError(f"unknown softmax variant {cfg.variant!r}")
    b = q.shape[0]
    refs = _Refs(r, cfg.kind)
    tau = temperature.detach().to(refs.cd)
    values = torch.zeros(b, dtype=refs.cd, device=q.device)
    n_pos = torch.zeros(b, dtype=torch.int64, device=q.device)
    lse = torch.zeros(b, dtype=refs.cd, device=q.device)
    weight = torch.zeros(b, dtype=refs.cd, device=q.device)  # ntxent's W_i
    zero = torch.zeros((), dtype=refs.cd, device=q.device)
    for rows in chunks(b, r.shape[0], CHUNK_BUDGET):
        _, _, logits = _tile(q, refs, rows, cfg.kind, tau)
        valid, same = _masks(q_labels, r_labels, rows, cfg.self_offset)
        pos = valid & same
        count = pos.sum(1)
        n_pos[rows] = count
        if cfg.variant == "supcon":
            row_lse, _ = _masked_lse(logits, valid)
            pos_sum = torch.where(pos, logits, zero).sum(1)
            has_pos = count > 0
            values[rows] = torch.where(has_pos, row_lse - pos_sum / count.clamp_min(1), zero)
        else:
            row_lse, has_neg = _masked_lse(logits, valid & ~same)
            gap = _positive_gaps(logits, row_lse, pos & has_neg[:, None])
            # softplus(x) = relu(x) + log1p(e) and σ(x) = 1/(1+e) or e/(1+e), e = exp(−|x|)
            e = torch.exp(-gap.abs())
            values[rows] = (gap.clamp_min(0) + torch.log1p(e)).sum(1)
            weight[rows] = (torch.where(gap >= 0, 1, e) / (1 + e)).sum(1)
        lse[rows] = row_lse
    saved = (lse, n_pos, weight) if cfg.variant == "ntxent" else (lse, n_pos)
    return values, n_pos, saved


def backward(grad_values, q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, saved,
             needs_temperature_grad: bool):
    lse, n_pos = saved[0], saved[1]
    b = q.shape[0]
    refs = _Refs(r, cfg.kind)
    tau = temperature.detach().to(refs.cd)
    g = grad_values.to(refs.cd)
    zero = torch.zeros((), dtype=refs.cd, device=q.device)
    grad_q = torch.zeros(q.shape, dtype=refs.cd, device=q.device)
    grad_r = torch.zeros(r.shape, dtype=refs.cd, device=q.device)
    grad_tau = torch.zeros((), dtype=refs.cd, device=q.device)
    for rows in chunks(b, r.shape[0], CHUNK_BUDGET):
        qc, raw, logits = _tile(q, refs, rows, cfg.kind, tau)
        valid, same = _masks(q_labels, r_labels, rows, cfg.self_offset)
        pos = valid & same
        row_lse = lse[rows, None]
        if cfg.variant == "supcon":
            count = n_pos[rows]
            prob = torch.where(valid, torch.exp(logits - row_lse), zero)
            d_logits = prob - pos.to(refs.cd) / count.clamp_min(1)[:, None]
            d_logits = torch.where((count > 0)[:, None], d_logits, zero)
        else:
            neg = valid & ~same
            has_neg = neg.any(1, keepdim=True)
            d_logits = saved[2][rows, None] * torch.where(neg, torch.exp(logits - row_lse), zero)
            d_logits = d_logits - torch.sigmoid(_positive_gaps(logits, row_lse[:, 0], pos & has_neg))
        d_logits = d_logits * g[rows, None]
        if needs_temperature_grad:
            grad_tau = grad_tau - (d_logits * logits).sum() / tau
        d_raw = d_logits / tau if cfg.kind == "dot" else -d_logits / tau
        gq, gr = pairwise_backward(d_raw, qc, refs.r, cfg.kind, raw if cfg.kind == "euclidean" else None)
        grad_q[rows] = gq
        grad_r += gr
    grad_temperature = grad_tau.to(temperature.dtype) if needs_temperature_grad else None
    return grad_q.to(q.dtype), grad_r.to(r.dtype), grad_temperature
