"""Similarity-softmax family, the memory-lean PyTorch path.

Logits l_ij = s_ij / τ with s = q·r ("dot") or s = −d (the distance kinds). Masks come from
the label vectors, one anchor chunk at a time: valid_ij = (j ≠ i + self_offset),
pos_ij = valid_ij ∧ (y_i = y'_j), neg_ij = valid_ij ∧ (y_i ≠ y'_j).

    supcon  v_i = LSE_{j valid} l_ij − (1/|P_i|) Σ_{p∈P_i} l_ip          (0 when P_i = ∅)
            ∂v_i/∂l_ij = softmax_valid(l_i)_j − pos_ij / |P_i|
    ntxent  v_i = Σ_{p∈P_i} softplus(L_i − l_ip),  L_i = LSE_{n∈Neg_i} l_in   (0 when Neg_i = ∅)
            ∂v_i/∂l_ip = −σ(L_i − l_ip),  ∂v_i/∂l_in = W_i · softmax_neg(l_i)_n,
            W_i = Σ_p σ(L_i − l_ip)
    dcl     v_i = [Neg_i ≠ ∅]·LSE_{n∈Neg_i} l_in − (1/|P_i|) Σ_{p∈P_i} l_ip   (decoupled: the
            positives stay out of the denominator; the mean is 0 when P_i = ∅)
            ∂v_i/∂l_ij = softmax_neg(l_i)_j − pos_ij / |P_i|
    sigmoid v_i = Σ_{j valid} softplus(−z_ij (l_ij + b)),  z_ij = +1 on positives, −1 on
            negatives (SigLIP; b a bias tensor),  ∂v_i/∂l_ij = −z_ij σ(−z_ij (l_ij + b)),
            ∂L/∂b = Σ_ij G_ij
    ∂L/∂τ = −(1/τ) Σ_ij G_ij l_ij  with G_ij = ∂L/∂l_ij
    ms / circle / glifted / lifted: the pair-weighted variants (configs.SoftmaxConfig), each
            anchor's log-sum-exp over its positives and over its negatives kept apart; "lifted"
            (per positive pair, over the negatives of both rows) has its own two-pass forward
            and backward at the end of this file

Forward walks the anchors in chunks (a chunk×N tile at a time, `metrics.chunks`). When the
whole problem is one chunk (B·N ≤ CHUNK_BUDGET) forward also computes that tile's gradient
∂v_i/∂s_ij and keeps it for backward, which is then two matmuls; otherwise forward keeps
nothing of size B×N and backward recomputes each chunk's tile from q and r. Either way at
most one chunk×N tile outlives a chunk.

The gradient tile is kept as (row factor) × T: T_ij = ∂v_i/∂s_ij up to a per-row factor
that backward folds into the matmul operands (scaling rows of q or of the product, O(B·D))
instead of a pass over the tile. For "dot" the τ-gradient needs no pass either:
Σ_j G_ij l_ij = q_i · (∂L/∂q_i) since s is linear in q_i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..configs import SoftmaxConfig
from ..metrics import Frame, chunks, compute_dtype

# Elements per chunk×N tile (4 MiB in fp32); tests lower it to force many small chunks. A
# problem of at most this many pairs is one chunk, and its gradient tile is kept for backward.
CHUNK_BUDGET = 1 << 20

# softplus(x) = log1p(eˣ) up to here, x beyond: the dropped log1p(e⁻ˣ) < 5e-18·x, below
# float64 resolution (torch's default switch at 20 drops 2e-9, visible in float64).
SOFTPLUS_SWITCH = 40.0


def softplus(x):
    """log(1 + eˣ) to full precision, differentiable (σ(x) as its derivative)."""
    return F.softplus(x, beta=1.0, threshold=SOFTPLUS_SWITCH)


def _logits(frame, rows: slice, kind: str, tau):
    """One anchor chunk: its frame rows of q, the true pairwise tile and its near pairs (None
    for "dot", where they are not needed) and the logits."""
    qc, q_sq, q_abs = frame.rows(rows)
    if kind == "dot":
        return qc, None, None, (qc / tau) @ frame.r.T
    raw, near = frame.tile(qc, q_sq, q_abs)
    return qc, raw, near, raw / -tau


def _exclude_self(tile, rows: slice, self_offset: int, value):
    """Set the self pairs (column i + self_offset of anchor row i) of a chunk tile to `value`."""
    if self_offset >= 0:
        tile.diagonal(rows.start + self_offset).fill_(value)


def _supcon_chunk(logits, pos, rows, self_offset, want_grad: bool):
    """values, |P_i|, and with want_grad (T, row factor): ∂v_i/∂l_ij = factor_i · T_ij.
    `pos` is the 0/1 label-equality tile; it is used up here (its buffer is reused).

    v_i = (LSE_P − mean_P l) + softplus(LSE_Neg − LSE_P): the log-sum-exps over the positives
    and over the negatives are kept apart, so a small loss (one positive far above every
    negative) keeps its digits instead of being 1 + tiny inside a log."""
    lowest = torch.finfo(logits.dtype).min  # exp(lowest − max) is exactly 0
    _exclude_self(logits, rows, self_offset, lowest)
    _exclude_self(pos, rows, self_offset, 0.0)
    count = pos.sum(1)
    has_pos = count > 0
    inv_count = 1 / count.clamp_min(1)
    is_pos = pos > 0
    lse_pos = torch.logsumexp(torch.where(is_pos, logits, lowest), 1)
    lse_neg = torch.logsumexp(torch.where(is_pos, lowest, logits), 1)  # the self pair is at `lowest`
    gap = softplus(lse_neg - lse_pos)
    pos_mean = pos.mul(logits).sum(1) * inv_count
    values = torch.where(has_pos, (lse_pos - pos_mean) + gap, 0.0)
    if not want_grad:
        return values, count.long(), None, None
    lse_all = torch.where(has_pos, lse_pos + gap, lse_neg)
    tile = logits.sub_(lse_all[:, None]).exp_().addcmul_(pos, -inv_count[:, None])  # softmax − pos/|P|
    return values, count.long(), tile, has_pos.to(logits.dtype)


def _ntxent_chunk(logits, same, rows, self_offset, want_grad: bool):
    """values, |P_i|, and with want_grad (T, None): ∂v_i/∂l_ij = T_ij. `same` is the 0/1
    label-equality tile; it is used up here (its buffer is reused)."""
    lowest = torch.finfo(logits.dtype).min  # exp(lowest − max) is exactly 0
    # the negatives' logits: positives and the self pair pushed down to `lowest`
    e = torch.add(logits, same, alpha=lowest)
    _exclude_self(e, rows, self_offset, lowest)
    _exclude_self(same, rows, self_offset, 0.0)
    pos = same
    count = pos.sum(1)
    row_max = e.amax(1)
    has_neg = row_max > lowest  # else every entry was pushed down
    total = e.sub_(row_max[:, None]).exp_().sum(1)
    neg_lse = torch.where(has_neg, row_max + total.log(), float("-inf"))
    # L_i − l_ip on the positive pairs, `lowest` elsewhere (−inf on rows without negatives):
    # softplus and σ are exactly 0 there. Dense masks rather than a gather: no data-dependent
    # shapes for torch.compile. Written over `pos`, which is not needed any more.
    gap = pos.sub_(1).mul_(-lowest).sub_(logits).add_(neg_lse[:, None])
    values = softplus(gap).sum(1)
    if not want_grad:
        return values, count.long(), None, None
    sig = gap.sigmoid_()
    # W_i · softmax_neg − σ, with softmax_neg = e / total (total ≥ 1 on rows with negatives)
    tile = e.mul_((sig.sum(1) / total.clamp_min(1))[:, None]).sub_(sig)
    return values, count.long(), tile, None


def _dcl_chunk(logits, pos, rows, self_offset, want_grad: bool):
    """values, |P_i|, and with want_grad (T, None): ∂v_i/∂l_ij = T_ij (the "dcl" variant: the
    log-sum-exp runs over the negatives only). `pos` is the 0/1 label-equality tile; it is
    used up here."""
    lowest = torch.finfo(logits.dtype).min  # exp(lowest − max) is exactly 0
    _exclude_self(logits, rows, self_offset, lowest)
    _exclude_self(pos, rows, self_offset, 0.0)
    count = pos.sum(1)
    inv_count = 1 / count.clamp_min(1)
    pos_mean = pos.mul(logits).sum(1) * inv_count
    neg = torch.where(pos > 0, lowest, logits)  # the self pair is at `lowest` already
    has_neg = neg.amax(1) > lowest
    lse_neg = torch.where(has_neg, torch.logsumexp(neg, 1), 0.0)
    values = lse_neg - pos_mean
    if not want_grad:
        return values, count.long(), None, None
    # rows without negatives: every entry is `lowest` and lse 0, so exp gives exact zeros
    tile = neg.sub_(lse_neg[:, None]).exp_().addcmul_(pos, -inv_count[:, None])
    return values, count.long(), tile, None


def _sigmoid_chunk(logits, pos, rows, self_offset, bias, want_grad: bool):
    """values, |P_i|, and with want_grad (T, None): ∂v_i/∂l_ij = T_ij (the "sigmoid" variant,
    SigLIP: one binary term per valid pair). `pos` is the 0/1 label-equality tile; it is used
    up here (its buffer becomes −z)."""
    _exclude_self(pos, rows, self_offset, 0.0)
    count = pos.sum(1)
    sign = pos.mul_(-2.0).add_(1.0)  # −z: −1 on positives, +1 on negatives
    x = (logits + bias).mul_(sign)
    terms = softplus(x)
    _exclude_self(terms, rows, self_offset, 0.0)
    values = terms.sum(1)
    if not want_grad:
        return values, count.long(), None, None
    tile = x.sigmoid_().mul_(sign)
    _exclude_self(tile, rows, self_offset, 0.0)
    return values, count.long(), tile, None


def _lse_chunk(logits, want_grad: bool):
    """"dcl" when every pair is a negative (cfg.all_negative): v_i = LSE_j l_ij, no label
    tile; ∂v_i/∂l_ij = softmax_ij. `logits` is used up."""
    lse = torch.logsumexp(logits, 1)
    count = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
    if not want_grad:
        return lse, count, None, None
    return lse, count, logits.sub_(lse[:, None]).exp_(), None


def _paired_chunk(logits, rows, positive_offset, want_grad: bool):
    """SupCon when query i's only positive is column i + positive_offset and no pair is
    excluded (InfoNCE, N-pair): v_i = softplus(LSE_{j≠p} l_ij − l_ip), no label tile at all.
    `logits` is used up (overwritten with the gradient tile)."""
    c, n = logits.shape
    lowest = torch.finfo(logits.dtype).min
    diagonal = rows.start + positive_offset
    paired = max(0, min(c, n - diagonal))  # the chunk's first rows have their positive in range
    diag = logits.diagonal(diagonal)
    pos_logit = diag.clone()
    diag.fill_(lowest)
    lse_neg = torch.logsumexp(logits, 1)
    gap = lse_neg[:paired] - pos_logit
    values = torch.zeros_like(lse_neg)
    values[:paired] = softplus(gap)
    count = torch.zeros(c, dtype=torch.int64, device=logits.device)
    count[:paired] = 1
    if not want_grad:
        return values, count, None, None
    lse_all = lse_neg.clone()
    lse_all[:paired] = pos_logit + values[:paired]
    prob = logits.sub_(lse_all[:, None]).exp_()  # the negatives' softmax (the positive is at 0)
    prob.diagonal(diagonal).copy_(-torch.sigmoid(gap))  # softmax_p − 1, without cancellation
    return values, count, prob, count.to(logits.dtype)


WEIGHTED_VARIANTS = ("ms", "circle", "glifted")
PAIR_VARIANTS = WEIGHTED_VARIANTS + ("lifted",)


def _pair_masks(same, rows: slice, self_offset: int):
    """(positive, negative) boolean masks of a chunk from its 0/1 label-equality tile."""
    is_same = same > 0
    valid = torch.ones_like(is_same)
    _exclude_self(valid, rows, self_offset, False)
    return is_same & valid, valid & ~is_same


def _masked_lse(x, mask, want_weights: bool = True):
    """Row-wise LSE over the masked entries (−inf for a row without any) and, with
    want_weights, the softmax weights over them (0 off the mask and on empty rows). One exp
    pass; x is used up (its buffer holds the weights)."""
    lowest = torch.finfo(x.dtype).min
    e = x.masked_fill_(~mask, lowest)
    top = e.amax(1)
    has = top > lowest
    top = torch.where(has, top, 0.0)
    total = e.sub_(top[:, None]).exp_().sum(1)  # exp(lowest − ·) is exactly 0
    lse = torch.where(has, top + total.clamp_min(torch.finfo(x.dtype).tiny).log(), float("-inf"))
    if not want_weights:
        return lse, has, None
    return lse, has, e.div_(total.clamp_min(torch.finfo(x.dtype).tiny)[:, None])


def _weighted_chunk(logits, same, rows, cfg, want_grad: bool, bounds=None):
    """The per-anchor pair-weighted variants ("ms", "circle", "glifted"; SoftmaxConfig):
    values, |P_i| and with want_grad (T, None), T_ij = ∂v_i/∂l_ij. bounds (chunk, 2), with
    cfg.row_bounds: only the pairs inside each row's bounds are positives / negatives."""
    pos, neg = _pair_masks(same, rows, cfg.self_offset)
    if bounds is not None:
        pos &= (logits - cfg.bound_slack) < bounds[:, 0:1]
        neg &= (logits + cfg.bound_slack) > bounds[:, 1:2]
    count = pos.sum(1)
    dpos = dneg = None  # ∂a/∂l, ∂b/∂l: tiles for Circle, constants otherwise
    if cfg.variant == "ms":
        a = torch.sub(cfg.shift_pos, logits).mul_(cfg.scale_pos)
        b = torch.sub(logits, cfg.shift_neg).mul_(cfg.scale_neg)
        dpos_c, dneg_c = -cfg.scale_pos, cfg.scale_neg
    elif cfg.variant == "circle":
        dpos = torch.relu(2.0 - cfg.shift_pos - logits).mul_(-cfg.scale_pos)  # −γ·α_p, α_p detached
        dneg = torch.relu(logits + cfg.shift_neg).mul_(cfg.scale_neg)         # γ·α_n
        a = dpos * (logits - cfg.shift_pos)
        b = dneg * (logits - cfg.shift_neg)
        dpos_c = dneg_c = 1.0
    else:  # glifted
        a, b = torch.sub(cfg.shift_pos, logits), torch.sub(logits, cfg.shift_neg)
        dpos_c, dneg_c = -1.0, 1.0
    lse_p, has_p, w_p = _masked_lse(a, pos, want_grad)
    lse_n, has_n, w_n = _masked_lse(b, neg, want_grad)
    if cfg.variant == "ms":
        values = softplus(lse_p) / cfg.scale_pos + softplus(lse_n) / cfg.scale_neg
        coef_p, coef_n = torch.sigmoid(lse_p) / cfg.scale_pos, torch.sigmoid(lse_n) / cfg.scale_neg
    elif cfg.variant == "circle":
        both = has_p & has_n
        total = torch.where(both, lse_p + lse_n, 0.0)
        values = torch.where(both, softplus(total), 0.0)
        coef_p = coef_n = torch.where(both, torch.sigmoid(total), 0.0)
    else:
        total = torch.where(has_p, lse_p, 0.0) + torch.where(has_n, lse_n, 0.0)
        values = torch.relu(total)
        coef_p = coef_n = (values > 0).to(logits.dtype)
    if not want_grad:
        return values, count.long(), None, None
    w_p.mul_((coef_p * dpos_c)[:, None])
    w_n.mul_((coef_n * dneg_c)[:, None])
    if dpos is not None:
        w_p.mul_(dpos)
        w_n.mul_(dneg)
    return values, count.long(), w_p.add_(w_n), None


def _same_labels(q_labels, r_labels, dtype):
    """The 0/1 label-equality tile in `dtype` (a float tile is cheaper to use than a boolean
    one; bool → uint8 → float is the fast conversion)."""
    return (q_labels[:, None] == r_labels[None, :]).view(torch.uint8).to(dtype)


def _chunk(frame, q_labels, r_labels, rows, cfg, tau, want_grad: bool, bias=None, bounds=None):
    """values and |P_i| of one anchor chunk; with want_grad also its gradient pieces
    (T, row factor or None, Σ_j ∂v_i/∂l_ij · l_ij (None for "dot"), near pairs (None for
    "dot"), Σ_j ∂v_i/∂l_ij (the bias gradient's rows; None unless "sigmoid")), T in ∂v/∂s
    units for "dot" and ∂v/∂(true d²) units for the distance kinds, up to the row factor ×
    1/τ (× −1 for the distance kinds)."""
    qc, raw, near, logits = _logits(frame, rows, cfg.kind, tau)
    if cfg.variant == "supcon" and cfg.positive_offset >= 0 and cfg.self_offset < 0:
        values, count, tile, factor = _paired_chunk(logits, rows, cfg.positive_offset, want_grad)
    elif cfg.variant == "dcl" and cfg.all_negative and cfg.self_offset < 0:
        values, count, tile, factor = _lse_chunk(logits, want_grad)
    elif cfg.variant in WEIGHTED_VARIANTS:
        same = _same_labels(q_labels[rows], r_labels, logits.dtype)
        values, count, tile, factor = _weighted_chunk(logits, same, rows, cfg, want_grad,
                                                      None if bounds is None else bounds[rows])
    else:
        same = _same_labels(q_labels[rows], r_labels, logits.dtype)
        if cfg.variant == "sigmoid":
            values, count, tile, factor = _sigmoid_chunk(logits, same, rows, cfg.self_offset, bias, want_grad)
        else:
            split = {"supcon": _supcon_chunk, "ntxent": _ntxent_chunk, "dcl": _dcl_chunk}[cfg.variant]
            values, count, tile, factor = split(logits, same, rows, cfg.self_offset, want_grad)
    if not want_grad:
        return values, count, None
    bias_rows = tile.sum(1) if cfg.variant == "sigmoid" else None
    logit_dot = None
    if cfg.kind != "dot":  # the τ-gradient's row sums; then from ∂/∂d to ∂/∂d²
        logit_dot = (tile * raw).sum(1) / -tau  # l = −d/τ (`logits` may be used up)
        if cfg.kind == "euclidean":
            tile = torch.where(raw > 0, tile / (2 * raw).clamp_min(torch.finfo(raw.dtype).tiny), 0.0)
    return values, count, (tile, factor, logit_dot, near, bias_rows)


def _pack(grad, cd, device):
    """The one chunk's gradient pieces as tensors for save_for_backward (empty = None)."""
    tile, factor, logit_dot, near, bias_rows = grad
    none = torch.empty(0, dtype=cd, device=device)
    no_index = torch.empty(0, dtype=torch.int64, device=device)
    near = near if near is not None else (no_index, no_index)
    return (tile, none if factor is None else factor, none if logit_dot is None else logit_dot, *near,
            none if bias_rows is None else bias_rows)


def _unpack(saved, cfg):
    tile, factor, logit_dot, near_i, near_j, bias_rows = saved
    return (tile, factor if factor.numel() else None, logit_dot if logit_dot.numel() else None,
            None if cfg.kind == "dot" else (near_i, near_j), bias_rows if bias_rows.numel() else None)


VARIANTS = ("supcon", "ntxent", "dcl", "sigmoid") + PAIR_VARIANTS


def _bias(cfg, bias, cd):
    """The sigmoid variant's bias as a detached 0-dim tensor in the compute dtype."""
    if cfg.variant != "sigmoid":
        return None
    if bias is None:
        raise ValueError("the sigmoid variant needs a bias tensor")
    return bias.detach().to(cd).reshape(())


def _bounds(cfg, bounds, cd):
    """The (B, 2) row bounds in the compute dtype (cfg.row_bounds), else None."""
    if not cfg.row_bounds:
        return None
    if bounds is None or cfg.variant not in PAIR_VARIANTS:
        raise ValueError(f"row bounds need a bounds tensor and one of the variants {PAIR_VARIANTS}")
    return bounds.detach().to(cd)


def forward(q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, bias=None, bounds=None):
    if cfg.variant not in VARIANTS:
        raise ValueError(f"unknown softmax variant {cfg.variant!r}")
    if cfg.masked_refs:
        raise ValueError("masked_refs (absent reference columns) is a Triton-kernel option")
    cd = compute_dtype(r.dtype)
    bounds = _bounds(cfg, bounds, cd)
    if cfg.variant == "lifted":
        return _lifted_forward(q, r, q_labels, r_labels, cfg, bounds=bounds)
    b, n = q.shape[0], r.shape[0]
    tau = temperature.detach().to(cd)
    bias = _bias(cfg, bias, cd)
    if n == 0:
        return (torch.zeros(b, dtype=cd, device=q.device),
                torch.zeros(b, dtype=torch.int64, device=q.device), ())
    frame = Frame(q, r, cfg.kind)
    if b * n <= CHUNK_BUDGET:  # one chunk: keep its gradient tile
        values, n_pos, grad = _chunk(frame, q_labels, r_labels, slice(0, b), cfg, tau, True, bias, bounds)
        return values, n_pos, _pack(grad, cd, q.device)
    values = torch.empty(b, dtype=cd, device=q.device)
    n_pos = torch.empty(b, dtype=torch.int64, device=q.device)
    for rows in chunks(b, n, CHUNK_BUDGET):
        values[rows], n_pos[rows], _ = _chunk(frame, q_labels, r_labels, rows, cfg, tau, False, bias, bounds)
    return values, n_pos, ()


def backward(grad_values, q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, saved,
             needs_temperature_grad: bool, bias=None, needs_bias_grad: bool = False,
             needs_reference_grad: bool = True, bounds=None):
    """-> (grad_q, grad_r, grad_temperature or None), and for the "sigmoid" variant (bias
    given) also grad_bias (0-dim, bias's dtype) or None. needs_reference_grad=False (the
    references are constants, e.g. a memory bank): grad_r is zeros and its matmuls skipped."""
    cd = compute_dtype(r.dtype)
    bounds = _bounds(cfg, bounds, cd)
    if cfg.variant == "lifted":
        return _lifted_backward(grad_values, q, r, q_labels, r_labels, cfg, saved, temperature,
                                needs_temperature_grad, bounds)
    b, n = q.shape[0], r.shape[0]
    tau = temperature.detach().to(cd)
    bias_c = _bias(cfg, bias, cd)
    if n == 0 or b == 0:
        grads = (torch.zeros_like(q), torch.zeros_like(r),
                 torch.zeros_like(temperature) if needs_temperature_grad else None)
        if bias is None:
            return grads
        return (*grads, torch.zeros_like(bias) if needs_bias_grad else None)
    frame = Frame(q, r, cfg.kind)
    # dL/ds_ij = g_i / τ · ∂v_i/∂l_ij, and s = −d for the distance kinds
    row_grad = grad_values.to(cd) / (tau if cfg.kind == "dot" else -tau)
    if saved:  # the one chunk's tile, kept by forward
        tiles = [(slice(0, b), _unpack(saved, cfg))]
    else:
        tiles = ((rows, _chunk(frame, q_labels, r_labels, rows, cfg, tau, True, bias_c, bounds)[2])
                 for rows in chunks(b, n, CHUNK_BUDGET))
    grad_q = torch.zeros(frame.q.shape, dtype=cd, device=q.device) if not saved else None
    grad_r = torch.zeros(frame.r.shape, dtype=cd, device=q.device)
    grad_tau = torch.zeros((), dtype=cd, device=q.device)
    grad_b = torch.zeros((), dtype=cd, device=q.device)
    for rows, (tile, factor, logit_dot, near, bias_rows) in tiles:
        qc = frame.q[rows]
        if bias_rows is not None and needs_bias_grad:  # ∂L/∂b = Σ_ij g_i ∂v_i/∂l_ij
            grad_b = grad_b + (grad_values[rows].to(cd) * bias_rows).sum()
        scale = row_grad[rows] if factor is None else row_grad[rows] * factor
        if cfg.kind == "dot":
            gq = (tile @ frame.r).mul_(scale[:, None])
            gr = tile.T @ (qc * scale[:, None]) if needs_reference_grad else None
            if needs_temperature_grad:  # Σ_j G_ij l_ij = q_i · ∂L/∂q_i
                grad_tau = grad_tau - (gq * qc).sum() / tau
        else:
            gq, gr = frame.sq_backward(tile * scale[:, None], qc, near, frame.q_abs[rows])
            if needs_temperature_grad:  # G_ij = −τ · scale_i · T_ij in logit units
                grad_tau = grad_tau + (scale * logit_dot).sum()
        if needs_reference_grad:
            grad_r += gr
        if grad_q is None:
            grad_q = gq
        else:
            grad_q[rows] = gq
    grad_temperature = grad_tau.to(temperature.dtype) if needs_temperature_grad else None
    grads = (grad_q.to(q.dtype), grad_r.to(r.dtype), grad_temperature)
    if bias is None:
        return grads
    return (*grads, grad_b.to(bias.dtype).reshape(bias.shape) if needs_bias_grad else None)


# ---------------------------------------------------------------------------------------
# "lifted": per positive pair (i, p), relu(LSE₀_{N_i ∪ N_p} b + a_ip)² / 2
#
# N_p are the negatives of anchor row p (pytorch-metric-learning matches a negative pair's
# anchor against both ends of the positive pair), none when p ≥ B; when p = i the union is
# N_i. LSE₀ is 0 over an empty union. With L_i = LSE_{N_i} b (a first pass, O(B)) the union's
# LSE is logaddexp(L_i, L_p), so forward is two passes over the chunks and keeps only L.
# Backward: h_ip = relu(L_ip + a_ip); ∂/∂l_ip = −g_i·h_ip on the positive pair, and anchor
# row x's negatives get W_x · softmax_{N_x}(b), W_x = Σ over the positive pairs (i, p) with
# x ∈ {i, p} of g_i·h_ip·exp(L_x − L_ip): one pass for W, one for the gradient tiles.


def _lifted_negatives(logits, same, rows, cfg, bounds):
    """The chunk's negative mask, inside the row bounds when given."""
    _, neg = _pair_masks(same, rows, cfg.self_offset)
    if bounds is not None:
        neg &= (logits + cfg.bound_slack) > bounds[rows, 1:2]
    return neg


def _lifted_row_lse(frame, q_labels, r_labels, cfg, b, n, bounds=None):
    tau = torch.ones((), dtype=frame.q.dtype, device=frame.q.device)
    lse = torch.empty(b, dtype=frame.q.dtype, device=frame.q.device)
    for rows in chunks(b, n, CHUNK_BUDGET):
        _, _, _, logits = _logits(frame, rows, cfg.kind, tau)
        neg = _lifted_negatives(logits, _same_labels(q_labels[rows], r_labels, logits.dtype), rows, cfg, bounds)
        lse[rows] = _masked_lse(logits.sub_(cfg.shift_neg), neg)[0]
    return lse


def _lifted_pairs(logits, same, rows, cfg, row_lse, bounds=None):
    """Per positive pair of the chunk: the union's LSE (0 where empty), whether it is empty,
    h = relu(L + a) and the positive mask (inside the row bounds when given)."""
    b, n = row_lse.shape[0], logits.shape[1]
    pos, _ = _pair_masks(same, rows, cfg.self_offset)
    if bounds is not None:
        pos &= (logits - cfg.bound_slack) < bounds[rows, 0:1]
    ref_lse = torch.full((n,), float("-inf"), dtype=logits.dtype, device=logits.device)
    ref_lse[:min(b, n)] = row_lse[:min(b, n)]
    mine = row_lse[rows][:, None]
    union = torch.logaddexp(mine.expand_as(logits), ref_lse[None, :].expand_as(logits))
    anchor = torch.arange(rows.start, rows.stop, device=logits.device)
    itself = anchor[:, None] == torch.arange(n, device=logits.device)[None, :]
    union = torch.where(itself, mine, union)
    empty = torch.isneginf(union)
    union = torch.where(empty, 0.0, union)
    h = torch.where(pos, torch.relu(union + (cfg.shift_pos - logits)), 0.0)
    return union, empty, h, pos, ref_lse, itself


def _lifted_forward(q, r, q_labels, r_labels, cfg, bounds=None):
    """values, n_pos and (row_lse,). bounds: the row bounds (cfg.row_bounds) or None."""
    b, n = q.shape[0], r.shape[0]
    cd = compute_dtype(r.dtype)
    values = torch.zeros(b, dtype=cd, device=q.device)
    n_pos = torch.zeros(b, dtype=torch.int64, device=q.device)
    if n == 0 or b == 0:
        return values, n_pos, ()
    frame = Frame(q, r, cfg.kind)
    tau = torch.ones((), dtype=cd, device=q.device)
    row_lse = _lifted_row_lse(frame, q_labels, r_labels, cfg, b, n, bounds).to(cd)
    for rows in chunks(b, n, CHUNK_BUDGET):
        _, _, _, logits = _logits(frame, rows, cfg.kind, tau)
        same = _same_labels(q_labels[rows], r_labels, logits.dtype)
        _, _, h, pos, _, _ = _lifted_pairs(logits, same, rows, cfg, row_lse, bounds)
        values[rows] = (h * h).sum(1) * 0.5
        n_pos[rows] = pos.sum(1)
    return values, n_pos, (row_lse,)


def _lifted_weight_chunk(weight, g, logits, same, rows, cfg, row_lse, bounds=None):
    """Adds the chunk's positive pairs to W (see above); -> (h, the chunk's positive-pair
    tile ∂L/∂l = −g_i·h_ip)."""
    m = min(row_lse.shape[0], logits.shape[1])
    union, empty, h, _, ref_lse, itself = _lifted_pairs(logits, same, rows, cfg, row_lse, bounds)
    gh = torch.where(empty, 0.0, h * g[rows, None])
    weight[rows] += (gh * (row_lse[rows][:, None] - union).exp()).sum(1)
    other = torch.where(itself, 0.0, gh * (ref_lse[None, :] - union).exp())
    weight[:m] += other[:, :m].sum(0)
    return h, h * -g[rows, None]


def _lifted_tile_grads(frame, tile, raw, qc, near, rows, kind):
    """(grad of the chunk's anchors, grad of every reference) from a tile of ∂L/∂l."""
    if kind == "dot":
        return tile @ frame.r, tile.T @ qc
    tile = tile.neg_()  # l = −d, then ∂/∂d → ∂/∂d²
    if kind == "euclidean":
        tile = torch.where(raw > 0, tile / (2 * raw).clamp_min(torch.finfo(raw.dtype).tiny), 0.0)
    return frame.sq_backward(tile, qc, near, frame.q_abs[rows])


def _lifted_backward(grad_values, q, r, q_labels, r_labels, cfg, saved, temperature, needs_temperature_grad,
                     bounds=None):
    b, n = q.shape[0], r.shape[0]
    cd = compute_dtype(r.dtype)
    frame = Frame(q, r, cfg.kind)
    tau = torch.ones((), dtype=cd, device=q.device)
    # forward's per-row LSE over negatives, or recomputed (the opaque op under torch.compile saves nothing)
    (row_lse,) = saved if saved else (_lifted_row_lse(frame, q_labels, r_labels, cfg, b, n, bounds),)
    g = grad_values.to(cd)
    weight = torch.zeros(b, dtype=cd, device=q.device)  # W_x
    for rows in chunks(b, n, CHUNK_BUDGET):
        _, _, _, logits = _logits(frame, rows, cfg.kind, tau)
        same = _same_labels(q_labels[rows], r_labels, logits.dtype)
        _lifted_weight_chunk(weight, g, logits, same, rows, cfg, row_lse, bounds)
    grad_q = torch.zeros(frame.q.shape, dtype=cd, device=q.device)
    grad_r = torch.zeros(frame.r.shape, dtype=cd, device=q.device)
    for rows in chunks(b, n, CHUNK_BUDGET):
        qc, raw, near, logits = _logits(frame, rows, cfg.kind, tau)
        same = _same_labels(q_labels[rows], r_labels, logits.dtype)
        _, _, h, _, _, _ = _lifted_pairs(logits, same, rows, cfg, row_lse, bounds)
        neg = _lifted_negatives(logits, same, rows, cfg, bounds)
        tile = h.mul_(-g[rows, None])  # ∂L/∂l on the positive pairs
        neg_w = torch.where(neg, (logits - cfg.shift_neg - row_lse[rows][:, None]).exp(), 0.0)
        tile.add_(neg_w.mul_(weight[rows, None]))
        gq, gr = _lifted_tile_grads(frame, tile, raw, qc, near, rows, cfg.kind)
        grad_q[rows] = gq
        grad_r += gr
    grad_t = torch.zeros((), dtype=temperature.dtype, device=q.device) if needs_temperature_grad else None
    return grad_q.to(q.dtype), grad_r.to(r.dtype), grad_t
