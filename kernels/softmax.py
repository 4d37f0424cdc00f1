"""Similarity-softmax family (SupCon, NT-Xent; N-pair, InfoNCE/CLIP and SimCLR map onto these).

Anchors q (B×D, labels y), references r (N×D, labels y'), temperature τ (a 0-dim tensor).
Similarity s_ij = q_i·r_j ("dot") or −d_ij (distance kinds), logits l_ij = s_ij / τ.
valid_ij excludes padding, masked-out references (label id −1: cfg.masked_refs) and the self
pair j = i + self_offset; P_i = valid same-label j,
Neg_i = valid other-label j (masks built per tile from the label vectors, kernels/tiles.py).

    supcon  v_i = LSE_{j valid} l_ij − (1/|P_i|) Σ_{p∈P_i} l_ip          (0 when P_i is empty)
            ∂v_i/∂l_ij = softmax_ij·[valid] − [p∈P_i]/|P_i|
    ntxent  v_i = Σ_{p∈P_i} softplus(L_i − l_ip),  L_i = LSE_{n∈Neg_i} l_in  (0 without negatives)
            ∂v_i/∂l_ip = −σ(L_i − l_ip) for positives,
            ∂v_i/∂l_in = S_i·exp(l_in − L_i) for negatives, S_i = Σ_p σ(L_i − l_ip)
    dcl     v_i = [Neg_i ≠ ∅]·LSE_{n∈Neg_i} l_in − (1/|P_i|) Σ_{p∈P_i} l_ip   (decoupled:
            positives out of the denominator), ∂v_i/∂l_ij = softmax_neg_ij − [p∈P_i]/|P_i|
    sigmoid v_i = Σ_{j valid} softplus(−z_ij (l_ij + b)), z = +1 on P_i, −1 on Neg_i (SigLIP;
            b a 0-dim bias tensor), ∂v_i/∂l_ij = −z_ij σ(−z_ij (l_ij + b)); one pass, no row
            statistics: a streaming sum over tiles. grad_b = Σ_ij W_ij.

Forward, one program per block of anchor rows: stream over reference tiles, similarity tile
computed on chip and never written, online LSE (running max + rescaled running sum) in base 2
with log2(e)/τ folded into the exponent. Only the tiles that hold a padded column or a self
pair are masked (at most cdiv(BLOCK_M − 1, BLOCK_N) + 2 per program, unrolled after the one loop
over the interior tiles); |P_i| comes from per-label reference counts, and for the dot kind
Σ_p s_ip = q_i·(Σ_{y'_j = y_i} r_j − [self positive] r_self) from per-label reference sums
(a deterministic per-label kernel), not from the tiles.
Stored per row (O(B)): lse = LSE_i (supcon) or L_i (ntxent, dcl), aux = 1/|P_i| (0 when
none; supcon, dcl) or S_i (ntxent); nothing for sigmoid. ntxent needs L_i before its positive
terms: the row kernel stores L_i (its loop: the LSE over the negatives, positives masked by an
additive −inf bias), then a second launch (_ntxent_positive_kernel) works on label-sorted
copies of the anchors and references (stable argsorts once per call, O((B + N)·D)): a block
of sorted anchors with labels first … last holds all its positives in the sorted reference
columns [start(first), end(last)) and visits only those tiles — about N/C + BLOCK_M columns
for C balanced classes, BLOCK_M/BLOCK_N tiles for SimCLR's two views per label — with no
per-tile "any positive?" test; value and aux are written back in the caller's row order.

Backward (the FlashAttention pattern without V): W_ij = g_i·∂v_i/∂l_ij is recomputed per tile
from the row statistics. With c_ij = ∂L/∂(tile entry):
    dot          c = W/τ                     grad_q_i = Σ_j c_ij r_j,   grad_r_j = Σ_i c_ij q_i
    sqeuclidean  c = −W/τ (s = −d)           grad_q_i = 2(Σ_j c_ij) q_i − 2 Σ_j c_ij r_j  (sym. for r)
    euclidean    c = −W/(2dτ), 0 at d = 0    same as sqeuclidean
    grad_τ = Σ_ij W_ij·∂l_ij/∂τ = −(1/τ) Σ_ij W_ij l_ij
One pass, each tile computed once (_softmax_bwd_kernel, FlashAttention-2's loop order): one
program per reference block streams over the anchor blocks and adds each tile's share of grad_q
(and of the grad_τ / bias row partials) to float32 row accumulators in program order — program
j adds to anchor block i after program j − 1 did (a per-block turn counter, integer atomics
only), so every sum has a fixed order: deterministic without float atomics. grad_r stays in
registers when D ≤ block_do; wider D runs the gradient products in block_do chunks of the one
tile, grad_r's share going to the program's own float32 rows.
Blocks(one_pass=False): the two per-chunk kernels instead — grad_q: one program per (anchor
block, D chunk), streaming over reference tiles; grad_r: one program per (reference block, D
chunk), streaming over anchor tiles; every output element written by exactly one program, each
tile recomputed by both kernels and by every D chunk. grad_τ is reduced from per-row partials
by a torch sum.

Row bounds (cfg.row_bounds, the pair-weighted variants): a fused miner selection as a (B, 2)
float32 tensor, loaded once per anchor block: positives only where l_ij − slack < bounds_i0,
negatives only where l_ij + slack > bounds_i1 (slack after the variant's parameters in the
temperature tensor) — one compare on the masks the variants already build, compiled out
(ROW_BOUNDS=False) for every other launch; both backward paths take them.

forward_symmetric / backward_symmetric (InfoNCE/CLIP both ways): v_i over rows and v'_j over
columns of the same logit matrix and masks; the backward adds both directions' W on each
tile, so one backward pass gives every gradient.

Inputs fp32/fp16/bf16, accumulation fp32; tl.dot input precision from cfg.precision
("ieee" | "tf32"; fp16/bf16 always run at their native precision, and the backward rounds c
to the input dtype for its second tl.dot, as FlashAttention does with P). The launchers are
registered as torch ops "fastcontrast::softmax_fwd" / "fastcontrast::softmax_bwd" with
torch.library.triton_op (opaque custom ops under the interpreter), so torch.compile can
trace a training step that contains the loss.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fastcontrast import metrics
from fastcontrast.configs import SoftmaxConfig

from . import _host, tiles

VARIANT_CODES = {"supcon": 0, "ntxent": 1, "dcl": 2, "sigmoid": 3, "ms": 4, "circle": 5, "glifted": 6}
# tl.math.fdiv(..., approx=True) (div.approx.f32) where this triton has it (3.9; not 3.6)
APPROX_FDIV = tl.constexpr("approx" in inspect.signature(tl.math.fdiv).parameters)
# the pair-weighted variants (configs.SoftmaxConfig): the temperature tensor then carries
# (τ, scale_pos, scale_neg, shift_pos, shift_neg, bound_slack), and lse/aux hold LSE_P a / LSE_N b
WEIGHTED = 4


# --------------------------------------------------------------------------------------------
# Tile-level math shared by the three kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _logit_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r, near_tol, inv_tau,
                KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                PRECISION: tl.constexpr):
    """(logits l = s/τ, metric tile t) for a BLOCK_M×BLOCK_N tile; s = t for dot, −t for distances."""
    t = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                            near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if KIND == 0:
        logits = t * inv_tau
    else:
        logits = -t * inv_tau
    return logits, t


@triton.jit
def _log1p(x):
    # log(1 + x) for x ≥ 0, accurate for small x (a series below 1e-4, where 1 + x would round)
    return tl.where(x < 1e-4, x * (1.0 - 0.5 * x), tl.log(1.0 + x))


@triton.jit
def _softplus(x):
    # log(1 + e^x) without overflow; exact 0 at x = −inf
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _pair_terms(logits, sp, sn, shp, shn, VARIANT: tl.constexpr):
    """The pair-weighted variants' per-pair exponents a (positives), b (negatives) and their
    derivatives ∂a/∂l, ∂b/∂l (Circle's α taken as constants)."""
    if VARIANT == 4:  # ms
        dpos = logits * 0.0 - sp
        dneg = logits * 0.0 + sn
        a = (shp - logits) * sp
        b = (logits - shn) * sn
    elif VARIANT == 5:  # circle
        dpos = -sp * tl.maximum(2.0 - shp - logits, 0.0)
        dneg = sn * tl.maximum(logits + shn, 0.0)
        a = dpos * (logits - shp)
        b = dneg * (logits - shn)
    else:  # glifted
        dpos = logits * 0.0 - 1.0
        dneg = logits * 0.0 + 1.0
        a = shp - logits
        b = logits - shn
    return a, b, dpos, dneg


@triton.jit
def _weighted_value(lse_p, lse_n, sp, sn, VARIANT: tl.constexpr):
    """(value, coef_p, coef_n) of an anchor from its LSE_P a and LSE_N b (−inf when empty):
    ∂v/∂a_p = coef_p·softmax_P(a)_p, ∂v/∂b_n = coef_n·softmax_N(b)_n."""
    has_p = lse_p > float("-inf")
    has_n = lse_n > float("-inf")
    if VARIANT == 4:
        value = _softplus(lse_p) / sp + _softplus(lse_n) / sn
        coef_p = tl.where(has_p, _sigmoid(lse_p), 0.0) / sp
        coef_n = tl.where(has_n, _sigmoid(lse_n), 0.0) / sn
    elif VARIANT == 5:
        both = has_p & has_n
        total = tl.where(both, lse_p + lse_n, 0.0)
        value = tl.where(both, _softplus(total), 0.0)
        coef_p = tl.where(both, _sigmoid(total), 0.0)
        coef_n = coef_p
    else:
        total = tl.where(has_p, lse_p, 0.0) + tl.where(has_n, lse_n, 0.0)
        value = tl.maximum(total, 0.0)
        coef_p = tl.where(total > 0.0, 1.0, 0.0)
        coef_n = coef_p
    return value, coef_p, coef_n


@triton.jit
def _weighted_grad(logits, pos, neg, lse_p, lse_n, g, sp, sn, shp, shn, VARIANT: tl.constexpr):
    """W_ij = g_i·∂v_i/∂l_ij of the pair-weighted variants; anchor statistics as in _logit_grad."""
    a, b, dpos, dneg = _pair_terms(logits, sp, sn, shp, shn, VARIANT)
    _, coef_p, coef_n = _weighted_value(lse_p, lse_n, sp, sn, VARIANT)
    w_p = tl.exp(tl.where(pos, a - tl.where(lse_p > float("-inf"), lse_p, 0.0), float("-inf")))
    w_n = tl.exp(tl.where(neg, b - tl.where(lse_n > float("-inf"), lse_n, 0.0), float("-inf")))
    return g * (coef_p * w_p * dpos + coef_n * w_n * dneg)


@triton.jit
def _logit_grad(logits, valid, pos, neg, lse, aux, g, bias, VARIANT: tl.constexpr, sp, sn, shp, shn):
    """W_ij = g_i · ∂v_i/∂l_ij (see the module docstring); 0 outside the masks. The anchor
    statistics lse, aux, g come as a column (BLOCK_M, 1) — or as a row (1, BLOCK_N) for the
    reverse direction of a symmetric loss, whose anchors are the references. sp, sn, shp, shn:
    the pair-weighted variants' scales and shifts."""
    if VARIANT >= 4:  # WEIGHTED (ms, circle, glifted)
        w = _weighted_grad(logits, pos, neg, lse, aux, g, sp, sn, shp, shn, VARIANT)
        scale = 1.0
    elif VARIANT == 0:
        scale = tl.where(aux > 0.0, g, 0.0)  # anchors without positives have v_i ≡ 0
        w = tl.exp(tl.where(valid, logits - lse, float("-inf"))) - tl.where(pos, aux, 0.0)
    elif VARIANT == 2:
        scale = g
        w = tl.exp(tl.where(neg, logits - lse, float("-inf"))) - tl.where(pos, aux, 0.0)
    elif VARIANT == 3:
        scale = g
        u = logits + bias
        x = tl.where(pos, -u, u)  # −z·u
        w = tl.where(valid, tl.where(pos, -1.0, 1.0) * _sigmoid(x), 0.0)
    else:
        scale = g
        x = lse - logits
        w = aux * tl.exp(tl.where(neg, -x, float("-inf"))) - tl.where(pos, _sigmoid(x), 0.0)
    return w * scale


@triton.jit
def _variant_params(tau_ptr, VARIANT: tl.constexpr):
    """(scale_pos, scale_neg, shift_pos, shift_neg): read from the temperature tensor by the
    pair-weighted variants, unused defaults otherwise."""
    if VARIANT >= 4:  # WEIGHTED (ms, circle, glifted)
        sp = tl.load(tau_ptr + 1)
        sn = tl.load(tau_ptr + 2)
        shp = tl.load(tau_ptr + 3)
        shn = tl.load(tau_ptr + 4)
    else:
        sp = 1.0
        sn = 1.0
        shp = 0.0
        shn = 0.0
    return sp, sn, shp, shn


@triton.jit
def _tile_coef(w, t, inv_tau, KIND: tl.constexpr):
    """c = ∂L/∂(dot product) for KIND dot, ∂L/∂(squared distance) for the distance kinds."""
    if KIND == 0:
        c = w * inv_tau
    elif KIND == 1:
        c = -w * inv_tau
    else:
        c = tiles.euclidean_grad_scale(-w * inv_tau, t)
    return c


@triton.jit
def _anchor_stats(grad_ptr, lse_ptr, aux_ptr, bounds_ptr, offs_m, M, ROW_BOUNDS: tl.constexpr):
    """An anchor block's statistics for the backward: g, lse, aux and (ROW_BOUNDS) its row
    bounds (unused zeros otherwise)."""
    in_m = offs_m < M
    g = tl.load(grad_ptr + offs_m, mask=in_m, other=0.0)
    lse = tl.load(lse_ptr + offs_m, mask=in_m, other=0.0)
    aux = tl.load(aux_ptr + offs_m, mask=in_m, other=0.0)
    if ROW_BOUNDS:
        pos_below, neg_above = tiles.load_row_bounds(bounds_ptr, offs_m, M)
    else:
        pos_below = 0.0
        neg_above = 0.0
    return g, lse, aux, pos_below, neg_above

@triton.jit
def _reverse_stats(rev_grad_ptr, rev_lse_ptr, rev_aux_ptr, offs_n, N, SYMMETRIC: tl.constexpr):
    """The reverse direction's statistics (g, lse, aux) at the columns offs_n of a symmetric
    loss; unused zeros otherwise."""
    if SYMMETRIC:
        in_n = offs_n < N
        rev_g = tl.load(rev_grad_ptr + offs_n, mask=in_n, other=0.0)
        rev_lse = tl.load(rev_lse_ptr + offs_n, mask=in_n, other=0.0)
        rev_aux = tl.load(rev_aux_ptr + offs_n, mask=in_n, other=0.0)
    else:
        rev_g = 0.0
        rev_lse = 0.0
        rev_aux = 0.0
    return rev_g, rev_lse, rev_aux

@triton.jit
def _grad_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
               near_tol, self_offset, inv_tau, bias, sp, sn, shp, shn, g, lse, aux, rev_g, rev_lse, rev_aux,
               pos_below, neg_above, slack, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
               SYMMETRIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               ROW_BOUNDS: tl.constexpr, MASKED_REFS: tl.constexpr):
    """One backward tile, shared by the three backward kernels: (logits, t, W, c) with W_ij =
    g_i·∂v_i/∂l_ij (+ the reverse direction's column term when SYMMETRIC) and c = ∂L/∂(tile
    entry). Anchor statistics g, lse, aux (and row bounds) are rows (BLOCK_M,), the reverse
    direction's rev_g, rev_lse, rev_aux columns (BLOCK_N,)."""
    logits, t = _logit_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                            near_tol, inv_tau, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset, MASKED_REFS)
    if ROW_BOUNDS:
        pos, neg = tiles.row_bounded(pos, neg, logits, pos_below, neg_above, slack)
    w = _logit_grad(logits, valid, pos, neg, lse[:, None], aux[:, None], g[:, None], bias, VARIANT,
                    sp, sn, shp, shn)
    if SYMMETRIC:  # + the reverse direction: the references as anchors, column statistics
        w += _logit_grad(logits, valid, pos, neg, rev_lse[None, :], rev_aux[None, :], rev_g[None, :], bias,
                         VARIANT, sp, sn, shp, shn)
    return logits, t, w, _tile_coef(w, t, inv_tau, KIND)


# --------------------------------------------------------------------------------------------
# Forward: row statistics and per-anchor values
# --------------------------------------------------------------------------------------------
@triton.jit
def _similarity_tile(q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, stride_q, stride_r, near_tol,
                     D: tl.constexpr, KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, MASKED: tl.constexpr):
    """(s, t): similarity s = t (dot) or −t (distance kinds) and the metric tile t. With
    D ≤ BLOCK_D the anchors' rows q_blk were loaded once by the caller (one tile product per
    reference tile); otherwise the product runs over D in BLOCK_D steps. MASKED: the tile may
    run past row N (an interior tile's rows are read unmasked)."""
    if D <= BLOCK_D:
        if MASKED:
            r_blk = tiles.row_block(r_ptr, offs_n, N, stride_r, D, BLOCK_D)
        else:
            r_blk = tiles.full_row_block(r_ptr, offs_n, stride_r, D, BLOCK_D)
        dot = tl.dot(q_blk, tl.trans(r_blk), input_precision=PRECISION)
    else:
        dot = tiles.dot_tile(q_ptr, r_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r, BLOCK_M, BLOCK_N, BLOCK_D,
                             PRECISION)
    t = tiles.metric_from_dot(dot, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                              near_tol, KIND, BLOCK_M, BLOCK_N)
    if KIND == 0:
        s = t
    else:
        s = -t
    return s, t


@triton.jit
def _label_sums_kernel(r_ptr, order_ptr, label_start_ptr, r_count_ptr, out_ptr, D, stride_r,
                       BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[label_start[c]] = Σ_{j: y'_j = c} r_j in fp32, for every label c with references (one
    program per (label, D chunk), its rows summed in the order `order` lists them: deterministic).
    order: the reference rows sorted by label; label_start[c]: where label c's rows begin there."""
    c = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    count = tl.load(r_count_ptr + c)
    start = tl.load(label_start_ptr + c)
    acc = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
    for i0 in range(0, count, BLOCK_R):
        offs_i = i0 + tl.arange(0, BLOCK_R)
        rows = tl.load(order_ptr + start + offs_i, mask=offs_i < count, other=0)
        acc += _rows_where(r_ptr, rows, offs_d, offs_i < count, D, stride_r)
    if count > 0:
        tl.store(out_ptr + start.to(tl.int64) * D + offs_d, tl.sum(acc, 0), mask=offs_d < D)


@triton.jit
def _rows_where(ptr, rows, offs_d, row_mask, D, stride):
    """fp32 rows `rows`, columns offs_d of a row-major matrix where row_mask holds, 0 elsewhere."""
    mask = row_mask[:, None] & (offs_d[None, :] < D)
    return tl.load(ptr + rows.to(tl.int64)[:, None] * stride + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _positive_dot_sum(q_ptr, r_ptr, label_sum_ptr, label_start_ptr, offs_m, q_lab, has_refs, self_col,
                      self_is_pos, M, stride_q, stride_r, D: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    """Σ_{p∈P_i} q_i·r_p = q_i·(Σ_{j: y'_j = y_i} r_j − [the self pair is a positive] r_self):
    one row dot with the anchor's label sum (_label_sums_kernel) instead of a positive
    reduction on every tile. has_refs: the anchor's label has references (else 0)."""
    start = tl.load(label_start_ptr + q_lab, mask=has_refs, other=0)
    total = tl.zeros((BLOCK_M,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        q = _rows_where(q_ptr, offs_m, offs_d, offs_m < M, D, stride_q)
        c = _rows_where(label_sum_ptr, start, offs_d, has_refs, D, D)
        own = _rows_where(r_ptr, self_col, offs_d, self_is_pos, D, stride_r)
        total += tl.sum(q * (c - own), 1)
    return total


@triton.jit
def _fwd_tile(run_max, run_sum, run_neg, pos_s_sum, pair_sum, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr,
              q_lab, self_cols, offs_m, n0, M, N, stride_q, stride_r, near_tol, scale2, inv_tau, bias,
              D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr,
              MASKED_REFS: tl.constexpr):
    """One reference tile's share of the forward's running row statistics. MASKED: the tile may
    hold padded columns or self pairs (s = −inf there: a column bias for padded and masked-out
    columns, label −2 / −1, one compare per entry for the self pair); otherwise every entry is
    valid and nothing is masked, except with MASKED_REFS (cfg.masked_refs: a column with label
    −1 may sit in any tile), which adds the column bias there too."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    s, t = _similarity_tile(q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, stride_q, stride_r,
                            near_tol, D, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, MASKED)
    s_all = s
    if MASKED:
        is_self = offs_n[None, :] == self_cols[:, None]
        r_lab = tl.load(r_lab_ptr + offs_n, mask=offs_n < N, other=-2)
        if MASKED_REFS:
            present = r_lab >= 0  # −2 past N, −1 on a masked-out column
        else:
            present = offs_n < N
        s = tl.where(is_self, float("-inf"), s + tl.where(present, 0.0, float("-inf"))[None, :])
        same = q_lab[:, None] == r_lab[None, :]  # False on padded and masked-out columns
        if VARIANT == 0 or VARIANT == 2:
            same = same & (~is_self)  # the positives (the self pair's s is −inf for what follows)
    else:
        r_lab = tl.load(r_lab_ptr + offs_n)
        if MASKED_REFS:
            s = s + tl.where(r_lab >= 0, 0.0, float("-inf"))[None, :]
        same = q_lab[:, None] == r_lab[None, :]  # False on masked-out columns (an anchor's label is ≥ 0)
    if (VARIANT == 0 or VARIANT == 2) and KIND != 0:  # dot: from the per-label sums instead
        pos_s_sum += tl.sum(tl.where(same, s_all, 0.0), 1)
    if VARIANT == 3:  # a streaming sum of one binary term per pair: no LSE
        u = s * inv_tau + bias
        if MASKED or MASKED_REFS:
            pair_sum += tl.sum(tl.where(s > float("-inf"), _softplus(tl.where(same, -u, u)), 0.0), 1)
        else:
            pair_sum += tl.sum(_softplus(tl.where(same, -u, u)), 1)
    else:
        if VARIANT == 0:
            in_lse = s
        else:
            # an additive bias, not tl.where(same, −inf, s): that select built 468 instructions
            # (its 32 predicates per thread moved through registers, P2R/LOP3), this one 365
            in_lse = s + tl.where(same, float("-inf"), 0.0)
        new_max = tl.maximum(run_max, tl.max(in_lse, 1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max) * scale2  # rows with nothing yet: no NaN
        rescale = tl.math.exp2(run_max * scale2 - shift)
        e = tl.math.exp2(in_lse * scale2 - shift[:, None])
        if VARIANT == 0:
            run_neg = run_neg * rescale + tl.sum(tl.where(same, 0.0, e), 1)
        run_sum = run_sum * rescale + tl.sum(e, 1)
        run_max = new_max
    return run_max, run_sum, run_neg, pos_s_sum, pair_sum


@triton.jit
def _ntxent_positive_tile(value, aux, lse2, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr, q_lab, self_cols,
                          offs_m, n0, M, N, stride_q, stride_r, near_tol, scale2,
                          D: tl.constexpr, KIND: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One tile's share of NT-Xent's Σ_p log2(1 + 2^x2) and Σ_p σ(x), x2 = (L_i − l_ip)·log2 e,
    on label-sorted rows (_ntxent_positive_kernel). With e = 2^−|x2|: log2(1 + 2^x2) =
    max(x2, 0) + log2(1 + e) (a series below e = 1e-4, where 1 + e rounds) and
    σ(x) = (x ≥ 0 ? 1 : e)/(1 + e); non-positives (other labels, the self pair, padded and
    masked-out columns) enter as x2 = −inf, which gives 0 to both."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    r_lab = tl.load(r_lab_ptr + offs_n)  # the rows run BLOCK_N past N: label −2 there, no match
    pos = (q_lab[:, None] == r_lab[None, :]) & (offs_n[None, :] != self_cols[:, None])
    s, t = _similarity_tile(q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, stride_q,
                            stride_r, near_tol, D, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, False)
    # x2 = (lse2 on positives, −inf elsewhere) − s·c: the select needs no tile product and
    # leaves a float tile, not 32 predicates per thread held across it
    x2 = tl.where(pos, lse2[:, None], float("-inf")) - s * scale2
    e = tl.math.exp2(-tl.abs(x2))
    one_e = 1.0 + e
    # Σ_j log2(1 + e_j) = log2 Π_j (1 + e_j): the row's product minus 1 (no rounding of
    # small e_j) by a reduction, one logarithm per row and tile (Π ≤ 2^BLOCK_N)
    prod_m1 = tl.reduce(e, 1, _product_minus_one)
    value += tl.sum(tl.maximum(x2, 0.0), 1) + _log1p(prod_m1) * 1.4426950408889634
    if APPROX_FDIV:  # 1 + e lies in [1, 2]: the approximate division is within 2 ulp
        aux += tl.sum(tl.math.fdiv(tl.where(x2 >= 0.0, 1.0, e), one_e, approx=True), 1)
    else:
        aux += tl.sum(tl.where(x2 >= 0.0, 1.0, e) / one_e, 1)
    return value, aux


@triton.jit
def _ntxent_positive_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, q_order_ptr, self_ptr,
                            label_start_ptr, r_count_ptr, tau_ptr, lse_ptr, values_ptr, aux_ptr,
                            M, N, stride_q, stride_r, near_tol,
                            D: tl.constexpr, KIND: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """NT-Xent's positive pass: v_i = Σ_p softplus(L_i − l_ip) and aux_i = Σ_p σ(L_i − l_ip),
    L_i = lse_i from _softmax_fwd_kernel. Anchors and references come sorted by label (q, r,
    their labels and squared norms: copies in that order; q_order: each sorted anchor's row
    in the caller's order, where lse is read and value and aux are written; self_ptr: the
    sorted column of its self pair, −1 for none; the sorted references padded with BLOCK_N
    zero rows of label −2, so that no tile needs a row mask). A block of sorted anchors with
    labels first … last has all its positives in the sorted reference columns
    [label_start[first], label_start[last] + r_count[last]): it visits only the BLOCK_N-aligned
    tiles there (about N/C + BLOCK_M columns for C balanced classes, BLOCK_M/BLOCK_N tiles for
    SimCLR's two views per label), none when no row of the block has a negative (every
    L_i = −inf: v = aux = 0)."""
    m0 = tl.program_id(0) * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    in_m = offs_m < M
    scale2 = 1.4426950408889634 / tl.load(tau_ptr)
    q_lab = tl.load(q_lab_ptr + offs_m, mask=in_m, other=-1)
    rows = tl.load(q_order_ptr + offs_m, mask=in_m, other=0)
    self_cols = tl.load(self_ptr + offs_m, mask=in_m, other=-1)
    lse = tl.load(lse_ptr + rows, mask=in_m, other=float("-inf"))
    first = tl.load(q_lab_ptr + m0)
    last = tl.load(q_lab_ptr + tl.minimum(m0 + BLOCK_M, M) - 1)
    lo = tl.load(label_start_ptr + first)
    hi = tl.load(label_start_ptr + last) + tl.load(r_count_ptr + last)
    hi = tl.where(tl.max(lse) > float("-inf"), hi, lo)
    if D <= BLOCK_D:
        q_blk = tiles.row_block(q_ptr, offs_m, M, stride_q, D, BLOCK_D)
    else:
        q_blk = 0.0
    # in base 2 (lse2 = L_i·log2 e, x2 = lse2 − s·c): value and aux as sums of log2(1 + 2^x2)
    # and σ, the value scaled by ln 2 once per row
    lse2 = lse * 1.4426950408889634
    value = tl.zeros((BLOCK_M,), tl.float32)
    aux = tl.zeros((BLOCK_M,), tl.float32)
    # tiles aligned to BLOCK_N (at most one more than cdiv(hi − lo, BLOCK_N)): the labels of a
    # tile are then read in vector loads, which unaligned starts made 16 scalar loads with
    # their address arithmetic per thread
    n_lo = (lo // BLOCK_N) * BLOCK_N
    for k in range(0, tl.cdiv(hi - n_lo, BLOCK_N)):
        n0 = tl.multiple_of(n_lo + k * BLOCK_N, BLOCK_N)
        value, aux = _ntxent_positive_tile(
            value, aux, lse2, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr, q_lab, self_cols, offs_m,
            n0, M, N, stride_q, stride_r, near_tol, scale2, D, KIND, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D)
    tl.store(values_ptr + rows, value * 0.6931471805599453, mask=in_m)
    tl.store(aux_ptr + rows, aux, mask=in_m)


@triton.jit
def _product_minus_one(a, b):
    # (1 + a)(1 + b) − 1 for a, b ≥ 0, without forming 1 + a
    return a + b + a * b


@triton.jit
def _softmax_fwd_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, r_count_ptr, label_sum_ptr,
                        label_start_ptr, tau_ptr, bias_ptr,
                        values_ptr, n_pos_ptr, lse_ptr, aux_ptr,
                        M, N, stride_q, stride_r, near_tol, self_offset,
                        D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        MASKED_REFS: tl.constexpr):
    # Per tile (_fwd_tile): s (similarity), −inf outside valid on the edge tiles (and on
    # masked-out columns, label −1, on every tile with MASKED_REFS); same = [y_i == y'_j].
    # Exponentials in base 2 with log2(e)/τ folded into one FFMA: e^(l − m/τ) = 2^(s·c − m·c),
    # c = log2(e)/τ, the running max m kept in units of s (τ > 0). |P_i| comes from per-label
    # reference counts (r_count), Σ_p s_ip (dot kind) from the per-label sums (label_sum).
    m0 = tl.program_id(0) * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    in_m = offs_m < M
    inv_tau = 1.0 / tl.load(tau_ptr)
    scale2 = inv_tau * 1.4426950408889634
    bias = tl.load(bias_ptr)
    q_lab = tl.load(q_lab_ptr + offs_m, mask=in_m, other=-1)
    self_cols = tl.where(self_offset >= 0, offs_m + self_offset, -1)  # each row's self column (−1: none)
    if D <= BLOCK_D:
        q_blk = tiles.row_block(q_ptr, offs_m, M, stride_q, D, BLOCK_D)
    else:
        q_blk = 0.0

    # pass 1: online LSE over the denominator set (valid for supcon, negatives for ntxent/dcl);
    # supcon keeps the positives' and the negatives' shares of the sum apart (see below).
    # Interior tiles (no padded column, no self pair) take the unmasked path, in one loop over
    # the full tiles outside the block's self-pair tiles; the edge tiles (self pairs, the
    # ragged last tile) follow, masked.
    run_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # in units of s
    run_sum = tl.zeros((BLOCK_M,), tl.float32)      # Σ e^(l − max) over the set
    run_neg = tl.zeros((BLOCK_M,), tl.float32)      # Σ e^(l − max) over the negatives (supcon)
    pos_s_sum = tl.zeros((BLOCK_M,), tl.float32)    # Σ_p s_ip
    pair_sum = tl.zeros((BLOCK_M,), tl.float32)     # Σ_j softplus(−z(l + b)) (sigmoid)
    n_full = N // BLOCK_N  # tiles without a padded column
    n_tiles = tl.cdiv(N, BLOCK_N)
    # the tiles [self_lo, self_hi) hold the block's self pairs (none when self_offset < 0)
    self_lo = tl.where(self_offset >= 0, tl.minimum((m0 + self_offset) // BLOCK_N, n_tiles), n_tiles)
    self_hi = tl.where(self_offset >= 0, tl.minimum(tl.cdiv(m0 + self_offset + BLOCK_M, BLOCK_N), n_tiles),
                       n_tiles)
    full_lo = tl.minimum(self_lo, n_full)
    skip = tl.minimum(self_hi, n_full) - full_lo
    for k in range(0, n_full - skip):
        n0 = (k + tl.where(k >= full_lo, skip, 0)) * BLOCK_N
        run_max, run_sum, run_neg, pos_s_sum, pair_sum = _fwd_tile(
            run_max, run_sum, run_neg, pos_s_sum, pair_sum, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr,
            q_lab, self_cols, offs_m, n0, M, N, stride_q, stride_r, near_tol, scale2, inv_tau, bias,
            D, KIND, VARIANT, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, False, MASKED_REFS)
    # the self columns m0 + self_offset … + BLOCK_M − 1 meet at most cdiv(BLOCK_M − 1, BLOCK_N) + 1
    # tiles: unrolled, so that the interior loop is the kernel's only loop
    for j in tl.static_range((BLOCK_M + BLOCK_N - 2) // BLOCK_N + 1):
        if self_lo + j < self_hi:
            run_max, run_sum, run_neg, pos_s_sum, pair_sum = _fwd_tile(
                run_max, run_sum, run_neg, pos_s_sum, pair_sum, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr,
                q_lab, self_cols, offs_m, (self_lo + j) * BLOCK_N, M, N, stride_q, stride_r, near_tol, scale2,
                inv_tau, bias, D, KIND, VARIANT, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, True, MASKED_REFS)
    if (n_full < n_tiles) & ((n_full < self_lo) | (n_full >= self_hi)):  # the ragged last tile
        run_max, run_sum, run_neg, pos_s_sum, pair_sum = _fwd_tile(
            run_max, run_sum, run_neg, pos_s_sum, pair_sum, q_blk, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, r_lab_ptr,
            q_lab, self_cols, offs_m, n_full * BLOCK_N, M, N, stride_q, stride_r, near_tol, scale2, inv_tau, bias,
            D, KIND, VARIANT, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, True, MASKED_REFS)

    # |P_i| = (references with label y_i) − [the self pair is one of them]
    self_col = offs_m + self_offset
    has_self = in_m & (self_col < N) & (self_col >= offs_m)  # self_offset ≥ 0: a self pair exists
    self_lab = tl.load(r_lab_ptr + self_col, mask=has_self, other=-2)
    n_refs = tl.load(r_count_ptr + q_lab, mask=in_m, other=0)  # references with label y_i
    self_is_pos = has_self & (self_lab == q_lab)
    n_pos = n_refs - self_is_pos.to(tl.int32)
    if (VARIANT == 0 or VARIANT == 2) and KIND == 0:
        pos_s_sum = _positive_dot_sum(q_ptr, r_ptr, label_sum_ptr, label_start_ptr, offs_m, q_lab, n_refs > 0,
                                      self_col, self_is_pos, M, stride_q, stride_r, D, BLOCK_M, BLOCK_D)
    pos_logit_sum = pos_s_sum * inv_tau
    total = run_sum
    lse = tl.where(total > 0.0, run_max * inv_tau + tl.log(tl.where(total > 0.0, total, 1.0)), float("-inf"))

    if VARIANT == 0:
        has_pos = n_pos > 0
        inv_n_pos = tl.where(has_pos, 1.0 / tl.maximum(n_pos, 1).to(tl.float32), 0.0)
        # v = (LSE_P − mean_P l) + log1p(S_Neg / S_P): a small loss (the positives far above the
        # negatives) keeps its digits. The tiles sum S = S_P + S_Neg and S_Neg; S_P = S − S_Neg
        # is exact to a few ulps when S_P ≥ S_Neg, where the split is taken; otherwise v ≥ log 2
        # and the plain LSE_all − mean_P l is exact enough
        run_pos = total - run_neg
        use_split = (run_pos >= run_neg) & (run_pos > 1e-30)
        share = tl.where(use_split, run_pos, 1.0)
        split = (run_max * inv_tau + tl.log(share) - pos_logit_sum * inv_n_pos) + _log1p(run_neg / share)
        value = tl.where(has_pos, tl.where(use_split, split, lse - pos_logit_sum * inv_n_pos), 0.0)
        aux = inv_n_pos
    elif VARIANT == 2:
        inv_n_pos = tl.where(n_pos > 0, 1.0 / tl.maximum(n_pos, 1).to(tl.float32), 0.0)
        value = tl.where(total > 0.0, lse, 0.0) - pos_logit_sum * inv_n_pos
        aux = inv_n_pos
    elif VARIANT == 3:
        value = pair_sum
        aux = tl.zeros((BLOCK_M,), tl.float32)
        lse = tl.zeros((BLOCK_M,), tl.float32)
    # ntxent: L_i goes to lse; value and aux come from _ntxent_positive_kernel (the positive
    # pass over label-sorted rows), which reads it back

    if VARIANT != 1:
        tl.store(values_ptr + offs_m, value, mask=in_m)
        tl.store(aux_ptr + offs_m, aux, mask=in_m)
    tl.store(n_pos_ptr + offs_m, n_pos.to(tl.int64), mask=in_m)
    tl.store(lse_ptr + offs_m, lse, mask=in_m)


@triton.jit
def _softmax_weighted_fwd_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, tau_ptr, bias_ptr,
                                 values_ptr, n_pos_ptr, lse_ptr, aux_ptr, bounds_ptr,
                                 M, N, stride_q, stride_r, near_tol, self_offset,
                                 D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr,
                                 PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                 BLOCK_D: tl.constexpr, ROW_BOUNDS: tl.constexpr, MASKED_REFS: tl.constexpr):
    """The pair-weighted variants: one pass, two online LSEs kept apart (a over the positives,
    b over the negatives); lse ← LSE_P a, aux ← LSE_N b (−inf when empty)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    if ROW_BOUNDS:
        pos_below, neg_above = tiles.load_row_bounds(bounds_ptr, offs_m, M)
        slack = tl.load(tau_ptr + 5)  # the bound slack, after the variant's parameters
    inv_tau = 1.0 / tl.load(tau_ptr)
    sp = tl.load(tau_ptr + 1)
    sn = tl.load(tau_ptr + 2)
    shp = tl.load(tau_ptr + 3)
    shn = tl.load(tau_ptr + 4)
    max_p = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    sum_p = tl.zeros((BLOCK_M,), tl.float32)
    max_n = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    sum_n = tl.zeros((BLOCK_M,), tl.float32)
    n_pos = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        logits, t = _logit_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                                near_tol, inv_tau, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset, MASKED_REFS)
        if ROW_BOUNDS:
            pos, neg = tiles.row_bounded(pos, neg, logits, pos_below, neg_above, slack)
        a, b, _, _ = _pair_terms(logits, sp, sn, shp, shn, VARIANT)
        a = tl.where(pos, a, float("-inf"))
        b = tl.where(neg, b, float("-inf"))
        new_p = tl.maximum(max_p, tl.max(a, 1))
        shift_p = tl.where(new_p == float("-inf"), 0.0, new_p)
        sum_p = sum_p * tl.exp(max_p - shift_p) + tl.sum(tl.exp(a - shift_p[:, None]), 1)
        max_p = new_p
        new_n = tl.maximum(max_n, tl.max(b, 1))
        shift_n = tl.where(new_n == float("-inf"), 0.0, new_n)
        sum_n = sum_n * tl.exp(max_n - shift_n) + tl.sum(tl.exp(b - shift_n[:, None]), 1)
        max_n = new_n
        n_pos += tl.sum(pos.to(tl.int32), 1)
    lse_p = tl.where(sum_p > 0.0, max_p + tl.log(tl.where(sum_p > 0.0, sum_p, 1.0)), float("-inf"))
    lse_n = tl.where(sum_n > 0.0, max_n + tl.log(tl.where(sum_n > 0.0, sum_n, 1.0)), float("-inf"))
    value, _, _ = _weighted_value(lse_p, lse_n, sp, sn, VARIANT)
    in_m = offs_m < M
    tl.store(values_ptr + offs_m, value, mask=in_m)
    tl.store(n_pos_ptr + offs_m, n_pos.to(tl.int64), mask=in_m)
    tl.store(lse_ptr + offs_m, lse_p, mask=in_m)
    tl.store(aux_ptr + offs_m, lse_n, mask=in_m)


# --------------------------------------------------------------------------------------------
# Backward: grad_q (rows), grad_r (columns), grad_τ partials
# --------------------------------------------------------------------------------------------
@triton.jit
def _softmax_bwd_q_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, tau_ptr, bias_ptr,
                          grad_ptr, lse_ptr, aux_ptr, rev_grad_ptr, rev_lse_ptr, rev_aux_ptr,
                          grad_q_ptr, tau_part_ptr, bias_part_ptr, bounds_ptr,
                          M, N, stride_q, stride_r, stride_gq, near_tol, self_offset,
                          D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
                          SYMMETRIC: tl.constexpr, TAU_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr,
                          BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
                          ROW_BOUNDS: tl.constexpr, MASKED_REFS: tl.constexpr):
    pid_d = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_do = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)  # the D chunk of grad_q this program writes
    in_m = offs_m < M
    inv_tau = 1.0 / tl.load(tau_ptr)
    bias = tl.load(bias_ptr)
    sp, sn, shp, shn = _variant_params(tau_ptr, VARIANT)
    g, lse, aux, pos_below, neg_above = _anchor_stats(grad_ptr, lse_ptr, aux_ptr, bounds_ptr, offs_m, M, ROW_BOUNDS)
    if ROW_BOUNDS:
        slack = tl.load(tau_ptr + 5)  # the bound slack, after the variant's parameters
    else:
        slack = 0.0

    acc = tl.zeros((BLOCK_M, BLOCK_DO), tl.float32)  # Σ_j c_ij r_j
    coef_sum = tl.zeros((BLOCK_M,), tl.float32)      # Σ_j c_ij (distance kinds)
    tau_part = tl.zeros((BLOCK_M,), tl.float32)      # Σ_j W_ij l_ij
    bias_part = tl.zeros((BLOCK_M,), tl.float32)     # Σ_j W_ij (sigmoid)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        rev_g, rev_lse, rev_aux = _reverse_stats(rev_grad_ptr, rev_lse_ptr, rev_aux_ptr, offs_n, N, SYMMETRIC)
        logits, t, w, c = _grad_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, D,
                                     stride_q, stride_r, near_tol, self_offset, inv_tau, bias, sp, sn, shp, shn,
                                     g, lse, aux, rev_g, rev_lse, rev_aux, pos_below, neg_above, slack,
                                     KIND, VARIANT, PRECISION, SYMMETRIC, BLOCK_M, BLOCK_N, BLOCK_D,
                                     ROW_BOUNDS, MASKED_REFS)
        if TAU_GRAD:
            tau_part += tl.sum(w * logits, 1)
        if BIAS_GRAD:
            bias_part += tl.sum(w, 1)
        r_chunk = tiles.load_rows(r_ptr, offs_n, offs_do, N, D, stride_r)
        acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t, r_chunk, q_ptr, r_ptr, offs_m, n0, offs_do,
                                                  M, N, D, stride_q, stride_r, q_sq_ptr, r_sq_ptr, offs_m, offs_n,
                                                  M, N, near_tol, KIND, PRECISION, BLOCK_N, True)

    tiles.store_row_grad(grad_q_ptr, q_ptr, acc, coef_sum, offs_m, offs_do, M, D, stride_q, stride_gq, KIND)
    if TAU_GRAD:
        if pid_d == 0:
            tl.store(tau_part_ptr + offs_m, tau_part, mask=in_m)
    if BIAS_GRAD:
        if pid_d == 0:
            tl.store(bias_part_ptr + offs_m, bias_part, mask=in_m)


@triton.jit
def _softmax_bwd_r_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, tau_ptr, bias_ptr,
                          grad_ptr, lse_ptr, aux_ptr, rev_grad_ptr, rev_lse_ptr, rev_aux_ptr, grad_r_ptr,
                          bounds_ptr, M, N, stride_q, stride_r, stride_gr, near_tol, self_offset,
                          D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
                          SYMMETRIC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, ROW_BOUNDS: tl.constexpr,
                          MASKED_REFS: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_do = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    inv_tau = 1.0 / tl.load(tau_ptr)
    bias = tl.load(bias_ptr)
    sp, sn, shp, shn = _variant_params(tau_ptr, VARIANT)
    rev_g, rev_lse, rev_aux = _reverse_stats(rev_grad_ptr, rev_lse_ptr, rev_aux_ptr, offs_n, N, SYMMETRIC)
    if ROW_BOUNDS:
        slack = tl.load(tau_ptr + 5)  # the bound slack, after the variant's parameters
    else:
        slack = 0.0

    acc = tl.zeros((BLOCK_N, BLOCK_DO), tl.float32)  # Σ_i c_ij q_i
    coef_sum = tl.zeros((BLOCK_N,), tl.float32)      # Σ_i c_ij (distance kinds)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_m = offs_m < M
        g, lse, aux, pos_below, neg_above = _anchor_stats(grad_ptr, lse_ptr, aux_ptr, bounds_ptr, offs_m, M,
                                                          ROW_BOUNDS)  # this anchor tile's
        logits, t, w, c = _grad_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, D,
                                     stride_q, stride_r, near_tol, self_offset, inv_tau, bias, sp, sn, shp, shn,
                                     g, lse, aux, rev_g, rev_lse, rev_aux, pos_below, neg_above, slack,
                                     KIND, VARIANT, PRECISION, SYMMETRIC, BLOCK_M, BLOCK_N, BLOCK_D,
                                     ROW_BOUNDS, MASKED_REFS)
        q_chunk = tiles.load_rows(q_ptr, offs_m, offs_do, M, D, stride_q)
        acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t, q_chunk, r_ptr, q_ptr, offs_n, m0, offs_do,
                                                  N, M, D, stride_r, stride_q, q_sq_ptr, r_sq_ptr, offs_m, offs_n,
                                                  M, N, near_tol, KIND, PRECISION, BLOCK_M, False)

    tiles.store_row_grad(grad_r_ptr, r_ptr, acc, coef_sum, offs_n, offs_do, N, D, stride_r, stride_gr, KIND)


@triton.jit
def _softmax_bwd_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, tau_ptr, bias_ptr,
                        grad_ptr, lse_ptr, aux_ptr, rev_grad_ptr, rev_lse_ptr, rev_aux_ptr,
                        grad_r_ptr, dq_acc_ptr, dq_coef_ptr, dr_acc_ptr, tau_part_ptr, bias_part_ptr, turn_ptr,
                        bounds_ptr, M, N, stride_q, stride_r, stride_gr, near_tol, self_offset,
                        D: tl.constexpr, KIND: tl.constexpr, VARIANT: tl.constexpr, PRECISION: tl.constexpr,
                        SYMMETRIC: tl.constexpr, TAU_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_DO: tl.constexpr, ROW_BOUNDS: tl.constexpr, MASKED_REFS: tl.constexpr):
    """One backward pass over the tiles, the FlashAttention-2 order: one program per reference
    block, streaming over the anchor blocks in order. Each tile's c is computed once and feeds
    both products (in BLOCK_DO-wide D chunks when D > BLOCK_DO): grad_r += cᵀ·q in registers
    (D > BLOCK_DO: in the program's own float32 rows dr_acc), and the tile's
    share of grad_q (c·r, and Σ_j c_ij, Σ_j W_ij l_ij, Σ_j W_ij) is added to float32 row
    accumulators in a fixed order — program j adds to anchor block i when turn[i] == j, then
    passes the turn to j + 1 — so the sums are deterministic without float atomics (programs
    start in program-id order, so the one waited on is running or done). ROW_BOUNDS: each
    anchor block's bounds restrict its masks, as in the per-chunk kernels."""
    pid = tl.program_id(0)
    n0 = pid * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_do = tl.arange(0, BLOCK_DO)
    inv_tau = 1.0 / tl.load(tau_ptr)
    bias = tl.load(bias_ptr)
    sp, sn, shp, shn = _variant_params(tau_ptr, VARIANT)
    rev_g, rev_lse, rev_aux = _reverse_stats(rev_grad_ptr, rev_lse_ptr, rev_aux_ptr, offs_n, N, SYMMETRIC)
    if ROW_BOUNDS:
        slack = tl.load(tau_ptr + 5)  # the bound slack, after the variant's parameters
    else:
        slack = 0.0
    if D <= BLOCK_DO:
        r_rows = tiles.load_rows(r_ptr, offs_n, offs_do, N, D, stride_r)  # the program's reference rows
    else:
        r_rows = 0.0

    acc_r = tl.zeros((BLOCK_N, BLOCK_DO), tl.float32)  # Σ_i c_ij q_i
    coef_r = tl.zeros((BLOCK_N,), tl.float32)          # Σ_i c_ij (distance kinds)
    for i in range(0, tl.cdiv(M, BLOCK_M)):
        m0 = i * BLOCK_M
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_m = offs_m < M
        g, lse, aux, pos_below, neg_above = _anchor_stats(grad_ptr, lse_ptr, aux_ptr, bounds_ptr, offs_m, M,
                                                          ROW_BOUNDS)  # this anchor block's
        logits, t, w, c = _grad_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, D,
                                     stride_q, stride_r, near_tol, self_offset, inv_tau, bias, sp, sn, shp, shn,
                                     g, lse, aux, rev_g, rev_lse, rev_aux, pos_below, neg_above, slack,
                                     KIND, VARIANT, PRECISION, SYMMETRIC, BLOCK_M, BLOCK_N, BLOCK_D,
                                     ROW_BOUNDS, MASKED_REFS)
        rows64 = offs_m.to(tl.int64)
        if D <= BLOCK_DO:  # whole rows: grad_r in registers, the tile's grad_q share made before the wait
            q_rows = tiles.load_rows(q_ptr, offs_m, offs_do, M, D, stride_q)
            acc_r, coef_r = tiles.accumulate_row_grad(acc_r, coef_r, c, t, q_rows, r_ptr, q_ptr, offs_n, m0,
                                                      offs_do, N, M, D, stride_r, stride_q, q_sq_ptr, r_sq_ptr,
                                                      offs_m, offs_n, M, N, near_tol, KIND, PRECISION, BLOCK_M,
                                                      False)
            dq, coef_q = tiles.accumulate_row_grad(tl.zeros((BLOCK_M, BLOCK_DO), tl.float32),
                                                   tl.zeros((BLOCK_M,), tl.float32), c, t, r_rows, q_ptr, r_ptr,
                                                   offs_m, n0, offs_do, M, N, D, stride_q, stride_r, q_sq_ptr,
                                                   r_sq_ptr, offs_m, offs_n, M, N, near_tol, KIND, PRECISION,
                                                   BLOCK_N, True)
            _wait_turn(turn_ptr + i, pid)
            _add_rows(dq_acc_ptr, rows64, offs_do, in_m, D, dq)
        else:
            # D in BLOCK_DO chunks, the tile still computed once: grad_r's share goes to this
            # program's own float32 rows (dr_acc), grad_q's chunk by chunk in the turn
            coef_q = tl.zeros((BLOCK_M,), tl.float32)
            for d0 in range(0, D, BLOCK_DO):
                offs_d = d0 + offs_do
                q_rows = tiles.load_rows(q_ptr, offs_m, offs_d, M, D, stride_q)
                dr, coef_new = tiles.accumulate_row_grad(tl.zeros((BLOCK_N, BLOCK_DO), tl.float32), coef_r, c, t,
                                                         q_rows, r_ptr, q_ptr, offs_n, m0, offs_d, N, M, D,
                                                         stride_r, stride_q, q_sq_ptr, r_sq_ptr, offs_m, offs_n,
                                                         M, N, near_tol, KIND, PRECISION, BLOCK_M, False)
                _add_rows(dr_acc_ptr, offs_n.to(tl.int64), offs_d, offs_n < N, D, dr)
                if d0 == 0:
                    coef_r = coef_new
            _wait_turn(turn_ptr + i, pid)
            for d0 in range(0, D, BLOCK_DO):
                offs_d = d0 + offs_do
                r_chunk = tiles.load_rows(r_ptr, offs_n, offs_d, N, D, stride_r)
                dq, coef_new = tiles.accumulate_row_grad(tl.zeros((BLOCK_M, BLOCK_DO), tl.float32), coef_q, c, t,
                                                         r_chunk, q_ptr, r_ptr, offs_m, n0, offs_d, M, N, D,
                                                         stride_q, stride_r, q_sq_ptr, r_sq_ptr, offs_m, offs_n,
                                                         M, N, near_tol, KIND, PRECISION, BLOCK_N, True)
                _add_rows(dq_acc_ptr, rows64, offs_d, in_m, D, dq)
                if d0 == 0:
                    coef_q = coef_new
        # the rest of this tile's share of the anchor rows, still in the turn
        if KIND != 0:
            _add_entries(dq_coef_ptr + rows64, in_m, coef_q)
        if TAU_GRAD:
            _add_entries(tau_part_ptr + rows64, in_m, tl.sum(w * logits, 1))
        if BIAS_GRAD:
            _add_entries(bias_part_ptr + rows64, in_m, tl.sum(w, 1))
        tl.debug_barrier()
        tl.atomic_xchg(turn_ptr + i, pid + 1, sem="release")

    if D <= BLOCK_DO:
        tiles.store_row_grad(grad_r_ptr, r_ptr, acc_r, coef_r, offs_n, offs_do, N, D, stride_r, stride_gr, KIND)
    else:
        for d0 in tl.static_range(0, D, BLOCK_DO):
            offs_d = d0 + offs_do
            acc = tl.load(dr_acc_ptr + offs_n.to(tl.int64)[:, None] * D + offs_d[None, :],
                          mask=(offs_n < N)[:, None] & (offs_d < D)[None, :], other=0.0)
            tiles.store_row_grad(grad_r_ptr, r_ptr, acc, coef_r, offs_n, offs_d, N, D, stride_r, stride_gr, KIND)


@triton.jit
def _wait_turn(turn_ptr, pid):
    """Returns once *turn_ptr == pid (an acquire load by one thread, then a block barrier)."""
    turn = tl.atomic_add(turn_ptr, 0, sem="acquire")
    while turn != pid:
        turn = tl.atomic_add(turn_ptr, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _add_entries(ptrs, mask, values):
    """*ptrs += values where mask (float32; read past the L1 cache, see _add_rows)."""
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg") + values, mask=mask)


@triton.jit
def _add_rows(ptr, rows64, offs_d, row_mask, width, values):
    """ptr[rows, offs_d] += values for a row-major float32 matrix of `width` columns (columns
    past it untouched); read past the L1 cache (.cg): written by another program before."""
    ptrs = ptr + rows64[:, None] * width + offs_d[None, :]
    mask = row_mask[:, None] & (offs_d[None, :] < width)
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg") + values, mask=mask)


# --------------------------------------------------------------------------------------------
# Block sizes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blocks:
    """Tile sizes and launch options. *_d: the D step of the similarity tile; block_do: the D
    chunk of the gradient products (the per-chunk kernels: grid axis 1 = cdiv(D, block_do))."""

    fwd_m: int
    fwd_n: int
    fwd_d: int
    bwd_m: int
    bwd_n: int
    bwd_d: int
    block_do: int
    num_warps: int = 8
    num_stages: int = 2
    one_pass: bool = True  # the one-pass backward (else the two per-chunk kernels, bwd_q and bwd_r)


def default_blocks(D: int, dtype: torch.dtype, device: torch.device, variant: str = "supcon") -> Blocks:
    if device.type != "cuda":
        # interpreter: small tiles, several per test shape so ragged edges are exercised
        # (forward D step up to 64: D ≤ 64 takes the one-step product, wider D the D loop)
        return Blocks(fwd_m=16, fwd_n=16, fwd_d=_host.pow2(D, 16, 64), bwd_m=16, bwd_n=16, bwd_d=16, block_do=32,
                      num_warps=4)
    # Not timed on hardware yet. Chosen so that the sm_90 builds (triton 3.9, compiled without a
    # GPU) do not spill registers at D = 128 and D = 1024 for 16-bit inputs; float32 spills a few
    # bytes. block_do: the width of the one-pass backward's gradient products (whole rows up to
    # D = 128, kept in registers; wider D in 128-wide chunks), as wide as the accumulator
    # (bwd_m × block_do, fp32) allows without spills.
    block_do = _host.pow2(D, 16, 128)
    if dtype == torch.float32:
        return Blocks(fwd_m=64, fwd_n=64, fwd_d=32, bwd_m=64, bwd_n=64, bwd_d=32, block_do=block_do)
    if D <= 128:
        return Blocks(fwd_m=128, fwd_n=64, fwd_d=_host.pow2(D, 16, 128), bwd_m=64, bwd_n=64, bwd_d=_host.pow2(D, 16, 64),
                      block_do=block_do)
    return Blocks(fwd_m=64, fwd_n=64, fwd_d=64, bwd_m=64, bwd_n=64, bwd_d=64, block_do=block_do)


# --------------------------------------------------------------------------------------------
# Registered ops "fastcontrast::softmax_fwd" / "_bwd" (kernels/_host.py)
# --------------------------------------------------------------------------------------------

def _fwd_impl(q: torch.Tensor, r: torch.Tensor, q_labels: torch.Tensor, r_labels: torch.Tensor,
              temperature: torch.Tensor, bias: torch.Tensor, bounds: torch.Tensor, kind: int, variant: int,
              self_offset: int, precision: str, near_tol: float, row_bounds: bool, masked_refs: bool, block_m: int,
              block_n: int, block_d: int, num_warps: int, num_stages: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """masked_refs: r_labels may hold −1 (an absent reference column) anywhere, so every
    forward tile adds the column bias (else only the edge tiles) and the masks compare labels,
    not column indices (as in every launch's MASKED_REFS)."""
    M, D = q.shape
    N = r.shape[0]
    values = torch.empty((M,), dtype=torch.float32, device=q.device)
    n_pos = torch.empty((M,), dtype=torch.int64, device=q.device)
    lse = torch.empty((M,), dtype=torch.float32, device=q.device)
    aux = torch.empty((M,), dtype=torch.float32, device=q.device)
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    launch = dict(D=D, KIND=kind, VARIANT=variant, PRECISION=precision,
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps, num_stages=num_stages)
    grid = (triton.cdiv(M, block_m),)
    if variant >= WEIGHTED:
        _host.launchable(_softmax_weighted_fwd_kernel)[grid](
            q, r, q_sq, r_sq, q_labels, r_labels, temperature, bias, values, n_pos, lse, aux, bounds,
            M, N, q.stride(0), r.stride(0), near_tol, self_offset, ROW_BOUNDS=row_bounds, MASKED_REFS=masked_refs,
            **launch)
    else:
        r_count = _host.label_counts(r_labels, M + N)
        label_sum, label_start = _label_sums(r, r_labels, r_count, kind, variant)
        _host.launchable(_softmax_fwd_kernel)[grid](
            q, r, q_sq, r_sq, q_labels, r_labels, r_count, label_sum, label_start, temperature, bias, values, n_pos,
            lse, aux,
            M, N, q.stride(0), r.stride(0), near_tol, self_offset, MASKED_REFS=masked_refs, **launch)
        if variant == VARIANT_CODES["ntxent"]:
            _ntxent_positive_pass(q, r, q_sq, r_sq, q_labels, r_labels, r_count, temperature, lse, values, aux,
                                  kind, self_offset, precision, near_tol, block_m, block_n, block_d, num_warps,
                                  num_stages)
    return values, n_pos, lse, aux


def _label_order(r_labels: torch.Tensor, r_count: torch.Tensor):
    """(order (N,) int64, label_start (M + N,) int32): the reference rows sorted by label (stable;
    masked-out references, id −1, after every label) and where label c's rows begin there."""
    key = torch.where(r_labels >= 0, r_labels, r_count.numel())  # −1 last
    order = torch.argsort(key, stable=True)
    label_start = (torch.cumsum(r_count, 0, dtype=torch.int32) - r_count).contiguous()
    return order, label_start


def _ntxent_positive_pass(q, r, q_sq, r_sq, q_labels, r_labels, r_count, temperature, lse, values, aux, kind,
                          self_offset, precision, near_tol, block_m, block_n, block_d, num_warps, num_stages):
    """values and aux of NT-Xent from lse (L_i): anchors and references sorted by label once
    per call (stable argsorts, row copies in that order: O((M + N)·D)), each self pair's column
    mapped into the sorted references (−1: none), then _ntxent_positive_kernel over the
    blocks of sorted anchors. No host sync."""
    M, D = q.shape
    N = r.shape[0]
    r_order, label_start = _label_order(r_labels, r_count)
    q_order = torch.argsort(q_labels, stable=True)
    self_cols = torch.full((M,), -1, dtype=torch.int32, device=q.device)
    if self_offset >= 0 and N > 0:
        sorted_col = torch.empty((N,), dtype=torch.int32, device=q.device)
        sorted_col[r_order] = torch.arange(N, dtype=torch.int32, device=q.device)
        col = q_order + self_offset
        self_cols = torch.where(col < N, sorted_col[col.clamp(max=N - 1)], self_cols)

    # the sorted references and their labels run block_n rows past N (zeros, label −2)
    r_s = torch.cat([r.index_select(0, r_order), r.new_zeros((block_n, D))])
    r_lab_s = torch.cat([r_labels.index_select(0, r_order), r_labels.new_full((block_n,), -2)])
    q_s = q.index_select(0, q_order).contiguous()
    if kind != tiles.KIND_CODES["dot"]:  # else placeholders
        q_sq, r_sq = q_sq.index_select(0, q_order), r_sq.index_select(0, r_order)
    _host.launchable(_ntxent_positive_kernel)[(triton.cdiv(M, block_m),)](
        q_s, r_s, q_sq, r_sq, q_labels.index_select(0, q_order).contiguous(), r_lab_s, q_order.to(torch.int32),
        self_cols, label_start, r_count,
        temperature, lse, values, aux, M, N, q_s.stride(0), r_s.stride(0), near_tol,
        D=D, KIND=kind, PRECISION=precision, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=num_warps, num_stages=num_stages)


def _label_sums(r: torch.Tensor, r_labels: torch.Tensor, r_count: torch.Tensor, kind: int, variant: int):
    """(label_sum (N, D) float32, label_start (M + N,) int32): the reference rows of each label
    summed (row label_start[c] holds label c's sum), which the dot-kind supcon and dcl forwards
    dot with each anchor for Σ_p s_ip; placeholders for the other variants and kinds. Masked-out
    references (id −1, which r_count leaves out) sort after every label and are summed nowhere."""
    if kind != tiles.KIND_CODES["dot"] or variant not in (VARIANT_CODES["supcon"], VARIANT_CODES["dcl"]):
        return r.new_empty((1,), dtype=torch.float32), r_count.new_zeros((1,))
    N, D = r.shape
    order, label_start = _label_order(r_labels, r_count)
    order = order.to(torch.int32)
    label_sum = torch.empty((max(N, 1), D), dtype=torch.float32, device=r.device)
    block_d = _host.pow2(D, 16, 128)
    grid = (r_count.numel(), triton.cdiv(D, block_d))
    _host.launchable(_label_sums_kernel)[grid](r, order, label_start, r_count, label_sum, D, r.stride(0),
                                               BLOCK_R=16, BLOCK_D=block_d)
    return label_sum, label_start


def _bwd_impl(grad_values: torch.Tensor, rev_grad_values: torch.Tensor, q: torch.Tensor, r: torch.Tensor,
              q_labels: torch.Tensor, r_labels: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor,
              lse: torch.Tensor, aux: torch.Tensor, rev_lse: torch.Tensor, rev_aux: torch.Tensor,
              bounds: torch.Tensor, kind: int, variant: int, self_offset: int, precision: str, near_tol: float,
              symmetric: bool, tau_grad: bool, bias_grad: bool, row_bounds: bool, masked_refs: bool, block_m: int,
              block_n: int, block_d: int, block_do: int, num_warps: int, num_stages: int, one_pass: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """rev_*: the reverse direction's (references as anchors) gradient and row statistics, read
    only when `symmetric`; otherwise any float32 tensors (never dereferenced). one_pass: the
    one-pass kernel (each tile once), else the two per-D-chunk kernels."""
    M, D = q.shape
    N = r.shape[0]
    grad_q = torch.empty_like(q)
    grad_r = torch.empty_like(r)
    tau_part = torch.zeros((M if tau_grad else 0,), dtype=torch.float32, device=q.device)
    bias_part = torch.zeros((M if bias_grad else 0,), dtype=torch.float32, device=q.device)
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    d_chunks = triton.cdiv(D, block_do)
    if one_pass:
        dq_acc = torch.zeros((M, D), dtype=torch.float32, device=q.device)
        dq_coef = torch.zeros((M if kind != tiles.KIND_CODES["dot"] else 0,), dtype=torch.float32, device=q.device)
        dr_acc = torch.zeros((N if d_chunks > 1 else 0, D), dtype=torch.float32, device=q.device)
        turns = torch.zeros((triton.cdiv(M, block_m),), dtype=torch.int32, device=q.device)
        _host.launchable(_softmax_bwd_kernel)[(triton.cdiv(N, block_n),)](
            q, r, q_sq, r_sq, q_labels, r_labels, temperature, bias, grad_values, lse, aux,
            rev_grad_values, rev_lse, rev_aux, grad_r, dq_acc, dq_coef, dr_acc, tau_part, bias_part, turns,
            bounds, M, N, q.stride(0), r.stride(0), grad_r.stride(0), near_tol, self_offset,
            D=D, KIND=kind, VARIANT=variant, PRECISION=precision, SYMMETRIC=symmetric, TAU_GRAD=tau_grad,
            BIAS_GRAD=bias_grad, ROW_BOUNDS=row_bounds, MASKED_REFS=masked_refs, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_D=block_d, BLOCK_DO=block_do,
            num_warps=num_warps, num_stages=num_stages)
        if kind != tiles.KIND_CODES["dot"]:  # tiles.store_row_grad's formula for the anchor rows
            dq_acc = 2.0 * (dq_coef[:, None] * q.float() - dq_acc)
        return dq_acc.to(q.dtype), grad_r, tau_part, bias_part
    kernel_q = _host.launchable(_softmax_bwd_q_kernel)
    kernel_q[(triton.cdiv(M, block_m), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, temperature, bias, grad_values, lse, aux,
        rev_grad_values, rev_lse, rev_aux, grad_q, tau_part, bias_part, bounds,
        M, N, q.stride(0), r.stride(0), grad_q.stride(0), near_tol, self_offset,
        D=D, KIND=kind, VARIANT=variant, PRECISION=precision, SYMMETRIC=symmetric, TAU_GRAD=tau_grad,
        BIAS_GRAD=bias_grad, ROW_BOUNDS=row_bounds, MASKED_REFS=masked_refs,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DO=block_do,
        num_warps=num_warps, num_stages=num_stages)
    kernel_r = _host.launchable(_softmax_bwd_r_kernel)
    kernel_r[(triton.cdiv(N, block_n), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, temperature, bias, grad_values, lse, aux,
        rev_grad_values, rev_lse, rev_aux, grad_r, bounds,
        M, N, q.stride(0), r.stride(0), grad_r.stride(0), near_tol, self_offset,
        D=D, KIND=kind, VARIANT=variant, PRECISION=precision, SYMMETRIC=symmetric, ROW_BOUNDS=row_bounds,
        MASKED_REFS=masked_refs,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DO=block_do,
        num_warps=num_warps, num_stages=num_stages)
    return grad_q, grad_r, tau_part, bias_part


def _fwd_fake(q, r, q_labels, r_labels, temperature, bias, bounds, kind, variant, self_offset, precision, near_tol,
              row_bounds, masked_refs, block_m, block_n, block_d, num_warps, num_stages):
    M = q.shape[0]
    f32 = dict(dtype=torch.float32, device=q.device)
    return (q.new_empty((M,), **f32), q.new_empty((M,), dtype=torch.int64, device=q.device),
            q.new_empty((M,), **f32), q.new_empty((M,), **f32))


def _bwd_fake(grad_values, rev_grad_values, q, r, q_labels, r_labels, temperature, bias, lse, aux, rev_lse,
              rev_aux, bounds, kind, variant, self_offset, precision, near_tol, symmetric, tau_grad, bias_grad,
              row_bounds, masked_refs, block_m, block_n, block_d, block_do, num_warps, num_stages, one_pass):
    return (torch.empty_like(q), torch.empty_like(r),
            q.new_empty((q.shape[0] if tau_grad else 0,), dtype=torch.float32),
            q.new_empty((q.shape[0] if bias_grad else 0,), dtype=torch.float32))


softmax_fwd_op, softmax_bwd_op = _host.register_ops("softmax", _fwd_impl, _bwd_impl, _fwd_fake, _bwd_fake)


# --------------------------------------------------------------------------------------------
# The seam (fastcontrast/configs.py)
# --------------------------------------------------------------------------------------------
def _codes(cfg: SoftmaxConfig):
    return _host.metric_code(cfg), _host.code(cfg, "variant", VARIANT_CODES)


def _prepare(q, r, q_labels, r_labels, temperature, kind, masked_refs=False):
    """Kernel inputs in their frame (_host.frame) and the temperature in frame units: the
    kernels' logits −t'/τ' with τ' = τ/unit are the true −d/τ. -> (..., τ', s). masked_refs
    (SoftmaxConfig): references with a negative label get id −1, which the masks leave out."""
    absent = r_labels < 0 if masked_refs else None
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "softmax")
    if absent is not None:
        r_labels = torch.where(absent, -1, r_labels)
    q, r, s, unit = _host.frame(q, r, kind)
    tau = torch.as_tensor(temperature).detach().to(device=q.device, dtype=torch.float32).reshape(())
    return q, r, q_labels, r_labels, tau / unit, s


def _bias_arg(cfg: SoftmaxConfig, bias, device) -> torch.Tensor:
    """The logit bias as the kernels read it: a float32 scalar tensor (0 unless "sigmoid")."""
    if cfg.variant == "sigmoid":
        if bias is None:
            raise ValueError("the sigmoid variant needs a bias tensor")
        return torch.as_tensor(bias).detach().to(device=device, dtype=torch.float32).reshape(())
    return torch.zeros((), dtype=torch.float32, device=device)


def _with_params(tau, cfg: SoftmaxConfig):
    """The pair-weighted variants read (τ, scale_pos, scale_neg, shift_pos, shift_neg,
    bound_slack) from the temperature tensor; the other variants the 0-dim τ alone."""
    if VARIANT_CODES[cfg.variant] < WEIGHTED:
        return tau
    # fills, not a copy of host data (which synchronizes a CUDA stream)
    params = [torch.full((1,), v, dtype=torch.float32, device=tau.device)
              for v in (cfg.scale_pos, cfg.scale_neg, cfg.shift_pos, cfg.shift_neg, cfg.bound_slack)]
    return torch.cat([tau.reshape(1), *params])


def _bounds_arg(cfg: SoftmaxConfig, bounds, device) -> torch.Tensor:
    """The row bounds as the kernels read them: (B, 2) contiguous float32 (empty without)."""
    if not cfg.row_bounds:
        return torch.empty((0,), dtype=torch.float32, device=device)
    if bounds is None or VARIANT_CODES[cfg.variant] < WEIGHTED:
        raise ValueError("row bounds need a bounds tensor and a pair-weighted variant (ms, circle, glifted)")
    return bounds.detach().to(device=device, dtype=torch.float32).contiguous()


def forward(q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, blocks: Blocks | None = None, bias=None,
            bounds=None):
    """-> (values (B,) float32, n_pos (B,) int64, saved = (row_lse, row_aux)). bounds: the
    (B, 2) row bounds with cfg.row_bounds."""
    kind, variant = _codes(cfg)
    q, r, q_labels, r_labels, tau, _ = _prepare(q, r, q_labels, r_labels, temperature, kind, cfg.masked_refs)
    b = blocks or default_blocks(q.shape[1], q.dtype, q.device, cfg.variant)
    tau = _with_params(tau, cfg)
    values, n_pos, lse, aux = softmax_fwd_op(
        q, r, q_labels, r_labels, tau, _bias_arg(cfg, bias, q.device), _bounds_arg(cfg, bounds, q.device), kind,
        variant, int(cfg.self_offset), cfg.precision, metrics.near_tolerance(q.dtype, cfg.precision),
        bool(cfg.row_bounds), bool(cfg.masked_refs), b.fwd_m, b.fwd_n, b.fwd_d, b.num_warps, b.num_stages)
    return values, n_pos, (lse, aux)


def _backward(grad_values, rev_grad_values, q, r, q_labels, r_labels, cfg, temperature, lse, aux, rev_lse,
              rev_aux, symmetric, needs_temperature_grad, blocks, bias=None, needs_bias_grad=False, bounds=None):
    kind, variant = _codes(cfg)
    q_in_dtype, r_in_dtype = q.dtype, r.dtype
    true_tau = torch.as_tensor(temperature).detach().to(device=q.device, dtype=torch.float32).reshape(())
    q, r, q_labels, r_labels, tau, s = _prepare(q, r, q_labels, r_labels, temperature, kind, cfg.masked_refs)
    b = blocks or default_blocks(q.shape[1], q.dtype, q.device, cfg.variant)
    grad_values = _host.upstream_grad(grad_values, q.device)
    rev_grad_values = _host.upstream_grad(rev_grad_values, q.device)
    tau = _with_params(tau, cfg)
    grad_q, grad_r, tau_part, bias_part = softmax_bwd_op(
        grad_values, rev_grad_values, q, r, q_labels, r_labels, tau, _bias_arg(cfg, bias, q.device), lse, aux,
        rev_lse, rev_aux, _bounds_arg(cfg, bounds, q.device), kind, variant, int(cfg.self_offset), cfg.precision,
        metrics.near_tolerance(q.dtype, cfg.precision), symmetric, bool(needs_temperature_grad),
        bool(needs_bias_grad and cfg.variant == "sigmoid"), bool(cfg.row_bounds), bool(cfg.masked_refs), b.bwd_m, b.bwd_n, b.bwd_d,
        b.block_do, b.num_warps, b.num_stages, b.one_pass)
    grad_temperature = None
    if needs_temperature_grad:
        t = torch.as_tensor(temperature)
        grad_temperature = (-tau_part.sum() / true_tau).to(t.dtype).reshape(t.shape)
    grads = ((grad_q.float() / s).to(q_in_dtype), (grad_r.float() / s).to(r_in_dtype), grad_temperature)
    if bias is None:
        return grads
    grad_bias = None
    if needs_bias_grad:
        bt = torch.as_tensor(bias)
        grad_bias = bias_part.sum().to(bt.dtype).reshape(bt.shape)
    return (*grads, grad_bias)


def backward(grad_values, q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, saved,
             needs_temperature_grad: bool, blocks: Blocks | None = None, bias=None, needs_bias_grad: bool = False,
             bounds=None):
    """-> (grad_q like q, grad_r like r, grad_temperature (0-dim, temperature's dtype) or None),
    and with a bias (the "sigmoid" variant) also grad_bias (0-dim, bias's dtype) or None."""
    lse, aux = saved
    return _backward(grad_values, grad_values, q, r, q_labels, r_labels, cfg, temperature, lse, aux, lse, aux,
                     False, needs_temperature_grad, blocks, bias, needs_bias_grad, bounds)


# --------------------------------------------------------------------------------------------
# Both directions (InfoNCE/CLIP symmetric): anchors q against references r, and anchors r
# against references q, over the same logit matrix and the same pair masks. The forward runs
# the row kernel once per direction (the reverse one with the roles swapped); the backward adds
# both directions' W_ij on each tile, so grad_q, grad_r and grad_τ take ONE backward pass instead of
# one per direction.
# --------------------------------------------------------------------------------------------
def _reverse_config(cfg: SoftmaxConfig) -> SoftmaxConfig:
    if cfg.self_offset > 0:
        raise ValueError("the symmetric kernels take self_offset 0 or -1 (the reverse direction of "
                         f"self_offset={cfg.self_offset} is a negative offset, which the masks cannot express)")
    return cfg


def forward_symmetric(q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, blocks: Blocks | None = None):
    """-> (values_q (B,), n_pos_q (B,), values_r (N,), n_pos_r (N,), saved)."""
    rev_cfg = _reverse_config(cfg)
    values_q, n_pos_q, (lse_q, aux_q) = forward(q, r, q_labels, r_labels, cfg, temperature, blocks)
    values_r, n_pos_r, (lse_r, aux_r) = forward(r, q, r_labels, q_labels, rev_cfg, temperature, blocks)
    return values_q, n_pos_q, values_r, n_pos_r, (lse_q, aux_q, lse_r, aux_r)


def backward_symmetric(grad_values_q, grad_values_r, q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature,
                       saved, needs_temperature_grad: bool, blocks: Blocks | None = None):
    """-> (grad_q, grad_r, grad_temperature or None) of Σ_i g_i v_i + Σ_j g'_j v'_j."""
    _reverse_config(cfg)
    lse_q, aux_q, lse_r, aux_r = saved
    return _backward(grad_values_q, grad_values_r, q, r, q_labels, r_labels, cfg, temperature, lse_q, aux_q,
                     lse_r, aux_r, True, needs_temperature_grad, blocks)
