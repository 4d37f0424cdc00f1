"""Triplet family: Triton kernels and their launchers (the seam of configs.TripletConfig).

Notation (per anchor a): d = distance (d = −s when cfg.negate), positives P_a (same label,
not the self pair), negatives N_a (other label), x = d_ap, v = d_an, m = margin,
mm = miner_margin, h = x − v + m, term relu(h) (softplus(h) when smooth).
Mining filters on t = v − x: all t ≤ mm, hard t ≤ mm and t ≤ 0, semihard 0 < t ≤ mm,
easy t > mm; batch_all keeps every triplet.

The anchors are processed in chunks of C rows; per chunk at most a few C×N buffers exist
(never B×N, never B×N×N). The per-anchor kernels run one program per (anchor, block of
columns or sorted positives) and write partial sums that the host adds up per anchor in a
fixed order, so every launch at B = 65536 has thousands of programs (deterministic, no atomics):

1. `_distance_rows_kernel` writes the chunk's rows twice: neg_key = d on negatives, +inf
   elsewhere, and pos_key = d on positives, +inf elsewhere (distance_tile + pair_masks).
2. torch.sort of the rows each step needs (a segmented sort per row; sorted path, forward
   and backward: one sort of integer keys that puts each row's sorted negatives and then its
   sorted positives side by side (`_merged_sort`), instead of two sorts; semihard_tfa: both,
   with indices; scan path: positives only) and float64 prefix sums of the sorted negatives
   S[k] = Σ_{i<k} v_i. When the upstream gradient is one number for every anchor (a "mean"
   or "sum" reduction; the caller says so) the sorted path's forward also computes the
   gradients for dL/dvalues = 1 from the same tiles and sort, and backward only scales them.
3. Sorted path (batch_all and filters, relu, no swap), O(B·N log N):
   for a positive x every condition bounds v from one side, so the kept and active
   negatives are a contiguous run [lo, U) of the sorted row, found by a fixed-length
   binary search (`_count_below`); the run gives
       Σ_n term = c·(x + m) − (S[U] − S[lo]),  c = U − lo,   ∂/∂x = c,
   and ∂/∂v = −#{positives x for which v is kept and active}, the same search run on the
   anchor's sorted positives (each condition bounds x from one side). Both directions
   evaluate the same float expressions (v ≤ fl(x + mm), v < fl(x + m), v ≤ x) so they agree
   on every triplet. Label grouping (`_grouping`, once per call, sync-free): a stable argsort
   of the reference labels r_perm and per anchor the slots [start, end) of r_perm with its
   label (torch.searchsorted), so its positives are one contiguous slot range. The forward
   kernel reads the P positives from the merged sort's row, ascending (so the lanes of a block
   search along nearly the same path), not N columns; the weights kernel walks the row in
   slot order, so a block of lanes is all negatives or all positives except at the range's
   two ends, and each side's searches run only in blocks holding that side (a block-uniform
   branch): about one set of searches per lane instead of both. The bounds are still
   fixed-length binary searches, not a merge sweep: a sweep needs the positives sorted per
   anchor in a fixed-width buffer (P_max is data-dependent, a host sync to size) or a blocked
   merge path; the searches are independent per lane, so they keep every launch full.
   cfg.term_keep = (low, high) (ThresholdReducer: only low < term < high counts) is two more
   one-sided bounds of the same kind, v < fl(x + (m − low)) and v > fl(x + (m − high)), so the kept terms stay one contiguous run (KEEP, `_keep_code`).
4. Scan path (smooth or swap): per anchor, positives × negatives in BLOCK_P×BLOCK_N tiles,
   O(B·P·N) (O(B·P·N·D) with swap: d_pn = d(r_p, r_n) is a distance tile of r with itself).
   swap: v → min(v, d_pn) in the term; on an exact tie the gradient is split in half.
   The d_pn gradients go to reference rows by `_swap_pair_grad_kernel`, which owns a block
   of rows and loops over the chunk's anchors (deterministic, no atomics).
5. semihard_tfa (TF Addons / FaceNet): n* = first negative of the sorted row above x
   (a stable sort puts the lowest index first among equal values), else the farthest
   negative (first of the largest values); no negative at all: v = 0, no gradient.
   A positive's choice k(x) = #{v ≤ x} is monotone in x, so the positives choosing the
   negative at sorted position k form a contiguous run of the sorted positives; backward
   sums their slopes with float64 prefix sums (`_tfa_weights_kernel`). swap: d(r_p, r_n*)
   per positive pair (diagonal of a gathered distance tile), its gradient gathered per
   reference row by `_segment_grad_kernel`.
6. batch_hard: streaming masked max over positives / min over negatives per anchor over
   distance tiles (lowest index on ties), no C×N buffer; backward touches only the
   selected rows, gathered per target row by `_segment_grad_kernel` (deterministic).

Gradients of the sorted, scan and TFA paths come out as a C×N coefficient matrix
E = ∂L/∂(dot) (dot) or ∂L/∂(squared distance) (euclidean kinds, zero-safe 1/(2d)), mapped to
rows by metrics.pairwise_backward (matmuls, deterministic). Nothing uses float atomics.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from fastcontrast import metrics
from fastcontrast.configs import TripletConfig

from . import _host, tiles

MODE_CODES = {"batch_all": 0, "all": 1, "hard": 2, "semihard": 3, "easy": 4, "semihard_tfa": 5, "batch_hard": 6}
FALLBACK_CODES = {"drop": 0, "tfa": 1}

# Elements of one C×N buffer: C = max(1, CHUNK_ELEMENTS // N) anchors per chunk. About 70
# bytes are live per element at the peak (two keys, two sorted copies with int64 sort
# indices, float64 prefix sums, sort scratch): 1 << 19 elements ≈ 37 MiB, so semi-hard at
# B = 2048 stays under 64 MiB. A chunk has at least MIN_CHUNK_ROWS anchors as long as that
# stays within MAX_CHUNK_ELEMENTS and B / 32 anchors (N = 65536: 256 anchors, 2^24 elements,
# ≈ 1.2 GiB; at most 1/32 of the batch keeps ~70 bytes per chunk element below one B×N float32
# matrix), so huge batches take B / 256 chunks, not thousands of tiny ones.
CHUNK_ELEMENTS = 1 << 19
MIN_CHUNK_ROWS = 256
MAX_CHUNK_ELEMENTS = 1 << 24
# The per-anchor kernels split each anchor's row into blocks of WINDOW_COLS columns (window
# forward) or POSITIVE_COLS sorted positives (scan rows, TFA rows: only the first ⌈P / cols⌉
# blocks have work), one program per (anchor, block), so a launch has C·⌈N / cols⌉ programs;
# the per-block partial sums are added on the host in a fixed order (deterministic, no
# atomics). Multiples of the lanes (SEARCH_BLOCK, SCAN_BLOCK).
WINDOW_COLS = 4096
POSITIVE_COLS = 256
SEARCH_BLOCK = 128     # lanes of the search / coefficient kernels
SCAN_BLOCK = 32        # BLOCK_P = BLOCK_N of the scan tiles (tl.dot needs >= 16)
INF = float("inf")
JIT_INF = tl.constexpr(float("inf"))  # kernels may read module globals only as constexpr


# --------------------------------------------------------------------------------------------
# Small jit helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _count_below(row_ptr, K, t, c, STRICT: tl.constexpr, LOG_N: tl.constexpr):
    """#{k < K : s_k + c < t} (STRICT) or #{k < K : s_k + c ≤ t} for an ascending row s.
    A fixed LOG_N-step binary search (LOG_N = bit length of the row length); t per lane."""
    lo = tl.zeros_like(t).to(tl.int32)
    hi = lo + K
    for _ in tl.static_range(LOG_N):
        open_ = lo < hi
        mid = (lo + hi) // 2
        s = tl.load(row_ptr + mid, mask=open_, other=0.0) + c
        if STRICT:
            go = s < t
        else:
            go = s <= t
        lo = tl.where(open_ & go, mid + 1, lo)
        hi = tl.where(open_ & (~go), mid, hi)
    return lo


@triton.jit
def _term(h, SMOOTH: tl.constexpr):
    """(term, d term / dh): relu(h) and its step, or softplus(h) and sigmoid(h), in fp32.
    softplus = max(h, 0) + log1p(e^{−|h|}), log1p by its series below 1e-4 so tiny terms stay > 0."""
    if SMOOTH:
        y = tl.exp(-tl.abs(h))
        log1p = tl.where(y < 1e-4, y * (1.0 - 0.5 * y), tl.log(1.0 + y))
        term = tl.maximum(h, 0.0) + log1p
        slope = tl.where(h >= 0, 1.0 / (1.0 + y), y / (1.0 + y))
    else:
        term = tl.maximum(h, 0.0)
        slope = tl.where(h > 0, 1.0, 0.0)
    return term, slope


@triton.jit
def _kept(x, v, mm, MODE: tl.constexpr):
    """Mining filter on t = v − x, written as comparisons of v with fl(x + mm) and x."""
    if MODE == 1:
        keep = v <= x + mm
    elif MODE == 2:
        keep = (v <= x + mm) & (v <= x)
    elif MODE == 3:
        keep = (v > x) & (v <= x + mm)
    elif MODE == 4:
        keep = v > x + mm
    else:
        keep = (v == v) | (x == x)
    return keep


@triton.jit
def _tile_coef(w, d, KIND: tl.constexpr, NEGATE: tl.constexpr):
    """∂L/∂d on the signed distance d → ∂L/∂(dot) (dot) or ∂L/∂(squared distance)."""
    if NEGATE:
        w = -w
        d = -d
    if KIND == 2:
        w = tiles.euclidean_grad_scale(w, d)
    return w


# --------------------------------------------------------------------------------------------
# 1. The chunk's distance rows
# --------------------------------------------------------------------------------------------
@triton.jit
def _distance_rows_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, neg_key_ptr, pos_key_ptr,
                          row0, row_end, N, D, stride_q, stride_r, near_tol, self_offset,
                          KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """neg_key[i − row0, j] = d_ij if j is a negative of anchor i else +inf; pos_key likewise."""
    offs_m = row0 + tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, row_end, N, D, stride_q, stride_r,
                            near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if NEGATE:
        d = -d
    valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, row_end, N, self_offset)
    out = (offs_m - row0).to(tl.int64)[:, None] * N + offs_n[None, :]
    inside = (offs_m[:, None] < row_end) & (offs_n[None, :] < N)
    tl.store(neg_key_ptr + out, tl.where(neg, d, JIT_INF), mask=inside)
    tl.store(pos_key_ptr + out, tl.where(pos, d, JIT_INF), mask=inside)


# --------------------------------------------------------------------------------------------
# 3. Sorted path: batch_all and the miner filters with relu, no swap
#    (step 2, the row sorts and prefix sums, is torch in `_sorted_rows` below)
# --------------------------------------------------------------------------------------------
@triton.jit
def _window(x, neg_row, K, margin, mm, c_keep_hi, c_keep_lo, MODE: tl.constexpr, KEEP: tl.constexpr,
            LOG_N: tl.constexpr):
    """For positives x: the kept run [lo, hi) of the sorted negatives, the run [w_lo, w_hi)
    of those whose term is inside cfg.term_keep, and its active part [w_lo, U) (v < fl(x + m)
    is the hinge). KEEP (see _keep_code) adds v < fl(x + c_keep_hi) (low ≥ 0, c = m − low),
    v > fl(x + c_keep_lo) (0 < high < inf, c = m − high), keeps the zero terms (low < 0) or
    nothing (high ≤ 0); KEEP = 0: [w_lo, w_hi) = [lo, U)."""
    zero = tl.zeros_like(x).to(tl.int32)
    lo = zero
    hi = zero + K
    if MODE == 1:
        hi = _count_below(neg_row, K, x + mm, 0.0, False, LOG_N)
    if MODE == 2:
        hi = tl.minimum(_count_below(neg_row, K, x + mm, 0.0, False, LOG_N),
                        _count_below(neg_row, K, x, 0.0, False, LOG_N))
    if MODE == 3:
        lo = _count_below(neg_row, K, x, 0.0, False, LOG_N)
        hi = _count_below(neg_row, K, x + mm, 0.0, False, LOG_N)
    if MODE == 4:
        lo = _count_below(neg_row, K, x + mm, 0.0, False, LOG_N)
    hi = tl.maximum(hi, lo)
    act = _count_below(neg_row, K, x + margin, 0.0, True, LOG_N)
    w_lo = lo
    if (KEEP & 2) != 0:
        w_lo = tl.maximum(lo, _count_below(neg_row, K, x + c_keep_lo, 0.0, False, LOG_N))
    if (KEEP & 4) != 0:
        w_hi = hi
    else:
        w_hi = tl.minimum(hi, act)
    if (KEEP & 1) != 0:
        w_hi = tl.minimum(w_hi, _count_below(neg_row, K, x + c_keep_hi, 0.0, True, LOG_N))
    if (KEEP & 8) != 0:
        w_hi = w_lo
    w_hi = tl.maximum(w_hi, w_lo)
    active_end = tl.maximum(tl.minimum(w_hi, act), w_lo)
    return lo, hi, w_lo, w_hi, active_end


@triton.jit
def _window_forward_kernel(both_sorted_ptr, prefix_ptr, n_neg_ptr, n_pos_ptr, values_ptr, counts_ptr, nonzero_ptr,
                           N, margin, mm, c_keep_hi, c_keep_lo,
                           MODE: tl.constexpr, KEEP: tl.constexpr, LOG_N: tl.constexpr, BLOCK: tl.constexpr,
                           COLS: tl.constexpr):
    """One (anchor, block of COLS positives) per program: its partial Σ over the block's
    positives of c·(x + m) − (S[U] − S[lo]), #kept and #(term > 0), at [row, block].
    both_sorted is a `_merged_sort` row: the K negatives ascending, then the P positives
    ascending, so the work per anchor is P positives, not N columns, and the blocks past
    ⌈P / COLS⌉ have none. The lanes take consecutive sorted positives: their searches walk
    nearly the same path through the negatives (shared loads, L1 hits) instead of scattering
    over the whole row."""
    row = tl.program_id(0)
    block = tl.program_id(1)
    part = row * tl.num_programs(1) + block
    base = row.to(tl.int64) * N
    K = tl.load(n_neg_ptr + row)
    P = tl.load(n_pos_ptr + row)
    value = tl.zeros((BLOCK,), dtype=tl.float64)
    count = tl.zeros((BLOCK,), dtype=tl.int64)
    nonzero = tl.zeros((BLOCK,), dtype=tl.int64)
    prefix_row = prefix_ptr + row.to(tl.int64) * (N + 1)
    for j0 in range(block * COLS, tl.minimum(P, block * COLS + COLS), BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        live = j < P
        x = tl.load(both_sorted_ptr + base + K + j, mask=live, other=0.0)
        lo, hi, w_lo, w_hi, end_run = _window(x, both_sorted_ptr + base, K, margin, mm, c_keep_hi, c_keep_lo,
                                              MODE, KEEP, LOG_N)
        run = tl.load(prefix_row + end_run, mask=live, other=0.0) - tl.load(prefix_row + w_lo, mask=live, other=0.0)
        c = tl.where(live, end_run - w_lo, 0)
        value += c.to(tl.float64) * (x.to(tl.float64) + margin) - tl.where(c > 0, run, 0.0)
        count += tl.where(live, hi - lo, 0).to(tl.int64)
        nonzero += tl.where(live, w_hi - w_lo, 0).to(tl.int64)
    tl.store(values_ptr + part, tl.sum(value, axis=0))
    tl.store(counts_ptr + part, tl.sum(count, axis=0))
    tl.store(nonzero_ptr + part, tl.sum(nonzero, axis=0))


@triton.jit
def _window_weights_kernel(pos_key_ptr, neg_key_ptr, both_sorted_ptr, n_pos_ptr, n_neg_ptr,
                           r_perm_ptr, start_ptr, end_ptr, grad_ptr, coef_ptr, N, margin, mm, c_keep_hi, c_keep_lo,
                           MODE: tl.constexpr, KEEP: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr,
                           LOG_N: tl.constexpr, BLOCK: tl.constexpr):
    """coef[a, j] for one block of BLOCK grouped slots of one anchor a (j = r_perm[slot]):
    positive j (x = d_aj): g·c(x); negative j (v = d_aj): −g·#{x : v kept and active}.
    The anchor's positives are the slots [start, end), so a block is all negatives unless it
    meets that range, and all positives if inside it: each side's searches run only in the
    blocks that hold that side (a block-uniform branch), about one search set per lane.
    both_sorted: per row the K negatives ascending, then the P positives ascending
    (`_merged_sort`)."""
    row = tl.program_id(0)
    b0 = tl.program_id(1) * BLOCK
    slots = b0 + tl.arange(0, BLOCK)
    base = row.to(tl.int64) * N
    inside = slots < N
    offs = tl.load(r_perm_ptr + slots, mask=inside, other=0)
    pk = tl.load(pos_key_ptr + base + offs, mask=inside, other=JIT_INF)
    nk = tl.load(neg_key_ptr + base + offs, mask=inside, other=JIT_INF)
    is_pos = pk < JIT_INF
    is_neg = nk < JIT_INF
    d = tl.where(is_pos, pk, tl.where(is_neg, nk, 0.0))
    P = tl.load(n_pos_ptr + row)
    K = tl.load(n_neg_ptr + row)
    g = tl.load(grad_ptr + row)
    start = tl.load(start_ptr + row)
    end = tl.load(end_ptr + row)
    w_pos = tl.zeros((BLOCK,), dtype=tl.float32)
    w_neg = tl.zeros((BLOCK,), dtype=tl.float32)
    if (b0 < end) & (b0 + BLOCK > start):
        # positives: the length of the active run of sorted negatives
        lo, hi, w_lo, w_hi, run_end = _window(d, both_sorted_ptr + base, K, margin, mm, c_keep_hi, c_keep_lo,
                                              MODE, KEEP, LOG_N)
        w_pos = (run_end - w_lo).to(tl.float32)
    if (b0 < start) | (b0 + BLOCK > end):
        # negatives: positives x failing an "x large enough" condition form a prefix of length
        # `first`, those meeting every "x small enough" condition a prefix of length `last`
        pos_row = both_sorted_ptr + base + K
        first = _count_below(pos_row, P, d, margin, False, LOG_N)                        # fl(x + m) ≤ v
        if MODE == 1 or MODE == 2 or MODE == 3:
            first = tl.maximum(first, _count_below(pos_row, P, d, mm, True, LOG_N))      # fl(x + mm) < v
        if MODE == 2:
            first = tl.maximum(first, _count_below(pos_row, P, d, 0.0, True, LOG_N))     # x < v
        last = tl.zeros_like(first) + P
        if MODE == 3:
            last = _count_below(pos_row, P, d, 0.0, True, LOG_N)                         # x < v
        if MODE == 4:
            last = _count_below(pos_row, P, d, mm, True, LOG_N)                          # fl(x + mm) < v
        if (KEEP & 1) != 0:
            first = tl.maximum(first, _count_below(pos_row, P, d, c_keep_hi, False, LOG_N))  # fl(x + c) ≤ v
        if (KEEP & 2) != 0:
            last = tl.minimum(last, _count_below(pos_row, P, d, c_keep_lo, True, LOG_N))     # fl(x + c) < v
        w_neg = -tl.maximum(last - first, 0).to(tl.float32)
    if (KEEP & 8) != 0:
        w_pos = w_pos * 0.0
        w_neg = w_neg * 0.0
    w = g * tl.where(is_pos, w_pos, tl.where(is_neg, w_neg, 0.0))
    tl.store(coef_ptr + base + offs, _tile_coef(w, d, KIND, NEGATE), mask=inside)


# --------------------------------------------------------------------------------------------
# 4. Scan path: smooth and/or swap (batch_all and the miner filters)
# --------------------------------------------------------------------------------------------
@triton.jit
def _scan_tile(x, x_ok, v, v_ok, d_pn, margin, mm, keep_low, keep_high,
               MODE: tl.constexpr, SMOOTH: tl.constexpr, SWAP: tl.constexpr, KEEP: tl.constexpr):
    """BLOCK_P×BLOCK_N tile of triplets (a, p, n): (kept, counted, term, slope, share of v).
    swap: v → min(v, d_pn); share = ∂min/∂v (1, ½ on a tie, 0). counted: term > 0, or with
    KEEP ≠ 0 keep_low < term < keep_high (only those terms enter term and slope)."""
    x = tl.where(x_ok, x, 0.0)[:, None]
    v = tl.where(v_ok, v, 0.0)[None, :]
    kept = x_ok[:, None] & v_ok[None, :] & _kept(x, v, mm, MODE)
    if SWAP:
        e = tl.minimum(v, d_pn)
        share = tl.where(v < d_pn, 1.0, tl.where(v == d_pn, 0.5, 0.0))
    else:
        e = v + tl.zeros_like(x)
        share = tl.zeros_like(e) + 1.0
    term, slope = _term(x - e + margin, SMOOTH)
    if KEEP != 0:
        window = kept & (term > keep_low) & (term < keep_high)
        return window, tl.where(window, term, 0.0), tl.where(window, slope, 0.0), share, kept
    return term > 0, tl.where(kept, term, 0.0), tl.where(kept, slope, 0.0), share, kept


@triton.jit
def _pn_tile(r_ptr, r_sq_ptr, offs_p, offs_n, N, D, stride_r, near_tol,
             KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """d(r_p, r_n), signed; rows p are arbitrary reference indices (N = masked)."""
    d = tiles.distance_tile(r_ptr, r_ptr, r_sq_ptr, r_sq_ptr, offs_p, offs_n, N, N, D, stride_r, stride_r,
                            near_tol, KIND, BLOCK_P, BLOCK_N, BLOCK_D, PRECISION)
    if NEGATE:
        d = -d
    return d


@triton.jit
def _scan_rows_kernel(r_ptr, r_sq_ptr, neg_key_ptr, pos_sorted_ptr, pos_idx_ptr, n_pos_ptr, grad_ptr,
                      values_ptr, counts_ptr, nonzero_ptr, coef_ptr,
                      N, D, stride_r, near_tol, margin, mm, keep_low, keep_high,
                      MODE: tl.constexpr, SMOOTH: tl.constexpr, SWAP: tl.constexpr, BACKWARD: tl.constexpr,
                      KEEP: tl.constexpr,
                      KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      COLS: tl.constexpr):
    """One (anchor, block of COLS sorted positives) per program, its positives in blocks ×
    all references in blocks. Forward: partial Σ term, #kept, #(term > 0) at [row, block].
    Backward: coef at each of its positives, g·Σ_n slope."""
    row = tl.program_id(0)
    block = tl.program_id(1)
    part = row * tl.num_programs(1) + block
    base = row.to(tl.int64) * N
    P = tl.load(n_pos_ptr + row)
    value = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    count = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.int32)
    nonzero = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.int32)
    for p0 in range(block * COLS, tl.minimum(P, block * COLS + COLS), BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        x_ok = offs_p < P
        x = tl.load(pos_sorted_ptr + base + offs_p, mask=x_ok, other=0.0)
        p_idx = tl.load(pos_idx_ptr + base + offs_p, mask=x_ok, other=0)
        p_idx = tl.where(x_ok, p_idx, N)
        slope_sum = tl.zeros((BLOCK_P,), dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            v = tl.load(neg_key_ptr + base + offs_n, mask=offs_n < N, other=JIT_INF)
            d_pn = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
            if SWAP:
                d_pn = _pn_tile(r_ptr, r_sq_ptr, p_idx, offs_n, N, D, stride_r, near_tol,
                                KIND, NEGATE, PRECISION, BLOCK_P, BLOCK_N, BLOCK_D)
            counted, term, slope, share, kept = _scan_tile(x, x_ok, v, v < JIT_INF, d_pn, margin, mm, keep_low,
                                                           keep_high, MODE, SMOOTH, SWAP, KEEP)
            if BACKWARD:
                slope_sum += tl.sum(slope, axis=1)
            else:
                value += term
                count += kept.to(tl.int32)
                nonzero += (counted & kept).to(tl.int32)
        if BACKWARD:
            g = tl.load(grad_ptr + row)
            w = _tile_coef(g * slope_sum, x, KIND, NEGATE)
            tl.store(coef_ptr + base + p_idx, w, mask=x_ok)
    if not BACKWARD:
        tl.store(values_ptr + part, tl.sum(tl.sum(value, axis=1), axis=0))
        tl.store(counts_ptr + part, tl.sum(tl.sum(count, axis=1), axis=0).to(tl.int64))
        tl.store(nonzero_ptr + part, tl.sum(tl.sum(nonzero, axis=1), axis=0).to(tl.int64))


@triton.jit
def _scan_negatives_kernel(r_ptr, r_sq_ptr, neg_key_ptr, pos_sorted_ptr, pos_idx_ptr, n_pos_ptr, grad_ptr,
                           coef_ptr, N, D, stride_r, near_tol, margin, mm, keep_low, keep_high,
                           MODE: tl.constexpr, SMOOTH: tl.constexpr, SWAP: tl.constexpr, KEEP: tl.constexpr,
                           KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """coef at the negatives of one block of references: −g·Σ_p slope·share."""
    row = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    base = row.to(tl.int64) * N
    P = tl.load(n_pos_ptr + row)
    v = tl.load(neg_key_ptr + base + offs_n, mask=offs_n < N, other=JIT_INF)
    v_ok = v < JIT_INF
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        x_ok = offs_p < P
        x = tl.load(pos_sorted_ptr + base + offs_p, mask=x_ok, other=0.0)
        d_pn = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
        if SWAP:
            p_idx = tl.load(pos_idx_ptr + base + offs_p, mask=x_ok, other=0)
            p_idx = tl.where(x_ok, p_idx, N)
            d_pn = _pn_tile(r_ptr, r_sq_ptr, p_idx, offs_n, N, D, stride_r, near_tol,
                            KIND, NEGATE, PRECISION, BLOCK_P, BLOCK_N, BLOCK_D)
        _, _, slope, share, _ = _scan_tile(x, x_ok, v, v_ok, d_pn, margin, mm, keep_low, keep_high,
                                           MODE, SMOOTH, SWAP, KEEP)
        acc += tl.sum(slope * share, axis=0)
    g = tl.load(grad_ptr + row)
    w = _tile_coef(-g * acc, tl.where(v_ok, v, 0.0), KIND, NEGATE)
    tl.store(coef_ptr + base + offs_n, w, mask=v_ok)


@triton.jit
def _swap_pair_grad_kernel(r_ptr, r_sq_ptr, pos_key_ptr, neg_key_ptr, grad_ptr, out_ptr,
                           n_rows, N, D, stride_r, stride_out, near_tol, margin, mm, keep_low, keep_high,
                           SIDE: tl.constexpr, MODE: tl.constexpr, SMOOTH: tl.constexpr, KEEP: tl.constexpr,
                           KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_X: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_D: tl.constexpr,
                           BLOCK_DO: tl.constexpr):
    """∂L/∂r from the d_pn = d(r_p, r_n) part of swapped terms, for the chunk's anchors.
    The program owns reference rows X (as p when SIDE = 0, as n when SIDE = 1) and columns
    BLOCK_DO of the gradient; for every other block Y it sums over anchors
        E_pn = Σ_a ∂L/∂d_pn  (= −g_a · slope · (1 − share) on kept triplets)
    and adds E·r_Y (dot) or 2·(Σ_Y E)·r_X − 2·E·r_Y (squared kinds) to its rows."""
    offs_x = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)
    offs_do = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    acc = tl.zeros((BLOCK_X, BLOCK_DO), dtype=tl.float32)
    coef_sum = tl.zeros((BLOCK_X,), dtype=tl.float32)
    for y0 in range(0, N, BLOCK_Y):
        offs_y = y0 + tl.arange(0, BLOCK_Y)
        if SIDE == 0:
            d_pn = _pn_tile(r_ptr, r_sq_ptr, offs_x, offs_y, N, D, stride_r, near_tol,
                            KIND, NEGATE, PRECISION, BLOCK_X, BLOCK_Y, BLOCK_D)
        else:
            d_pn = _pn_tile(r_ptr, r_sq_ptr, offs_y, offs_x, N, D, stride_r, near_tol,
                            KIND, NEGATE, PRECISION, BLOCK_Y, BLOCK_X, BLOCK_D)
        e = tl.zeros(d_pn.shape, dtype=tl.float32)
        for a in range(0, n_rows):
            base = tl.cast(a, tl.int64) * N
            g = tl.load(grad_ptr + a)
            if SIDE == 0:
                x = tl.load(pos_key_ptr + base + offs_x, mask=offs_x < N, other=JIT_INF)
                v = tl.load(neg_key_ptr + base + offs_y, mask=offs_y < N, other=JIT_INF)
            else:
                x = tl.load(pos_key_ptr + base + offs_y, mask=offs_y < N, other=JIT_INF)
                v = tl.load(neg_key_ptr + base + offs_x, mask=offs_x < N, other=JIT_INF)
            _, _, slope, share, _ = _scan_tile(x, x < JIT_INF, v, v < JIT_INF, d_pn, margin, mm, keep_low,
                                               keep_high, MODE, SMOOTH, True, KEEP)
            e += -g * slope * (1.0 - share)
        e = _tile_coef(e, d_pn, KIND, NEGATE)
        if SIDE == 1:
            e = tl.trans(e)
        r_y = tiles.load_rows(r_ptr, offs_y, offs_do, N, D, stride_r).to(tl.float32)
        acc = tl.dot(e, r_y, acc, input_precision=PRECISION)
        coef_sum += tl.sum(e, axis=1)
    tiles.store_row_grad(out_ptr, r_ptr, acc, coef_sum, offs_x, offs_do, N, D, stride_r, stride_out, KIND)


# --------------------------------------------------------------------------------------------
# 5. semihard_tfa
# --------------------------------------------------------------------------------------------
@triton.jit
def _tfa_choice(x, neg_row, K, LOG_N: tl.constexpr):
    """Sorted position of n*(x): first v > x, else the first of the largest values."""
    k = _count_below(neg_row, K, x, 0.0, False, LOG_N)                 # #{v ≤ x}
    has_neg = (k * 0 + K) > 0
    v_max = tl.load(neg_row + tl.maximum(K - 1, 0) + k * 0, mask=has_neg, other=0.0)
    far = _count_below(neg_row, K, v_max, 0.0, True, LOG_N)           # #{v < v_max}
    k = tl.where(k < K, k, far)
    v = tl.load(neg_row + k, mask=has_neg, other=0.0)
    return k, tl.where(has_neg, v, 0.0)


@triton.jit
def _pair_diagonal(x_ptr, y_ptr, x_sq_ptr, y_sq_ptr, i, j, MX, MY, D, stride_x, stride_y, near_tol,
                   KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """d(x[i_k], y[j_k]) per lane: the diagonal of the gathered distance tile (an index of
    MX / MY is a masked lane)."""
    d = tiles.distance_tile(x_ptr, y_ptr, x_sq_ptr, y_sq_ptr, i, j, MX, MY, D, stride_x, stride_y,
                            near_tol, KIND, BLOCK, BLOCK, BLOCK_D, PRECISION)
    if NEGATE:
        d = -d
    eye = tl.arange(0, BLOCK)[:, None] == tl.arange(0, BLOCK)[None, :]
    return tl.sum(tl.where(eye, d, 0.0), axis=1)


@triton.jit
def _tfa_rows_kernel(r_ptr, r_sq_ptr, pos_sorted_ptr, pos_idx_ptr, neg_sorted_ptr, neg_idx_ptr, n_pos_ptr,
                     n_neg_ptr, grad_ptr, values_ptr, counts_ptr, nonzero_ptr,
                     choice_ptr, slope_ptr, an_slope_ptr, pn_coef_ptr, pn_n_ptr,
                     N, D, stride_r, near_tol, margin,
                     SMOOTH: tl.constexpr, SWAP: tl.constexpr, BACKWARD: tl.constexpr,
                     KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                     LOG_N: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, COLS: tl.constexpr):
    """One (anchor, block of COLS sorted positives) per program. Forward: partial
    Σ term(x − v* + m), #positives, #(term > 0) at [row, block].
    swap: v* → min(v*, d(r_p, r_n*)) (share of v*: 1, ½ on a tie, 0).
    Backward, per sorted positive: its choice k (−1 when the anchor has no negative: no
    gradient), g·slope (to x), g·slope·share (to v*) and, with swap, the d_pn coefficient
    and n* (for `_segment_sum`)."""
    row = tl.program_id(0)
    block = tl.program_id(1)
    part = row * tl.num_programs(1) + block
    base = row.to(tl.int64) * N
    P = tl.load(n_pos_ptr + row)
    K = tl.load(n_neg_ptr + row)
    value = tl.zeros((BLOCK,), dtype=tl.float32)
    count = tl.zeros((BLOCK,), dtype=tl.int32)
    nonzero = tl.zeros((BLOCK,), dtype=tl.int32)
    for p0 in range(block * COLS, tl.minimum(P, block * COLS + COLS), BLOCK):
        offs = p0 + tl.arange(0, BLOCK)
        live = offs < P
        x = tl.load(pos_sorted_ptr + base + offs, mask=live, other=0.0)
        k, v = _tfa_choice(x, neg_sorted_ptr + base, K, LOG_N)
        has_neg = live & ((k * 0 + K) > 0)
        e = v
        share = tl.zeros_like(v) + 1.0
        if SWAP:
            p_idx = tl.where(has_neg, tl.load(pos_idx_ptr + base + offs, mask=live, other=0), N)
            n_idx = tl.where(has_neg, tl.load(neg_idx_ptr + base + k, mask=has_neg, other=0), N)
            d_pn = _pair_diagonal(r_ptr, r_ptr, r_sq_ptr, r_sq_ptr, p_idx, n_idx, N, N, D, stride_r, stride_r,
                                  near_tol, KIND, NEGATE, PRECISION, BLOCK, BLOCK_D)
            e = tl.where(has_neg, tl.minimum(v, d_pn), v)
            share = tl.where(has_neg, tl.where(v < d_pn, 1.0, tl.where(v == d_pn, 0.5, 0.0)), 1.0)
        term, slope = _term(x - e + margin, SMOOTH)
        if BACKWARD:
            g = tl.load(grad_ptr + row)
            tl.store(choice_ptr + base + offs, tl.where(K > 0, k, -1).to(tl.float32), mask=live)
            tl.store(slope_ptr + base + offs, g * slope, mask=live)
            tl.store(an_slope_ptr + base + offs, tl.where(has_neg, g * slope * share, 0.0), mask=live)
            if SWAP:
                w_pn = _tile_coef(-g * slope * (1.0 - share), d_pn, KIND, NEGATE)
                tl.store(pn_coef_ptr + base + offs, tl.where(has_neg, w_pn, 0.0), mask=live)
                tl.store(pn_n_ptr + base + offs, n_idx, mask=live)
        else:
            value += tl.where(live, term, 0.0)
            count += live.to(tl.int32)
            nonzero += (live & (term > 0)).to(tl.int32)
    if not BACKWARD:
        tl.store(values_ptr + part, tl.sum(value, axis=0))
        tl.store(counts_ptr + part, tl.sum(count, axis=0).to(tl.int64))
        tl.store(nonzero_ptr + part, tl.sum(nonzero, axis=0).to(tl.int64))


@triton.jit
def _tfa_weights_kernel(pos_sorted_ptr, pos_idx_ptr, neg_sorted_ptr, neg_idx_ptr, n_pos_ptr, n_neg_ptr,
                        choice_ptr, slope_ptr, slope_prefix_ptr, coef_ptr, N,
                        KIND: tl.constexpr, NEGATE: tl.constexpr, LOG_N: tl.constexpr, BLOCK: tl.constexpr):
    """Sorted positions k of one anchor: the positive at k gets its g·slope; the negative at
    k gets −Σ g·slope·share over the run of positives whose choice is k (choices ascend;
    slope_prefix holds the prefix sums of g·slope·share)."""
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    base = row.to(tl.int64) * N
    P = tl.load(n_pos_ptr + row)
    K = tl.load(n_neg_ptr + row)
    is_pos = offs < P
    x = tl.load(pos_sorted_ptr + base + offs, mask=is_pos, other=0.0)
    p_idx = tl.load(pos_idx_ptr + base + offs, mask=is_pos, other=0)
    w = tl.load(slope_ptr + base + offs, mask=is_pos, other=0.0)
    tl.store(coef_ptr + base + p_idx, _tile_coef(w, x, KIND, NEGATE), mask=is_pos)
    is_neg = offs < K
    v = tl.load(neg_sorted_ptr + base + offs, mask=is_neg, other=0.0)
    n_idx = tl.load(neg_idx_ptr + base + offs, mask=is_neg, other=0)
    k = offs.to(tl.float32)                       # choices are stored as floats (exact below 2^24)
    first = _count_below(choice_ptr + base, P, k, 0.0, True, LOG_N)
    last = _count_below(choice_ptr + base, P, k, 0.0, False, LOG_N)
    prefix_row = slope_prefix_ptr + row.to(tl.int64) * (N + 1)
    run = tl.load(prefix_row + last, mask=is_neg, other=0.0) - tl.load(prefix_row + first, mask=is_neg, other=0.0)
    tl.store(coef_ptr + base + n_idx, _tile_coef(-run.to(tl.float32), v, KIND, NEGATE), mask=is_neg)


# --------------------------------------------------------------------------------------------
# 6. batch_hard
# --------------------------------------------------------------------------------------------
@triton.jit
def _batch_hard_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr,
                       p_val_ptr, p_idx_ptr, n_val_ptr, n_idx_ptr, f_val_ptr, f_idx_ptr,
                       M, N, D, stride_q, stride_r, near_tol, self_offset,
                       KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Per anchor, streaming over reference tiles: max over positives, min over negatives and
    max over the whole row (the "tfa" fallback), each with the lowest index among ties (−1: none)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    p_val = tl.full((BLOCK_M,), -JIT_INF, tl.float32)
    n_val = tl.full((BLOCK_M,), JIT_INF, tl.float32)
    f_val = tl.full((BLOCK_M,), -JIT_INF, tl.float32)
    p_idx = tl.full((BLOCK_M,), -1, tl.int32)
    n_idx = tl.full((BLOCK_M,), -1, tl.int32)
    f_idx = tl.full((BLOCK_M,), -1, tl.int32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        d = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                                near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        if NEGATE:
            d = -d
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        cols = offs_n[None, :] + tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        big = N + BLOCK_N
        # a strict improvement only: an earlier block (lower index) keeps a tie
        b_val = tl.max(tl.where(pos, d, -JIT_INF), axis=1)
        b_idx = tl.min(tl.where(pos & (d == b_val[:, None]), cols, big), axis=1)
        better = b_val > p_val
        p_val = tl.where(better, b_val, p_val)
        p_idx = tl.where(better, b_idx, p_idx)
        b_val = tl.min(tl.where(neg, d, JIT_INF), axis=1)
        b_idx = tl.min(tl.where(neg & (d == b_val[:, None]), cols, big), axis=1)
        better = b_val < n_val
        n_val = tl.where(better, b_val, n_val)
        n_idx = tl.where(better, b_idx, n_idx)
        b_val = tl.max(tl.where(inside, d, -JIT_INF), axis=1)
        b_idx = tl.min(tl.where(inside & (d == b_val[:, None]), cols, big), axis=1)
        better = b_val > f_val
        f_val = tl.where(better, b_val, f_val)
        f_idx = tl.where(better, b_idx, f_idx)
    live = offs_m < M
    tl.store(p_val_ptr + offs_m, p_val, mask=live)
    tl.store(p_idx_ptr + offs_m, p_idx.to(tl.int64), mask=live)
    tl.store(n_val_ptr + offs_m, n_val, mask=live)
    tl.store(n_idx_ptr + offs_m, n_idx.to(tl.int64), mask=live)
    tl.store(f_val_ptr + offs_m, f_val, mask=live)
    tl.store(f_idx_ptr + offs_m, f_idx.to(tl.int64), mask=live)


@triton.jit
def _pair_distance_kernel(x_ptr, y_ptr, x_sq_ptr, y_sq_ptr, idx_x_ptr, idx_y_ptr, out_ptr,
                          n_pairs, MX, MY, D, stride_x, stride_y, near_tol,
                          KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """d(x[i_k], y[j_k]) for a list of pairs (an index −1 gives a meaningless value)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n_pairs
    i = tl.load(idx_x_ptr + offs, mask=live, other=0)
    j = tl.load(idx_y_ptr + offs, mask=live, other=0)
    i = tl.where(live & (i >= 0), i, MX)
    j = tl.where(live & (j >= 0), j, MY)
    d = _pair_diagonal(x_ptr, y_ptr, x_sq_ptr, y_sq_ptr, i, j, MX, MY, D, stride_x, stride_y, near_tol,
                       KIND, NEGATE, PRECISION, BLOCK, BLOCK_D)
    tl.store(out_ptr + offs, d, mask=live)


@triton.jit
def _segment_grad_kernel(target_ptr, src_ptr, seg_start_ptr, src_idx_ptr, coef_ptr, out_ptr,
                         D, stride_t, stride_s, stride_out,
                         KIND: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[t] = Σ_e coef_e·src[s_e] (dot) or 2·(Σ_e coef_e)·target[t] − 2·Σ_e coef_e·src[s_e],
    over the entries e of target row t (contiguous: sorted by target)."""
    t = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_d = offs_d < D
    start = tl.load(seg_start_ptr + t)
    end = tl.load(seg_start_ptr + t + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    total = tl.zeros((BLOCK_D,), dtype=tl.float32)  # Σ coef, broadcast over the lanes
    for e in range(start, end):
        c = tl.load(coef_ptr + e)
        s = tl.load(src_idx_ptr + e)
        acc += c * tl.load(src_ptr + s * stride_s + offs_d, mask=in_d, other=0.0).to(tl.float32)
        total += c
    if KIND != 0:
        own = tl.load(target_ptr + t.to(tl.int64) * stride_t + offs_d, mask=in_d, other=0.0).to(tl.float32)
        acc = 2.0 * total * own - 2.0 * acc
    tl.store(out_ptr + t.to(tl.int64) * stride_out + offs_d, acc, mask=in_d)


# --------------------------------------------------------------------------------------------
# Launchers (tensors and scalars only: what torch.compile traces)
# --------------------------------------------------------------------------------------------
def _tile_blocks(device: torch.device, dtype: torch.dtype = torch.float32, precision: str = "ieee",
                 kernel: str = "rows"):
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps) of the distance-tile kernels ("rows":
    _distance_rows_kernel, "batch_hard": _batch_hard_kernel). On the GPU, per input type, the
    largest tiles whose sm_90 build does not spill (bench/static_report.py; at 64×64 on 4 warps
    batch-hard spilled 304 B in float32, 136 B in tf32, 24 B in bf16, the float32 rows 56 B)."""
    if device.type != "cuda":
        return 32, 32, 32, 4
    exact_fp32 = dtype == torch.float32 and precision != "tf32"
    if kernel == "batch_hard":
        return (64, 32, 32, 8) if exact_fp32 else (64, 64, 32, 8)
    return (64, 64, 32, 8) if exact_fp32 else (64, 64, 32, 4)


def _unused(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A fresh placeholder for a pointer argument a kernel variant never touches (never the
    same tensor twice in one launch: torch.compile treats aliased arguments as mutations)."""
    return torch.empty((1,), dtype=dtype, device=device)


def _keep_code(keep_low: float, keep_high: float) -> int:
    """KEEP of the kernels for cfg.term_keep = (low, high): 0 for the default (0, inf), else
    1 (low > 0: the bound v < fl(x + (m − low))) | 2 (0 < high < inf: v > fl(x + (m − high)))
    | 4 (low < 0: the zero terms count) | 8 (high ≤ 0: nothing counts) | 16 (filtered)."""
    if (keep_low, keep_high) == (0.0, INF):
        return 0
    code = 16
    if keep_low > 0:
        code |= 1
    if keep_low < 0:
        code |= 4
    if 0 < keep_high < INF:
        code |= 2
    if keep_high <= 0:
        code |= 8
    return code


def _chunk_rows(B: int, N: int, chunk_elements: int) -> int:
    """Anchors per chunk: chunk_elements // N, at least MIN_CHUNK_ROWS while the chunk stays
    within MAX_CHUNK_ELEMENTS and B / 32 anchors, at least 1."""
    n = max(N, 1)
    return max(1, min(B, max(chunk_elements // n, min(MIN_CHUNK_ROWS, MAX_CHUNK_ELEMENTS // n, B // 32))))


def _row_blocks(N: int, cols: int) -> int:
    """Programs per anchor of the per-anchor kernels (grid (C, _row_blocks(N, cols)))."""
    return max(1, triton.cdiv(N, cols))


def _partial_outputs(c: int, blocks: int, device: torch.device):
    """(values, counts, nonzero) per (anchor, block), float64 / int64."""
    return (torch.empty((c, blocks), dtype=torch.float64, device=device),
            torch.empty((c, blocks), dtype=torch.int64, device=device),
            torch.empty((c, blocks), dtype=torch.int64, device=device))


def _reduce_partials(values, counts, nonzero):
    """Per-anchor sums of the blocks' partials, in a fixed order (torch.sum along the row)."""
    return values.sum(1).to(torch.float32), counts.sum(1), nonzero.sum(1)


def _sorted_rows(q, r, q_sq, r_sq, q_labels, r_labels, row0, row_end, kind, negate, self_offset, precision,
                 near_tol, sort_negatives: bool = True, sort_positives: bool = True):
    """The chunk's keys, their row-sorted copies (stable: lowest index first among ties) and
    positive/negative counts. A sort that is not asked for returns the unsorted keys (and no
    indices): the scan path reads the negatives unsorted, the sorted path sorts both sides at
    once (`_merged_sort`)."""
    c, N, D = row_end - row0, r.shape[0], q.shape[1]
    neg_key = torch.empty((c, N), dtype=torch.float32, device=q.device)
    pos_key = torch.empty((c, N), dtype=torch.float32, device=q.device)
    bm, bn, bd, warps = _tile_blocks(q.device, q.dtype, precision, "rows")
    _host.launchable(_distance_rows_kernel)[(triton.cdiv(c, bm), triton.cdiv(N, bn))](
        q, r, q_sq, r_sq, q_labels, r_labels, neg_key, pos_key, row0, row_end, N, D, q.stride(0), r.stride(0),
        near_tol, self_offset, KIND=kind, NEGATE=negate, PRECISION=precision,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, num_warps=warps)
    if sort_negatives:
        neg_sorted, neg_idx = torch.sort(neg_key, dim=1, stable=True)
    else:
        neg_sorted, neg_idx = neg_key, None
    if sort_positives:
        pos_sorted, pos_idx = torch.sort(pos_key, dim=1, stable=True)
    else:
        pos_sorted, pos_idx = pos_key, None
    n_neg = torch.isfinite(neg_sorted).sum(1).to(torch.int32)
    n_pos = torch.isfinite(pos_sorted).sum(1).to(torch.int32)
    return neg_key, pos_key, neg_sorted, neg_idx, pos_sorted, pos_idx, n_neg, n_pos


def _merged_sort(neg_key, pos_key, nonneg: bool):
    """One row sort for both sides of the sorted path: per row the negatives
    ascending in [0, K), then the positives ascending in [K, K + P), then +inf (float32 C×N;
    the values only, so no stable sort is needed). Each entry is one integer key, the side in
    its top bits and an order-preserving map of the value below: with every distance ≥ +0
    (nonneg: the euclidean kinds, not negated) an int32 (negatives get the sign bit, so they
    sort first, and a −0.0 positive is read as +0.0), else an int64 (side << 32 | the float's
    bits mapped to an unsigned order)."""
    nb, pb = neg_key.view(torch.int32), pos_key.view(torch.int32)
    is_neg = neg_key < INF
    if nonneg:
        key = torch.where(is_neg, nb | -(1 << 31), pb & 0x7FFFFFFF)
        return (torch.sort(key, dim=1)[0] & 0x7FFFFFFF).view(torch.float32)
    v = torch.where(is_neg, nb, pb).to(torch.int64)
    u = torch.where(v < 0, ~v, v + (1 << 31))          # negative floats: larger magnitude first
    key = torch.where(is_neg, u, u | (1 << 32))
    s = torch.sort(key, dim=1)[0] & 0xFFFFFFFF
    return torch.where(s >= 1 << 31, s - (1 << 31), ~s).to(torch.int32).view(torch.float32)


def _negative_prefix(both_sorted, n_neg):
    """Float64 prefix sums S[k] = Σ_{i<k} v_i of each row's sorted negatives, (C, N + 1); a
    `_merged_sort` row holds its positives past K, so S is zero-extended there (never read)."""
    cols = torch.arange(both_sorted.shape[1], device=both_sorted.device)
    negatives = torch.where(cols < n_neg[:, None], both_sorted, 0.0).to(torch.float64)
    return torch.nn.functional.pad(negatives.cumsum(1), (1, 0))


def _window_coef(g, keys, grouping, kind, negate, mode, keep, margin, mm, keep_low, keep_high, log_n):
    """The sorted path's C×N coefficient matrix E for the upstream gradients g (C,):
    keys = (neg_key, pos_key, both_sorted, n_pos, n_neg) of the chunk, grouping = its rows'
    (r_perm, start, end)."""
    neg_key, pos_key, both_sorted, n_pos, n_neg = keys
    c, N = neg_key.shape
    coef = torch.zeros((c, N), dtype=torch.float32, device=neg_key.device)
    _host.launchable(_window_weights_kernel)[(c, triton.cdiv(N, SEARCH_BLOCK))](
        pos_key, neg_key, both_sorted, n_pos, n_neg, *grouping, g, coef, N, margin, mm,
        margin - keep_low, margin - keep_high,
        MODE=mode, KEEP=keep, KIND=kind, NEGATE=negate, LOG_N=log_n, BLOCK=SEARCH_BLOCK)
    return coef


def _coef_torch(w, d, kind: int, negate: bool):
    """Torch twin of _tile_coef for per-anchor selections (batch_hard)."""
    if negate:
        w, d = -w, -d
    if kind == 2:
        w = torch.where(d > 0, w / (2.0 * torch.where(d > 0, d, 1.0)), 0.0)
    return w


def _pair_distances(x, y, x_sq, y_sq, idx_x, idx_y, kind, negate, precision, near_tol):
    """d(x[idx_x[k]], y[idx_y[k]]) (an index −1 gives a meaningless value)."""
    out = torch.empty(idx_x.shape, dtype=torch.float32, device=x.device)
    block, bd = 16, 32
    _host.launchable(_pair_distance_kernel)[(triton.cdiv(idx_x.numel(), block),)](
        x, y, x_sq, y_sq, idx_x, idx_y, out, idx_x.numel(), x.shape[0], y.shape[0], x.shape[1],
        x.stride(0), y.stride(0), near_tol, KIND=kind, NEGATE=negate, PRECISION=precision,
        BLOCK=block, BLOCK_D=bd)
    return out


def _segment_sum(target, src, tgt, src_idx, coef, kind):
    """grad[t] = Σ over entries with target t (see _segment_grad_kernel); tgt == len(target)
    marks an entry that goes nowhere. Deterministic: entries are sorted by target, stably."""
    T, D = target.shape
    order = torch.sort(tgt, stable=True).indices
    tgt, src_idx, coef = tgt[order], src_idx[order].contiguous(), coef[order].contiguous()
    seg_start = torch.searchsorted(tgt, torch.arange(T + 1, device=tgt.device, dtype=tgt.dtype))
    out = torch.empty((T, D), dtype=torch.float32, device=target.device)
    bd = 64
    _host.launchable(_segment_grad_kernel)[(T, triton.cdiv(D, bd))](
        target, src, seg_start, src_idx, coef, out, D, target.stride(0), src.stride(0), out.stride(0),
        KIND=kind, BLOCK_D=bd)
    return out


def _keep_window(term, keep_low: float, keep_high: float):
    """keep_low < term < keep_high, or None for the default term_keep (0, inf)."""
    if (keep_low, keep_high) == (0.0, INF):
        return None
    return (term > keep_low) & (term < keep_high)


def _batch_hard_fwd(q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, smooth, swap, fallback, margin,
                    self_offset, precision, keep_low, keep_high, near_tol):
    B, D = q.shape
    N = r.shape[0]
    dev = q.device
    vals = [torch.empty((B,), dtype=torch.float32, device=dev) for _ in range(3)]
    idxs = [torch.empty((B,), dtype=torch.int64, device=dev) for _ in range(3)]
    bm, bn, bd, warps = _tile_blocks(dev, q.dtype, precision, "batch_hard")
    _host.launchable(_batch_hard_kernel)[(triton.cdiv(B, bm),)](
        q, r, q_sq, r_sq, q_labels, r_labels, vals[0], idxs[0], vals[1], idxs[1], vals[2], idxs[2],
        B, N, D, q.stride(0), r.stride(0), near_tol, self_offset,
        KIND=kind, NEGATE=negate, PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, num_warps=warps)
    (p_val, n_val, f_val), (p_idx, n_idx, f_idx) = vals, idxs
    has_p, has_n = p_idx >= 0, n_idx >= 0
    if fallback == 0:      # "drop": anchors lacking a positive or a negative give no term
        valid = has_p & has_n
        d_ap, d_an = p_val, n_val
    else:                  # "tfa": d_ap = 0 without positives, d_an = row max without negatives
        valid = torch.ones_like(has_p)
        d_ap = torch.where(has_p, p_val, 0.0)
        d_an = torch.where(has_n, n_val, f_val)
        n_idx = torch.where(has_n, n_idx, f_idx)
    p_idx = torch.where(valid & has_p, p_idx, -1)
    n_idx = torch.where(valid, n_idx, -1)
    d_pn = torch.full_like(d_ap, INF)
    if swap:
        both = (p_idx >= 0) & (n_idx >= 0)
        d_pn = torch.where(both, _pair_distances(r, r, r_sq, r_sq, p_idx, n_idx, kind, negate, precision,
                                                 near_tol), INF)
    h = d_ap - torch.minimum(d_an, d_pn) + margin
    term = torch.nn.functional.softplus(h) if smooth else torch.relu(h)
    window = _keep_window(term, keep_low, keep_high)
    counted = valid & (term > 0) if window is None else valid & window
    values = torch.where(valid if window is None else counted, term, 0.0)
    return values, valid.to(torch.int64), counted.to(torch.int64), p_idx, n_idx, d_ap, d_an, d_pn


def _batch_hard_bwd(grad_values, q, r, p_idx, n_idx, d_ap, d_an, d_pn, kind, negate, smooth, margin,
                    keep_low, keep_high):
    B, N = q.shape[0], r.shape[0]
    h = d_ap - torch.minimum(d_an, d_pn) + margin
    slope = torch.sigmoid(h) if smooth else (h > 0).to(torch.float32)
    window = _keep_window(torch.nn.functional.softplus(h) if smooth else torch.relu(h), keep_low, keep_high)
    if window is not None:
        slope = torch.where(window, slope, 0.0)
    c = torch.where(n_idx >= 0, grad_values * slope, 0.0)
    share = torch.where(d_an < d_pn, 1.0, torch.where(d_an == d_pn, 0.5, 0.0))
    coef_ap = torch.where(p_idx >= 0, _coef_torch(c, d_ap, kind, negate), 0.0)
    coef_an = _coef_torch(-c * share, d_an, kind, negate)
    coef_pn = torch.where(torch.isfinite(d_pn), _coef_torch(-c * (1.0 - share), d_pn, kind, negate), 0.0)
    p_src, n_src = p_idx.clamp_min(0), n_idx.clamp_min(0)
    anchors = torch.arange(B, device=q.device)
    # grad_q: two entries per anchor, already grouped by anchor
    grad_q = _segment_sum(q, r, torch.stack([anchors, anchors], 1).reshape(-1),
                          torch.stack([p_src, n_src], 1).reshape(-1),
                          torch.stack([coef_ap, coef_an], 1).reshape(-1), kind)
    # grad_r: entries (p, q_a), (n, q_a), and with swap (p, r_n), (n, r_p); target N = nowhere
    p_tgt = torch.where(p_idx >= 0, p_idx, N)
    n_tgt = torch.where(n_idx >= 0, n_idx, N)
    grad_r = _segment_sum(r, q, torch.cat([p_tgt, n_tgt]), torch.cat([anchors, anchors]),
                          torch.cat([coef_ap, coef_an]), kind)
    pair = torch.isfinite(d_pn)
    grad_r = grad_r + _segment_sum(r, r, torch.cat([torch.where(pair, p_tgt, N), torch.where(pair, n_tgt, N)]),
                                   torch.cat([n_src, p_src]), torch.cat([coef_pn, coef_pn]), kind)
    return grad_q, grad_r


def _grouping(q_labels: torch.Tensor, r_labels: torch.Tensor):
    """Label grouping of one call, sync-free: (r_perm, start, end) with r_perm (N,) int32 the
    stable argsort of the reference labels, and per anchor (B,) int32 the slots [start, end) of
    r_perm holding the references with its label (its positives and maybe its self column)."""
    r_sorted, r_perm = torch.sort(r_labels, stable=True)
    start = torch.searchsorted(r_sorted, q_labels, right=False).to(torch.int32)
    end = torch.searchsorted(r_sorted, q_labels, right=True).to(torch.int32)
    return r_perm.to(torch.int32), start, end


def _sorted_path(mode: int, smooth: bool, swap: bool) -> bool:
    """Whether a mode takes the sorted path (batch_all and the filters, relu, no swap)."""
    return mode <= 4 and not smooth and not swap


def _chunked_fwd(q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, mode, smooth, swap, margin, mm,
                 self_offset, precision, keep_low, keep_high, near_tol, chunk_elements, unit_grad=False):
    """-> (values, counts, nonzero, units): units = (dL/dq, dL/dr) for dL/dvalues = 1, float32,
    computed in the same pass on the sorted path when unit_grad, else None."""
    B, N, D = int(q.shape[0]), int(r.shape[0]), int(q.shape[1])
    dev = q.device
    keep = _keep_code(keep_low, keep_high)
    parts = []
    log_n = max(1, N.bit_length())
    sorted_path = _sorted_path(mode, smooth, swap)
    units = None
    row_kind = "dot" if kind == 0 else "sqeuclidean"
    if sorted_path:
        r_perm, g_start, g_end = _grouping(q_labels, r_labels)
        if unit_grad:
            q_f, r_f = q.float(), r.float()
            units = (torch.empty((B, D), dtype=torch.float32, device=dev),
                     torch.zeros((N, D), dtype=torch.float32, device=dev))
    for row0 in range(0, B, _chunk_rows(B, N, chunk_elements)):
        row_end = min(B, row0 + _chunk_rows(B, N, chunk_elements))
        c = row_end - row0
        neg_key, pos_key, neg_sorted, neg_idx, pos_sorted, pos_idx, n_neg, n_pos = _sorted_rows(
            q, r, q_sq, r_sq, q_labels, r_labels, row0, row_end, kind, negate, self_offset, precision, near_tol,
            sort_negatives=mode == 5, sort_positives=not sorted_path)
        if sorted_path:
            both_sorted = _merged_sort(neg_key, pos_key, kind != 0 and not negate)
            grouping = (r_perm, g_start[row0:row_end], g_end[row0:row_end])
            blocks = _row_blocks(N, WINDOW_COLS)
            out = _partial_outputs(c, blocks, dev)
            _host.launchable(_window_forward_kernel)[(c, blocks)](
                both_sorted, _negative_prefix(both_sorted, n_neg), n_neg, n_pos, *out,
                N, margin, mm, margin - keep_low, margin - keep_high,
                MODE=mode, KEEP=keep, LOG_N=log_n, BLOCK=SEARCH_BLOCK, COLS=WINDOW_COLS)
            if units is not None:
                coef = _window_coef(torch.ones(c, dtype=torch.float32, device=dev),
                                    (neg_key, pos_key, both_sorted, n_pos, n_neg), grouping,
                                    kind, negate, mode, keep, margin, mm, keep_low, keep_high, log_n)
                gq, gr = metrics.pairwise_backward(coef, q_f[row0:row_end], r_f, row_kind)
                units[0][row0:row_end] = gq
                units[1].add_(gr)
        elif mode == 5:
            blocks = _row_blocks(N, POSITIVE_COLS)
            out = _partial_outputs(c, blocks, dev)
            _host.launchable(_tfa_rows_kernel)[(c, blocks)](
                r, r_sq, pos_sorted, pos_idx, neg_sorted, neg_idx, n_pos, n_neg, _unused(dev), *out,
                _unused(dev), _unused(dev), _unused(dev), _unused(dev), _unused(dev, torch.int64),
                N, D, r.stride(0), near_tol, margin,
                SMOOTH=smooth, SWAP=swap, BACKWARD=False, KIND=kind, NEGATE=negate, PRECISION=precision,
                LOG_N=log_n, BLOCK=SCAN_BLOCK if swap else SEARCH_BLOCK, BLOCK_D=32, COLS=POSITIVE_COLS)
        else:
            blocks = _row_blocks(N, POSITIVE_COLS)
            out = _partial_outputs(c, blocks, dev)
            _host.launchable(_scan_rows_kernel)[(c, blocks)](
                r, r_sq, neg_key, pos_sorted, pos_idx, n_pos, _unused(dev), *out, _unused(dev),
                N, D, r.stride(0), near_tol, margin, mm, keep_low, keep_high,
                MODE=mode, SMOOTH=smooth, SWAP=swap, BACKWARD=False, KEEP=keep, KIND=kind, NEGATE=negate,
                PRECISION=precision, BLOCK_P=SCAN_BLOCK, BLOCK_N=SCAN_BLOCK, BLOCK_D=32, COLS=POSITIVE_COLS)
        parts.append(_reduce_partials(*out))
    values, counts, nonzero = (torch.cat(column) for column in zip(*parts))
    return values, counts, nonzero, units


def _chunked_bwd(grad_values, q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, mode, smooth, swap, margin,
                 mm, self_offset, precision, keep_low, keep_high, near_tol, chunk_elements):
    B, N, D = int(q.shape[0]), int(r.shape[0]), int(q.shape[1])
    dev = q.device
    keep = _keep_code(keep_low, keep_high)
    q_f, r_f = q.float(), r.float()
    grad_q = torch.empty((B, D), dtype=torch.float32, device=dev)
    grad_r = torch.zeros((N, D), dtype=torch.float32, device=dev)
    log_n = max(1, N.bit_length())
    row_kind = "dot" if kind == 0 else "sqeuclidean"
    sorted_path = _sorted_path(mode, smooth, swap)
    if sorted_path:
        r_perm, g_start, g_end = _grouping(q_labels, r_labels)
    for row0 in range(0, B, _chunk_rows(B, N, chunk_elements)):
        row_end = min(B, row0 + _chunk_rows(B, N, chunk_elements))
        c = row_end - row0
        g = grad_values[row0:row_end].contiguous()
        neg_key, pos_key, neg_sorted, neg_idx, pos_sorted, pos_idx, n_neg, n_pos = _sorted_rows(
            q, r, q_sq, r_sq, q_labels, r_labels, row0, row_end, kind, negate, self_offset, precision, near_tol,
            sort_negatives=mode == 5, sort_positives=not sorted_path)
        if sorted_path:
            keys = (neg_key, pos_key, _merged_sort(neg_key, pos_key, kind != 0 and not negate), n_pos, n_neg)
            coef = _window_coef(g, keys, (r_perm, g_start[row0:row_end], g_end[row0:row_end]),
                                kind, negate, mode, keep, margin, mm, keep_low, keep_high, log_n)
        elif mode == 5:
            coef = torch.zeros((c, N), dtype=torch.float32, device=dev)
            choice = torch.empty((c, N), dtype=torch.float32, device=dev)
            slope = torch.zeros((c, N), dtype=torch.float32, device=dev)
            an_slope = torch.zeros((c, N), dtype=torch.float32, device=dev)
            pn_coef = torch.zeros((c, N) if swap else (1,), dtype=torch.float32, device=dev)
            pn_n = torch.full((c, N) if swap else (1,), N, dtype=torch.int64, device=dev)
            _host.launchable(_tfa_rows_kernel)[(c, _row_blocks(N, POSITIVE_COLS))](
                r, r_sq, pos_sorted, pos_idx, neg_sorted, neg_idx, n_pos, n_neg, g, _unused(dev),
                _unused(dev, torch.int64), _unused(dev, torch.int64), choice, slope, an_slope, pn_coef, pn_n, N, D, r.stride(0), near_tol, margin,
                SMOOTH=smooth, SWAP=swap, BACKWARD=True, KIND=kind, NEGATE=negate, PRECISION=precision,
                LOG_N=log_n, BLOCK=SCAN_BLOCK if swap else SEARCH_BLOCK, BLOCK_D=32, COLS=POSITIVE_COLS)
            slope_prefix = torch.nn.functional.pad(an_slope.to(torch.float64).cumsum(1), (1, 0))
            _host.launchable(_tfa_weights_kernel)[(c, triton.cdiv(N, SEARCH_BLOCK))](
                pos_sorted, pos_idx, neg_sorted, neg_idx, n_pos, n_neg, choice, slope, slope_prefix, coef, N,
                KIND=kind, NEGATE=negate, LOG_N=log_n, BLOCK=SEARCH_BLOCK)
            if swap:  # d_pn = d(r_p, r_n*) terms: entries (p, r_n*) and (n*, r_p), target N = none
                live = pn_n < N
                p_tgt = torch.where(live, pos_idx, N).reshape(-1)
                n_tgt = pn_n.reshape(-1)
                w = pn_coef.reshape(-1)
                grad_r += _segment_sum(r, r, torch.cat([p_tgt, n_tgt]),
                                       torch.cat([n_tgt.clamp_max(N - 1), p_tgt.clamp_max(N - 1)]),
                                       torch.cat([w, w]), kind)
        else:
            coef = torch.zeros((c, N), dtype=torch.float32, device=dev)
            common = dict(MODE=mode, SMOOTH=smooth, SWAP=swap, KEEP=keep, KIND=kind, NEGATE=negate,
                          PRECISION=precision, BLOCK_P=SCAN_BLOCK, BLOCK_N=SCAN_BLOCK, BLOCK_D=32)
            _host.launchable(_scan_rows_kernel)[(c, _row_blocks(N, POSITIVE_COLS))](
                r, r_sq, neg_key, pos_sorted, pos_idx, n_pos, g, _unused(dev), _unused(dev, torch.int64),
                _unused(dev, torch.int64), coef,
                N, D, r.stride(0), near_tol, margin, mm, keep_low, keep_high, BACKWARD=True, COLS=POSITIVE_COLS,
                **common)
            _host.launchable(_scan_negatives_kernel)[(c, triton.cdiv(N, SCAN_BLOCK))](
                r, r_sq, neg_key, pos_sorted, pos_idx, n_pos, g, coef,
                N, D, r.stride(0), near_tol, margin, mm, keep_low, keep_high, **common)
            if swap:
                block_do = 64
                pair_grad = torch.empty((N, D), dtype=torch.float32, device=dev)
                for side in (0, 1):
                    _host.launchable(_swap_pair_grad_kernel)[(triton.cdiv(N, SCAN_BLOCK), triton.cdiv(D, block_do))](
                        r, r_sq, pos_key, neg_key, g, pair_grad, c, N, D, r.stride(0), pair_grad.stride(0),
                        near_tol, margin, mm, keep_low, keep_high, SIDE=side, MODE=mode, SMOOTH=smooth, KEEP=keep,
                        KIND=kind, NEGATE=negate,
                        PRECISION=precision, BLOCK_X=SCAN_BLOCK, BLOCK_Y=SCAN_BLOCK, BLOCK_D=32,
                        BLOCK_DO=block_do)
                    grad_r += pair_grad
        gq, gr = metrics.pairwise_backward(coef, q_f[row0:row_end], r_f, row_kind)
        grad_q[row0:row_end] = gq
        grad_r += gr
    return grad_q, grad_r


def _fwd_impl(q: torch.Tensor, r: Optional[torch.Tensor], q_labels: torch.Tensor, r_labels: Optional[torch.Tensor],
              kind: int, negate: bool, mode: int, smooth: bool, swap: bool, fallback: int, margin: float,
              miner_margin: float, self_offset: int, precision: str, keep_low: float, keep_high: float,
              near_tol: float, chunk_elements: int, unit_grad: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                         torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (values, counts, nonzero, p_idx, n_idx, d_ap, d_an, d_pn, unit_q, unit_r): the batch_hard
    selection (empty in the other modes) and, when unit_grad and the mode takes the sorted path,
    dL/dq and dL/dr for dL/dvalues = 1 (float32 (B, D), (N, D); empty (0,) otherwise)."""
    r, r_labels = (q if r is None else r), (q_labels if r_labels is None else r_labels)
    q_sq = _host.squared_norms(q, kind)
    r_sq = q_sq if r is q else _host.squared_norms(r, kind)
    none_f = torch.empty((0,), dtype=torch.float32, device=q.device)
    if mode == 6:
        return (*_batch_hard_fwd(q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, smooth, swap, fallback,
                                 margin, self_offset, precision, keep_low, keep_high, near_tol),
                none_f, none_f.clone())
    values, counts, nonzero, units = _chunked_fwd(q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, mode, smooth,
                                                  swap, margin, miner_margin, self_offset, precision, keep_low,
                                                  keep_high, near_tol, chunk_elements, unit_grad)
    none_i = torch.empty((0,), dtype=torch.int64, device=q.device)
    unit_q, unit_r = units if units is not None else (none_f.clone(), none_f.clone())
    return (values, counts, nonzero, none_i, none_i.clone(), none_f, none_f.clone(), none_f.clone(),
            unit_q, unit_r)


def _bwd_impl(grad_values: torch.Tensor, q: torch.Tensor, r: Optional[torch.Tensor], q_labels: torch.Tensor,
              r_labels: Optional[torch.Tensor], p_idx: torch.Tensor, n_idx: torch.Tensor, d_ap: torch.Tensor,
              d_an: torch.Tensor, d_pn: torch.Tensor, unit_q: torch.Tensor, unit_r: torch.Tensor, kind: int,
              negate: bool, mode: int, smooth: bool, swap: bool, fallback: int, margin: float, miner_margin: float,
              self_offset: int, precision: str, keep_low: float, keep_high: float, near_tol: float,
              chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for grad_values; with the forward's unit gradients (2-D unit_q, unit_r: the
    caller promised a grad_values that is the same for every anchor) a scaling, sync-free."""
    r, r_labels = (q if r is None else r), (q_labels if r_labels is None else r_labels)
    if unit_q.dim() == 2 and q.shape[0] > 0:
        g = grad_values[:1].to(torch.float32)
        return (g * unit_q).to(q.dtype), (g * unit_r).to(r.dtype)
    if mode == 6:
        grad_q, grad_r = _batch_hard_bwd(grad_values, q, r, p_idx, n_idx, d_ap, d_an, d_pn, kind, negate,
                                         smooth, margin, keep_low, keep_high)
    else:
        q_sq = _host.squared_norms(q, kind)
        r_sq = q_sq if r is q else _host.squared_norms(r, kind)
        grad_q, grad_r = _chunked_bwd(grad_values, q, r, q_sq, r_sq, q_labels, r_labels, kind, negate, mode,
                                      smooth, swap, margin, miner_margin, self_offset, precision, keep_low,
                                      keep_high, near_tol, chunk_elements)
    return grad_q.to(q.dtype), grad_r.to(r.dtype)


def _fwd_fake(q, r, q_labels, r_labels, kind, negate, mode, smooth, swap, fallback, margin, miner_margin,
              self_offset, precision, keep_low, keep_high, near_tol, chunk_elements, unit_grad=False):
    B, N, D = q.shape[0], (q if r is None else r).shape[0], q.shape[1]
    k = B if mode == 6 else 0
    f32, i64 = dict(dtype=torch.float32, device=q.device), dict(dtype=torch.int64, device=q.device)
    units = unit_grad and _sorted_path(mode, smooth, swap)
    return (q.new_empty((B,), **f32), q.new_empty((B,), **i64), q.new_empty((B,), **i64),
            q.new_empty((k,), **i64), q.new_empty((k,), **i64),
            q.new_empty((k,), **f32), q.new_empty((k,), **f32), q.new_empty((k,), **f32),
            q.new_empty((B, D) if units else (0,), **f32), q.new_empty((N, D) if units else (0,), **f32))


def _bwd_fake(grad_values, q, r, q_labels, r_labels, p_idx, n_idx, d_ap, d_an, d_pn, unit_q, unit_r, kind, negate,
              mode, smooth, swap, fallback, margin, miner_margin, self_offset, precision, keep_low, keep_high,
              near_tol, chunk_elements):
    return torch.empty_like(q), torch.empty_like(q if r is None else r)


triplet_fwd_op, triplet_bwd_op = _host.register_ops("triplet", _fwd_impl, _bwd_impl, _fwd_fake, _bwd_fake)


# --------------------------------------------------------------------------------------------
# The seam (fastcontrast/configs.py)
# --------------------------------------------------------------------------------------------
def _codes(cfg: TripletConfig):
    kind = _host.metric_code(cfg)
    mode = _host.code(cfg, "mining", MODE_CODES)
    fallback = _host.code(cfg, "hard_fallback", FALLBACK_CODES)
    if mode == 5 and cfg.filtered:
        raise ValueError("cfg.term_keep: semihard_tfa takes no term bounds on the Triton path")
    low, high = (float(v) for v in cfg.term_keep)
    return (kind, bool(cfg.negate), mode, bool(cfg.smooth), bool(cfg.swap), fallback, float(cfg.margin),
            float(cfg.miner_margin), int(cfg.self_offset), cfg.precision, low, high)


def forward(q, r, q_labels, r_labels, cfg: TripletConfig, unit_grad: bool = False):
    """-> (values (B,) float32, counts (B,) int64, nonzero (B,) int64, saved).
    saved = (p_idx, n_idx, d_ap, d_an, d_pn, unit_q, unit_r): the first five (B,) for
    batch_hard (the selected positive and negative per anchor, −1 where none; d_pn = +inf
    without swap), empty otherwise; unit_grad=True is the caller's promise that backward's
    grad_values will be the same for every anchor (a "mean" or "sum" reduction): the sorted
    path then also computes the gradients for dL/dvalues = 1 here, from the same distance
    tiles and row sorts, and backward only scales them."""
    codes = _codes(cfg)
    same, same_labels = r is q, r_labels is q_labels
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "triplet")
    values, counts, nonzero, *saved = triplet_fwd_op(
        q, None if same else r, q_labels, None if same_labels else r_labels, *codes,
        metrics.near_tolerance(q.dtype, cfg.precision), CHUNK_ELEMENTS, bool(unit_grad))
    return values, counts, nonzero, tuple(saved)


def backward(grad_values, q, r, q_labels, r_labels, cfg: TripletConfig, saved):
    """-> (grad_q like q, grad_r like r)."""
    codes = _codes(cfg)
    q_dtype, r_dtype = q.dtype, r.dtype
    same, same_labels = r is q, r_labels is q_labels
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "triplet")
    grad_values = _host.upstream_grad(grad_values, q.device)
    grad_q, grad_r = triplet_bwd_op(grad_values, q, None if same else r, q_labels,
                                    None if same_labels else r_labels, *saved, *codes,
                                    metrics.near_tolerance(q.dtype, cfg.precision), CHUNK_ELEMENTS)
    return grad_q.to(q_dtype), grad_r.to(r_dtype)
