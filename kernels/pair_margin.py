"""Pair-margin (max-margin contrastive) family: Triton kernels and their launchers.

Anchors q (B×D, labels y), references r (N×D, labels y'); t_ij is the metric tile
(kernels/tiles.py) and d_ij = t_ij, or −t_ij when the metric is a similarity (NEGATE).
Positive pairs P (same label, not the self pair j = i + self_offset), negatives Neg
(different label):

    h⁺_ij = d_ij − pos_margin     term⁺_ij = relu(h⁺_ij) ** POWER   (ij ∈ P)
    h⁻_ij = neg_margin − d_ij     term⁻_ij = relu(h⁻_ij) ** POWER   (ij ∈ Neg)

Forward, one program per block of anchor rows, streaming over reference tiles (the tile is
computed on chip and never written): per anchor, the sums of term⁺ and term⁻, the numbers
of positive and negative pairs, and how many terms are > 0 (for PML's AvgNonZero). FILTERED
(PML's ThresholdReducer, fused): only terms with low < term < high, per side, enter the sums
and the count, and only they carry gradient.

Backward: with g_i = (g⁺_i, g⁻_i) the upstream gradients of the two sums,
    ∂L/∂d_ij = g⁺_i·slope⁺_ij − g⁻_i·slope⁻_ij,   slope = 1[h > 0] (POWER 1) or 2·relu(h) (POWER 2)
and c_ij = ∂L/∂(tile entry) is that (negated for similarities; over 2d, 0 at d = 0, for the
Euclidean distance, making it a coefficient of the squared distance). Then
    dot          grad_q_i = Σ_j c_ij r_j,                    grad_r_j = Σ_i c_ij q_i
    squared      grad_q_i = 2(Σ_j c_ij) q_i − 2 Σ_j c_ij r_j, grad_r_j = 2(Σ_i c_ij) r_j − 2 Σ_i c_ij q_i
grad_q: one program per (anchor block, D chunk), streaming over reference tiles; grad_r: one
program per (reference block, D chunk), streaming over anchor tiles with the same tile
orientation. A tile whose hinges are all inactive (c = 0) skips its gradient product. Every
output element is written by one program: no atomics, deterministic.

Optional per-anchor margin shift (HAS_SHIFT; MarginLoss's learnable β): h⁺ = d − (pos_margin +
shift_i), h⁻ = (neg_margin + shift_i) − d; its gradient comes from the forward's non-zero counts.

Optional row bounds (ROW_BOUNDS; a fused miner selection, PairMarginConfig.row_bounds): a
(B, 2) float32 tensor loaded once per anchor block; a positive pair is one only when
d + bound_slack > bounds_i0, a negative pair only when d − bound_slack < bounds_i1 — one
compare on the pair masks, so counts, sums and slopes all see the selection.

Inputs fp32/fp16/bf16, accumulation fp32; tl.dot input precision from cfg.precision
("ieee" | "tf32"; fp16/bf16 run at their native precision). Registered as the torch ops
"fastcontrast::pair_margin_fwd" / "fastcontrast::pair_margin_bwd" (torch.library.triton_op;
opaque custom ops under the interpreter) so torch.compile can trace a step with the loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fastcontrast import metrics
from fastcontrast.configs import PairMarginConfig

from . import _host, tiles


# --------------------------------------------------------------------------------------------
# Tile-level math
# --------------------------------------------------------------------------------------------
@triton.jit
def _hinges(t, pos_margin, neg_margin, NEGATE: tl.constexpr):
    """(h⁺, h⁻) of a metric tile."""
    if NEGATE:
        d = -t
    else:
        d = t
    return d - pos_margin, neg_margin - d


@triton.jit
def _row_shift(shift_ptr, offs_m, M, HAS_SHIFT: tl.constexpr):
    """Anchor i's margin shift (MarginLoss's β_i) as a column, or 0."""
    if HAS_SHIFT:
        sh = tl.load(shift_ptr + offs_m, mask=offs_m < M, other=0.0)
    else:
        sh = tl.zeros(offs_m.shape, tl.float32)
    return sh[:, None]


@triton.jit
def _row_bounded(t, pos, neg, pos_above, neg_below, bound_slack, NEGATE: tl.constexpr):
    """(pos, neg) narrowed to the selected pairs, the bounds in distance units (host side):
    d + slack > pos_above, d − slack < neg_below — tiles.row_bounded on l = −d."""
    if NEGATE:
        l = t  # d = −t
    else:
        l = -t
    return tiles.row_bounded(pos, neg, l, -pos_above, -neg_below, bound_slack)


@triton.jit
def _terms(h, mask, POWER: tl.constexpr):
    """relu(h) ** POWER inside the mask, 0 elsewhere."""
    h = tl.where(mask, tl.maximum(h, 0.0), 0.0)
    if POWER == 2:
        h = h * h
    return h


@triton.jit
def _slopes(h, mask, POWER: tl.constexpr):
    """d term / d h inside the mask, 0 elsewhere and where the hinge is inactive."""
    active = mask & (h > 0.0)
    if POWER == 2:
        s = tl.where(active, 2.0 * h, 0.0)
    else:
        s = tl.where(active, 1.0, 0.0)
    return s


@triton.jit
def _kept(t, pos, neg, pos_margin, neg_margin, pos_low, pos_high, neg_low, neg_high,
          NEGATE: tl.constexpr, POWER: tl.constexpr):
    """(pos, neg) narrowed to the terms inside (low, high) (cfg.pos_keep / neg_keep)."""
    h_pos, h_neg = _hinges(t, pos_margin, neg_margin, NEGATE)
    term_pos = _terms(h_pos, pos, POWER)
    term_neg = _terms(h_neg, neg, POWER)
    return (pos & (term_pos > pos_low) & (term_pos < pos_high),
            neg & (term_neg > neg_low) & (term_neg < neg_high))


@triton.jit
def _tile_coef(t, pos, neg, g_pos, g_neg, pos_margin, neg_margin,
               KIND: tl.constexpr, NEGATE: tl.constexpr, POWER: tl.constexpr):
    """c_ij = ∂L/∂(dot product) for KIND dot, ∂L/∂(squared distance) for the distance kinds."""
    h_pos, h_neg = _hinges(t, pos_margin, neg_margin, NEGATE)
    c = g_pos[:, None] * _slopes(h_pos, pos, POWER) - g_neg[:, None] * _slopes(h_neg, neg, POWER)
    if NEGATE:
        c = -c
    if KIND == 2:
        c = tiles.euclidean_grad_scale(c, t)
    return c


# --------------------------------------------------------------------------------------------
# Forward: per-anchor sums and counts
# --------------------------------------------------------------------------------------------
@triton.jit
def _pair_margin_fwd_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, shift_ptr,
                            values_ptr, counts_ptr, nonzero_ptr, bounds_ptr,
                            M, N, stride_q, stride_r, near_tol, self_offset, pos_margin, neg_margin,
                            pos_low, pos_high, neg_low, neg_high, bound_slack,
                            D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, POWER: tl.constexpr,
                            FILTERED: tl.constexpr, PRECISION: tl.constexpr, HAS_SHIFT: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            ROW_BOUNDS: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    unit = tl.load(unit_ptr)  # true distance = unit × the frame's (see _host.frame)
    sh = _row_shift(shift_ptr, offs_m, M, HAS_SHIFT)
    if ROW_BOUNDS:
        pos_above, neg_below = tiles.load_row_bounds(bounds_ptr, offs_m, M)
    sum_pos = tl.zeros((BLOCK_M,), tl.float32)
    sum_neg = tl.zeros((BLOCK_M,), tl.float32)
    n_pos = tl.zeros((BLOCK_M,), tl.int32)
    n_neg = tl.zeros((BLOCK_M,), tl.int32)
    nz_pos = tl.zeros((BLOCK_M,), tl.int32)
    nz_neg = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        t = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                                near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION) * unit
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if ROW_BOUNDS:
            pos, neg = _row_bounded(t, pos, neg, pos_above, neg_below, bound_slack, NEGATE)
        h_pos, h_neg = _hinges(t, pos_margin + sh, neg_margin + sh, NEGATE)
        term_pos = _terms(h_pos, pos, POWER)
        term_neg = _terms(h_neg, neg, POWER)
        if FILTERED:  # only the terms inside (low, high) count
            kept_pos = pos & (term_pos > pos_low) & (term_pos < pos_high)
            kept_neg = neg & (term_neg > neg_low) & (term_neg < neg_high)
            term_pos = tl.where(kept_pos, term_pos, 0.0)
            term_neg = tl.where(kept_neg, term_neg, 0.0)
        else:
            kept_pos = term_pos > 0.0
            kept_neg = term_neg > 0.0
        sum_pos += tl.sum(term_pos, 1)
        sum_neg += tl.sum(term_neg, 1)
        tl.static_assert(BLOCK_N < 256)
        # the four counts of a tile (each ≤ BLOCK_N < 256) in the bytes of one int32: one reduction
        packed = tl.sum(pos.to(tl.int32) | (neg.to(tl.int32) << 8) | (kept_pos.to(tl.int32) << 16)
                        | (kept_neg.to(tl.int32) << 24), 1)
        n_pos += packed & 0xFF
        n_neg += (packed >> 8) & 0xFF
        nz_pos += (packed >> 16) & 0xFF
        nz_neg += (packed >> 24) & 0xFF

    in_m = offs_m < M
    out = offs_m.to(tl.int64) * 2
    tl.store(values_ptr + out, sum_pos, mask=in_m)
    tl.store(values_ptr + out + 1, sum_neg, mask=in_m)
    tl.store(counts_ptr + out, n_pos.to(tl.int64), mask=in_m)
    tl.store(counts_ptr + out + 1, n_neg.to(tl.int64), mask=in_m)
    tl.store(nonzero_ptr + out, nz_pos.to(tl.int64), mask=in_m)
    tl.store(nonzero_ptr + out + 1, nz_neg.to(tl.int64), mask=in_m)


# --------------------------------------------------------------------------------------------
# Backward: grad_q (rows) and grad_r (columns)
# --------------------------------------------------------------------------------------------
@triton.jit
def _pair_margin_bwd_q_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, shift_ptr, grad_ptr, grad_q_ptr,
                              bounds_ptr,
                              M, N, stride_q, stride_r, stride_gq, near_tol, self_offset, pos_margin, neg_margin,
                              pos_low, pos_high, neg_low, neg_high, bound_slack,
                              D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, POWER: tl.constexpr,
                              FILTERED: tl.constexpr, PRECISION: tl.constexpr, HAS_SHIFT: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, ROW_BOUNDS: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_do = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)  # the D chunk this program writes
    unit = tl.load(unit_ptr)
    in_m = offs_m < M
    sh = _row_shift(shift_ptr, offs_m, M, HAS_SHIFT)
    g_pos = tl.load(grad_ptr + offs_m.to(tl.int64) * 2, mask=in_m, other=0.0)
    g_neg = tl.load(grad_ptr + offs_m.to(tl.int64) * 2 + 1, mask=in_m, other=0.0)
    if ROW_BOUNDS:
        pos_above, neg_below = tiles.load_row_bounds(bounds_ptr, offs_m, M)

    acc = tl.zeros((BLOCK_M, BLOCK_DO), tl.float32)  # Σ_j c_ij r_j
    coef_sum = tl.zeros((BLOCK_M,), tl.float32)      # Σ_j c_ij (distance kinds)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        t_frame = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q,
                                      stride_r, near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if ROW_BOUNDS:
            pos, neg = _row_bounded(t_frame * unit, pos, neg, pos_above, neg_below, bound_slack, NEGATE)
        if FILTERED:
            pos, neg = _kept(t_frame * unit, pos, neg, pos_margin + sh, neg_margin + sh, pos_low, pos_high,
                             neg_low, neg_high, NEGATE, POWER)
        c = _tile_coef(t_frame * unit, pos, neg, g_pos, g_neg, pos_margin + sh, neg_margin + sh, KIND, NEGATE,
                       POWER)
        if tl.sum((c != 0.0).to(tl.int32)) > 0:  # tiles with every hinge inactive add nothing
            r_chunk = tiles.load_rows(r_ptr, offs_n, offs_do, N, D, stride_r)
            acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t_frame, r_chunk, q_ptr, r_ptr, offs_m, n0,
                                                      offs_do, M, N, D, stride_q, stride_r, q_sq_ptr, r_sq_ptr,
                                                      offs_m, offs_n, M, N, near_tol, KIND, PRECISION, BLOCK_N, True)

    tiles.store_row_grad(grad_q_ptr, q_ptr, acc, coef_sum, offs_m, offs_do, M, D, stride_q, stride_gq, KIND)


@triton.jit
def _pair_margin_bwd_r_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, shift_ptr, grad_ptr, grad_r_ptr,
                              bounds_ptr,
                              M, N, stride_q, stride_r, stride_gr, near_tol, self_offset, pos_margin, neg_margin,
                              pos_low, pos_high, neg_low, neg_high, bound_slack,
                              D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, POWER: tl.constexpr,
                              FILTERED: tl.constexpr, PRECISION: tl.constexpr, HAS_SHIFT: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, ROW_BOUNDS: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_do = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    unit = tl.load(unit_ptr)

    acc = tl.zeros((BLOCK_N, BLOCK_DO), tl.float32)  # Σ_i c_ij q_i
    coef_sum = tl.zeros((BLOCK_N,), tl.float32)      # Σ_i c_ij (distance kinds)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_m = offs_m < M
        g_pos = tl.load(grad_ptr + offs_m.to(tl.int64) * 2, mask=in_m, other=0.0)
        g_neg = tl.load(grad_ptr + offs_m.to(tl.int64) * 2 + 1, mask=in_m, other=0.0)
        sh = _row_shift(shift_ptr, offs_m, M, HAS_SHIFT)
        t_frame = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q,
                                      stride_r, near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if ROW_BOUNDS:  # this anchor tile's bounds
            pos_above, neg_below = tiles.load_row_bounds(bounds_ptr, offs_m, M)
            pos, neg = _row_bounded(t_frame * unit, pos, neg, pos_above, neg_below, bound_slack, NEGATE)
        if FILTERED:
            pos, neg = _kept(t_frame * unit, pos, neg, pos_margin + sh, neg_margin + sh, pos_low, pos_high,
                             neg_low, neg_high, NEGATE, POWER)
        c = _tile_coef(t_frame * unit, pos, neg, g_pos, g_neg, pos_margin + sh, neg_margin + sh, KIND, NEGATE,
                       POWER)
        if tl.sum((c != 0.0).to(tl.int32)) > 0:
            q_chunk = tiles.load_rows(q_ptr, offs_m, offs_do, M, D, stride_q)
            acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t_frame, q_chunk, r_ptr, q_ptr, offs_n, m0,
                                                      offs_do, N, M, D, stride_r, stride_q, q_sq_ptr, r_sq_ptr,
                                                      offs_m, offs_n, M, N, near_tol, KIND, PRECISION, BLOCK_M, False)

    tiles.store_row_grad(grad_r_ptr, r_ptr, acc, coef_sum, offs_n, offs_do, N, D, stride_r, stride_gr, KIND)


# --------------------------------------------------------------------------------------------
# Block sizes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blocks:
    """Tile sizes and launch options. block_d: the D step of the distance tile; block_do: the D
    chunk of a gradient one backward program writes (grid axis 1 = cdiv(D, block_do))."""

    fwd_m: int
    fwd_n: int
    bwd_m: int
    bwd_n: int
    block_d: int
    block_do: int
    num_warps: int = 4
    num_stages: int = 2


def default_blocks(D: int, dtype: torch.dtype, device: torch.device, precision: str = "ieee") -> Blocks:
    if device.type != "cuda":
        # interpreter: small tiles, several per test shape so ragged edges are exercised
        return Blocks(fwd_m=16, fwd_n=16, bwd_m=16, bwd_n=16, block_d=16, block_do=32)
    # Not timed on hardware yet; chosen from the sm_90 static report (bench/static_report.py),
    # the largest tiles that build without register spills at D = 128:
    if dtype == torch.float32:
        # 4-byte operands. "ieee" (no tensor cores: the tile product is FFMA work) spills
        # 0.9-5 KB per thread at 64×64 / 4 warps; 64×32 forward and 32×32 backward tiles over
        # 8 warps with a D step of 16 do not (a D step of 32 left 8 B of stack in the backward);
        # tf32 takes 64×32 backward tiles and a D step of 32
        tf32 = precision == "tf32"
        return Blocks(fwd_m=64, fwd_n=32, bwd_m=64 if tf32 else 32, bwd_n=32,
                      block_d=_host.pow2(D, 16, 32 if tf32 else 16), block_do=_host.pow2(D, 16, 32),
                      num_warps=8, num_stages=2)
    # fp16/bf16: 64×64 forward tiles; the backward's near-pair paths need 64×32 tiles and
    # 32-wide gradient chunks to stay in registers (64×64 / 64-wide spilled 240-496 B); the D
    # step of 128 (not 64) keeps triton 3.6's forward build from spilling too
    return Blocks(fwd_m=64, fwd_n=64, bwd_m=64, bwd_n=32, block_d=_host.pow2(D, 16, 128),
                  block_do=_host.pow2(D, 16, 32), num_warps=8, num_stages=2)


# --------------------------------------------------------------------------------------------
# Registered ops "fastcontrast::pair_margin_fwd" / "_bwd" (kernels/_host.py)
# --------------------------------------------------------------------------------------------

def _filtered(keep) -> bool:
    """Whether (pos_low, pos_high, neg_low, neg_high) filters anything (see PairMarginConfig)."""
    return tuple(keep) != (0.0, math.inf, 0.0, math.inf)


def _fwd_impl(q: torch.Tensor, r: torch.Tensor, q_labels: torch.Tensor, r_labels: torch.Tensor,
              unit: torch.Tensor, shift: torch.Tensor, bounds: torch.Tensor, kind: int, negate: bool, power: int,
              pos_margin: float, neg_margin: float, self_offset: int, precision: str, near_tol: float,
              keep: list[float], has_shift: bool, bound_slack: float, row_bounds: bool, block_m: int,
              block_n: int, block_d: int, num_warps: int, num_stages: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    M, D = q.shape
    N = r.shape[0]
    values = torch.empty((M, 2), dtype=torch.float32, device=q.device)
    counts = torch.empty((M, 2), dtype=torch.int64, device=q.device)
    nonzero = torch.empty((M, 2), dtype=torch.int64, device=q.device)
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    _host.launchable(_pair_margin_fwd_kernel)[(triton.cdiv(M, block_m),)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, shift, values, counts, nonzero, bounds,
        M, N, q.stride(0), r.stride(0), near_tol, self_offset, pos_margin, neg_margin, *keep, bound_slack,
        D=D, KIND=kind, NEGATE=negate, POWER=power, FILTERED=_filtered(keep), PRECISION=precision,
        HAS_SHIFT=has_shift, ROW_BOUNDS=row_bounds,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps, num_stages=num_stages)
    return values, counts, nonzero


def _bwd_impl(grad_values: torch.Tensor, q: torch.Tensor, r: torch.Tensor, q_labels: torch.Tensor,
              r_labels: torch.Tensor, unit: torch.Tensor, shift: torch.Tensor, bounds: torch.Tensor, kind: int,
              negate: bool, power: int, pos_margin: float, neg_margin: float, self_offset: int, precision: str,
              near_tol: float, keep: list[float], has_shift: bool, bound_slack: float, row_bounds: bool,
              block_m: int, block_n: int, block_d: int, block_do: int,
              num_warps: int, num_stages: int) -> tuple[torch.Tensor, torch.Tensor]:
    M, D = q.shape
    N = r.shape[0]
    grad_q = torch.empty_like(q)
    grad_r = torch.empty_like(r)
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    d_chunks = triton.cdiv(D, block_do)
    common = dict(D=D, KIND=kind, NEGATE=negate, POWER=power, FILTERED=_filtered(keep), PRECISION=precision,
                  HAS_SHIFT=has_shift, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DO=block_do,
                  ROW_BOUNDS=row_bounds, num_warps=num_warps, num_stages=num_stages)
    _host.launchable(_pair_margin_bwd_q_kernel)[(triton.cdiv(M, block_m), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, shift, grad_values, grad_q, bounds,
        M, N, q.stride(0), r.stride(0), grad_q.stride(0), near_tol, self_offset, pos_margin, neg_margin, *keep,
        bound_slack, **common)
    _host.launchable(_pair_margin_bwd_r_kernel)[(triton.cdiv(N, block_n), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, shift, grad_values, grad_r, bounds,
        M, N, q.stride(0), r.stride(0), grad_r.stride(0), near_tol, self_offset, pos_margin, neg_margin, *keep,
        bound_slack, **common)
    return grad_q, grad_r


def _fwd_fake(q, r, q_labels, r_labels, unit, shift, bounds, kind, negate, power, pos_margin, neg_margin, self_offset,
              precision, near_tol, keep, has_shift, bound_slack, row_bounds, block_m, block_n, block_d, num_warps,
              num_stages):
    M = q.shape[0]
    return (q.new_empty((M, 2), dtype=torch.float32), q.new_empty((M, 2), dtype=torch.int64),
            q.new_empty((M, 2), dtype=torch.int64))


def _bwd_fake(grad_values, q, r, q_labels, r_labels, unit, shift, bounds, kind, negate, power, pos_margin,
              neg_margin, self_offset, precision, near_tol, keep, has_shift, bound_slack, row_bounds, block_m,
              block_n, block_d, block_do, num_warps, num_stages):
    return torch.empty_like(q), torch.empty_like(r)


pair_margin_fwd_op, pair_margin_bwd_op = _host.register_ops("pair_margin", _fwd_impl, _bwd_impl, _fwd_fake, _bwd_fake)


# --------------------------------------------------------------------------------------------
# The seam (fastcontrast/configs.py)
# --------------------------------------------------------------------------------------------
def _codes(cfg: PairMarginConfig) -> int:
    kind = _host.metric_code(cfg)
    if cfg.power not in (1, 2):
        raise ValueError(f"cfg.power must be 1 or 2, got {cfg.power!r}")
    return kind


def _args(cfg: PairMarginConfig, kind: int, dtype: torch.dtype, has_shift: bool = False):
    return (kind, bool(cfg.negate), int(cfg.power), float(cfg.pos_margin), float(cfg.neg_margin),
            int(cfg.self_offset), cfg.precision, metrics.near_tolerance(dtype, cfg.precision),
            [float(v) for v in (*cfg.pos_keep, *cfg.neg_keep)], has_shift, float(cfg.bound_slack),
            bool(cfg.row_bounds))


def _bounds(cfg: PairMarginConfig, bounds, device):
    """The (B, 2) row bounds as float32 (true units), or an empty tensor (never read)."""
    if cfg.row_bounds != (bounds is not None):
        raise ValueError("cfg.row_bounds and a bounds tensor come together")
    if bounds is None:
        return torch.empty(0, dtype=torch.float32, device=device)
    return bounds.detach().to(device=device, dtype=torch.float32).contiguous()


def _shift(shift, device):
    """The per-anchor margin shift as float32 (true units), or an empty tensor (never read)."""
    if shift is None:
        return torch.empty(0, dtype=torch.float32, device=device)
    return shift.detach().to(device=device, dtype=torch.float32).contiguous()


def forward(q, r, q_labels, r_labels, cfg: PairMarginConfig, blocks: Blocks | None = None, shift=None,
            bounds=None):
    """-> (values (B, 2) float32, counts (B, 2) int64, nonzero (B, 2) int64, saved). shift (B,):
    anchor i's margins moved by shift_i (MarginLoss's β); saved is then (nonzero,), from which
    backward gives shift's gradient (POWER 1: −g⁺_i·nonzero⁺_i + g⁻_i·nonzero⁻_i)."""
    kind = _codes(cfg)
    if shift is not None and cfg.power != 1:
        raise ValueError("a per-anchor margin shift needs power=1")
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "pair-margin")
    q, r, _, unit = _host.frame(q, r, kind)
    b = blocks or default_blocks(q.shape[1], q.dtype, q.device, cfg.precision)
    values, counts, nonzero = pair_margin_fwd_op(q, r, q_labels, r_labels, unit, _shift(shift, q.device),
                                                 _bounds(cfg, bounds, q.device),
                                                 *_args(cfg, kind, q.dtype, shift is not None),
                                                 b.fwd_m, b.fwd_n, b.block_d, b.num_warps, b.num_stages)
    return values, counts, nonzero, (() if shift is None else (nonzero,))


def backward(grad_values, q, r, q_labels, r_labels, cfg: PairMarginConfig, saved, blocks: Blocks | None = None,
             shift=None, bounds=None):
    """-> (grad_q like q, grad_r like r), and grad_shift (B,) when shift is given."""
    kind = _codes(cfg)
    q_dtype, r_dtype = q.dtype, r.dtype
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "pair-margin")
    q, r, s, unit = _host.frame(q, r, kind)
    b = blocks or default_blocks(q.shape[1], q.dtype, q.device, cfg.precision)
    grad_values = _host.upstream_grad(grad_values, q.device)
    grad_q, grad_r = pair_margin_bwd_op(grad_values, q, r, q_labels, r_labels, unit, _shift(shift, q.device),
                                        _bounds(cfg, bounds, q.device),
                                        *_args(cfg, kind, q.dtype, shift is not None),
                                        b.bwd_m, b.bwd_n, b.block_d, b.block_do, b.num_warps, b.num_stages)
    # the kernels' coefficients are in true units against frame rows: ∂L/∂x = s · their rows
    grads = (grad_q.float() * s).to(q_dtype), (grad_r.float() * s).to(r_dtype)
    if shift is None:
        return grads
    (nonzero,) = saved
    g = grad_values.float()
    grad_shift = g[:, 1] * nonzero[:, 1].float() - g[:, 0] * nonzero[:, 0].float()
    return (*grads, grad_shift.to(shift.dtype))
