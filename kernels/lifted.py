"""Lifted structure loss: the per-positive-pair pass, as Triton kernels and their launchers.

Anchors q (B×D, labels y), references r (N×D, labels y'); t_ij is the metric tile
(kernels/tiles.py) and l_ij = t_ij, or −t_ij for a distance (NEGATE). Given each anchor row's
log-sum-exp over its negatives, L_x = LSE_{n∈N_x} (l_xn − shift_neg) (the softmax kernels'
"glifted" forward; −inf when x has none), per positive pair (i, p):

    U_ip = logaddexp(L_i, L_p)   (L_p = −inf for a reference column p ≥ B; U_ii = L_i)
    h_ip = relu(U⁰_ip + shift_pos − l_ip),   U⁰ = U, or 0 where U = −inf (a union of nothing)
    v_i  = Σ_{p∈P_i} h_ip² / 2

Forward, one program per block of anchor rows, streaming over reference tiles: v_i and |P_i|.
Tiles without a positive pair are skipped before their dot product.

Backward, with g_i the upstream gradient of v_i:
    ∂L/∂l_ip = −g_i·h_ip                                        (the positive pairs)
    W_x = Σ_{(i,p): x∈{i,p}} g_i·h_ip·exp(L_x − U_ip)   (U finite; the pair (x, x) counts once)
W_x is the weight of anchor row x's negatives (∂L/∂l_xn = W_x·softmax_{N_x}(b)_n, which the
caller gets from the "glifted" backward kernels). Two kernels, each over the same positive
tiles: rows (one program per anchor block and D chunk) give grad_q of the positive pairs and
W's row part Σ_p g_x·h_xp·exp(L_x − U_xp); columns (one program per reference block and D
chunk) give grad_r and W's column part Σ_i g_i·h_ix·exp(L_x − U_ix) (i ≠ x, x < B), which the
host adds. With c_ij = ∂L/∂(tile entry) (negated for a distance; over 2d, 0 at d = 0, for the
Euclidean one) the gradient rows are tiles.accumulate_row_grad / store_row_grad's, near pairs
from the row difference. Every output element is written by one program: no atomics.

Row bounds (cfg.row_bounds: a fused miner selection, (B, 2) float32 in l units): a positive
pair (i, p) counts only where l_ip − slack < bounds_i0 (ROW_BOUNDS, compiled out otherwise);
the negatives' bounds are the "glifted" kernels'.

Distances in the frame of _host.frame (true tile = unit × the kernel's; margins compare true
values; ∂L/∂x = s × the kernels' rows). Registered as "fastcontrast::lifted_fwd" /
"fastcontrast::lifted_bwd" (kernels/_host.py) so torch.compile can trace a step with the loss.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastcontrast import metrics
from fastcontrast.configs import SoftmaxConfig

from . import _host, pair_margin, tiles


# --------------------------------------------------------------------------------------------
# Tile-level math
# --------------------------------------------------------------------------------------------
@triton.jit
def _logaddexp(a, b):
    """log(eᵃ + eᵇ), −inf when both are −inf."""
    top = tl.maximum(a, b)
    low = tl.minimum(a, b)
    finite = top > float("-inf")
    x = tl.exp(low - tl.where(finite, top, 0.0))  # in [0, 1]
    return tl.where(finite, top + tl.where(x < 1e-4, x * (1.0 - 0.5 * x), tl.log(1.0 + x)), float("-inf"))


@triton.jit
def _pair_hinges(t, pos, lse_row, lse_col, offs_m, offs_n, shift_pos, NEGATE: tl.constexpr):
    """(U, whether U is finite, h) of a tile: U = −inf off a union of negatives, h = 0 off P."""
    if NEGATE:
        logits = -t
    else:
        logits = t
    itself = offs_m[:, None] == offs_n[None, :]
    union = tl.where(itself, lse_row[:, None], _logaddexp(lse_row[:, None], lse_col[None, :]))
    finite = union > float("-inf")
    h = tl.where(pos, tl.maximum(tl.where(finite, union, 0.0) + shift_pos - logits, 0.0), 0.0)
    return union, finite, itself, h


@triton.jit
def _tile_coef(gh, t, KIND: tl.constexpr, NEGATE: tl.constexpr):
    """c = ∂L/∂(tile entry) from ∂L/∂l = −gh (∂L/∂(squared distance) for the Euclidean kind)."""
    if NEGATE:
        c = gh
    else:
        c = -gh
    if KIND == 2:
        c = tiles.euclidean_grad_scale(c, t)
    return c


@triton.jit
def _bounded(pos, t, bounds_ptr, offs_m, M, bound_slack, NEGATE: tl.constexpr):
    """pos restricted by the row bounds (a fused miner selection): l − slack < b_i0."""
    if NEGATE:
        logits = -t
    else:
        logits = t
    pos_below, neg_above = tiles.load_row_bounds(bounds_ptr, offs_m, M)
    kept, _ = tiles.row_bounded(pos, pos, logits, pos_below, neg_above, bound_slack)
    return kept


@triton.jit
def _row_lse(lse_ptr, offs, n):
    """L at offs, −inf past the n anchor rows (a reference column p ≥ B has no row)."""
    return tl.load(lse_ptr + offs, mask=offs < n, other=float("-inf"))


@triton.jit
def _hinge_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, bounds_ptr, pos, unit, lse_row, lse_col, offs_m, offs_n, M, N, D,
                stride_q, stride_r, near_tol, shift_pos, bound_slack, KIND: tl.constexpr, NEGATE: tl.constexpr,
                PRECISION: tl.constexpr, ROW_BOUNDS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    """One tile that holds a positive pair, shared by the three kernels: (t in the kernels'
    frame, t in true units, the positives after the row bounds, U, whether U is finite,
    the self-pair mask, h)."""
    t_frame = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                                  near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    t = t_frame * unit
    if ROW_BOUNDS:
        pos = _bounded(pos, t, bounds_ptr, offs_m, M, bound_slack, NEGATE)
    union, finite, itself, h = _pair_hinges(t, pos, lse_row, lse_col, offs_m, offs_n, shift_pos, NEGATE)
    return t_frame, t, pos, union, finite, itself, h


# --------------------------------------------------------------------------------------------
# Forward: v_i and |P_i|
# --------------------------------------------------------------------------------------------
@triton.jit
def _lifted_fwd_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, lse_ptr, bounds_ptr,
                       values_ptr, n_pos_ptr,
                       M, N, stride_q, stride_r, near_tol, self_offset, shift_pos, bound_slack,
                       D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                       ROW_BOUNDS: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    unit = tl.load(unit_ptr)  # true distance = unit × the frame's (see _host.frame)
    lse_row = _row_lse(lse_ptr, offs_m, M)
    total = tl.zeros((BLOCK_M,), tl.float32)
    n_pos = tl.zeros((BLOCK_M,), tl.int32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if tl.sum(pos.to(tl.int32)) > 0:
            _, _, pos, _, _, _, h = _hinge_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, bounds_ptr, pos, unit, lse_row,
                                                _row_lse(lse_ptr, offs_n, M), offs_m, offs_n, M, N, D, stride_q,
                                                stride_r, near_tol, shift_pos, bound_slack, KIND, NEGATE,
                                                PRECISION, ROW_BOUNDS, BLOCK_M, BLOCK_N, BLOCK_D)
            total += tl.sum(h * h, 1)
            n_pos += tl.sum(pos.to(tl.int32), 1)
    in_m = offs_m < M
    tl.store(values_ptr + offs_m, 0.5 * total, mask=in_m)
    tl.store(n_pos_ptr + offs_m, n_pos.to(tl.int64), mask=in_m)


# --------------------------------------------------------------------------------------------
# Backward: grad_q and W's row part (rows), grad_r and W's column part (columns)
# --------------------------------------------------------------------------------------------
@triton.jit
def _lifted_bwd_q_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, lse_ptr, bounds_ptr, grad_ptr,
                         grad_q_ptr, weight_ptr,
                         M, N, stride_q, stride_r, stride_gq, near_tol, self_offset, shift_pos, bound_slack,
                         D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                         ROW_BOUNDS: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_DO: tl.constexpr):
    pid_d = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_do = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)  # the D chunk of grad_q this program writes
    in_m = offs_m < M
    unit = tl.load(unit_ptr)
    g = tl.load(grad_ptr + offs_m, mask=in_m, other=0.0)
    lse_row = _row_lse(lse_ptr, offs_m, M)

    acc = tl.zeros((BLOCK_M, BLOCK_DO), tl.float32)  # Σ_j c_ij r_j
    coef_sum = tl.zeros((BLOCK_M,), tl.float32)      # Σ_j c_ij (distance kinds)
    weight = tl.zeros((BLOCK_M,), tl.float32)        # W's row part
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if tl.sum(pos.to(tl.int32)) > 0:
            t_frame, t, pos, union, finite, _, h = _hinge_tile(
                q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, bounds_ptr, pos, unit, lse_row, _row_lse(lse_ptr, offs_n, M),
                offs_m, offs_n, M, N, D, stride_q, stride_r, near_tol, shift_pos, bound_slack, KIND, NEGATE,
                PRECISION, ROW_BOUNDS, BLOCK_M, BLOCK_N, BLOCK_D)
            gh = g[:, None] * h
            share = tl.exp(lse_row[:, None] - tl.where(finite, union, 0.0))  # e^{L_i − U_ip}
            weight += tl.sum(tl.where(finite & pos, gh * share, 0.0), 1)
            c = _tile_coef(gh, t, KIND, NEGATE)
            r_chunk = tiles.load_rows(r_ptr, offs_n, offs_do, N, D, stride_r)
            acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t_frame, r_chunk, q_ptr, r_ptr, offs_m, n0,
                                                      offs_do, M, N, D, stride_q, stride_r, q_sq_ptr, r_sq_ptr,
                                                      offs_m, offs_n, M, N, near_tol, KIND, PRECISION, BLOCK_N, True)

    tiles.store_row_grad(grad_q_ptr, q_ptr, acc, coef_sum, offs_m, offs_do, M, D, stride_q, stride_gq, KIND)
    if pid_d == 0:
        tl.store(weight_ptr + offs_m, weight, mask=in_m)


@triton.jit
def _lifted_bwd_r_kernel(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, unit_ptr, lse_ptr, bounds_ptr, grad_ptr,
                         grad_r_ptr, weight_ptr,
                         M, N, stride_q, stride_r, stride_gr, near_tol, self_offset, shift_pos, bound_slack,
                         D: tl.constexpr, KIND: tl.constexpr, NEGATE: tl.constexpr, PRECISION: tl.constexpr,
                         ROW_BOUNDS: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_DO: tl.constexpr):
    pid_d = tl.program_id(1)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_do = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    unit = tl.load(unit_ptr)
    lse_col = _row_lse(lse_ptr, offs_n, M)

    acc = tl.zeros((BLOCK_N, BLOCK_DO), tl.float32)  # Σ_i c_ij q_i
    coef_sum = tl.zeros((BLOCK_N,), tl.float32)      # Σ_i c_ij (distance kinds)
    weight = tl.zeros((BLOCK_N,), tl.float32)        # W's column part
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
        if tl.sum(pos.to(tl.int32)) > 0:
            in_m = offs_m < M
            g = tl.load(grad_ptr + offs_m, mask=in_m, other=0.0)
            lse_row = _row_lse(lse_ptr, offs_m, M)
            t_frame, t, pos, union, finite, itself, h = _hinge_tile(
                q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, bounds_ptr, pos, unit, lse_row, lse_col, offs_m, offs_n, M, N, D,
                stride_q, stride_r, near_tol, shift_pos, bound_slack, KIND, NEGATE, PRECISION, ROW_BOUNDS,
                BLOCK_M, BLOCK_N, BLOCK_D)
            gh = g[:, None] * h
            share = tl.exp(lse_col[None, :] - tl.where(finite, union, 0.0))  # e^{L_p − U_ip}
            weight += tl.sum(tl.where(finite & pos & ~itself, gh * share, 0.0), 0)
            c = _tile_coef(gh, t, KIND, NEGATE)
            q_chunk = tiles.load_rows(q_ptr, offs_m, offs_do, M, D, stride_q)
            acc, coef_sum = tiles.accumulate_row_grad(acc, coef_sum, c, t_frame, q_chunk, r_ptr, q_ptr, offs_n, m0,
                                                      offs_do, N, M, D, stride_r, stride_q, q_sq_ptr, r_sq_ptr,
                                                      offs_m, offs_n, M, N, near_tol, KIND, PRECISION, BLOCK_M, False)

    tiles.store_row_grad(grad_r_ptr, r_ptr, acc, coef_sum, offs_n, offs_do, N, D, stride_r, stride_gr, KIND)
    if pid_d == 0:
        tl.store(weight_ptr + offs_n, weight, mask=(offs_n < N) & (offs_n < M))  # columns with an anchor row


# --------------------------------------------------------------------------------------------
# Registered ops "fastcontrast::lifted_fwd" / "_bwd" (kernels/_host.py)
# --------------------------------------------------------------------------------------------
def _fwd_impl(q: torch.Tensor, r: torch.Tensor, q_labels: torch.Tensor, r_labels: torch.Tensor,
              unit: torch.Tensor, row_lse: torch.Tensor, bounds: torch.Tensor, kind: int, negate: bool,
              shift_pos: float, bound_slack: float, row_bounds: bool, self_offset: int, precision: str,
              near_tol: float, block_m: int, block_n: int, block_d: int, num_warps: int, num_stages: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    M, D = q.shape
    N = r.shape[0]
    values = torch.zeros((M,), dtype=torch.float32, device=q.device)
    n_pos = torch.zeros((M,), dtype=torch.int64, device=q.device)
    if M == 0 or N == 0:
        return values, n_pos
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    _host.launchable(_lifted_fwd_kernel)[(triton.cdiv(M, block_m),)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, row_lse, bounds, values, n_pos,
        M, N, q.stride(0), r.stride(0), near_tol, self_offset, shift_pos, bound_slack,
        D=D, KIND=kind, NEGATE=negate, PRECISION=precision, ROW_BOUNDS=row_bounds, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=num_warps, num_stages=num_stages)
    return values, n_pos


def _bwd_impl(grad_values: torch.Tensor, q: torch.Tensor, r: torch.Tensor, q_labels: torch.Tensor,
              r_labels: torch.Tensor, unit: torch.Tensor, row_lse: torch.Tensor, bounds: torch.Tensor, kind: int,
              negate: bool, shift_pos: float, bound_slack: float, row_bounds: bool, self_offset: int,
              precision: str, near_tol: float, block_m: int, block_n: int, block_d: int, block_do: int,
              num_warps: int, num_stages: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (grad_q, grad_r) float32 in frame rows, W (M,) float32."""
    M, D = q.shape
    N = r.shape[0]
    grad_q = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    grad_r = torch.zeros(r.shape, dtype=torch.float32, device=q.device)
    weight_rows = torch.zeros((M,), dtype=torch.float32, device=q.device)
    weight_cols = torch.zeros((M,), dtype=torch.float32, device=q.device)  # entries x < min(M, N) are written
    if M == 0 or N == 0 or D == 0:
        return grad_q, grad_r, weight_rows
    q_sq, r_sq = _host.squared_norms(q, kind), _host.squared_norms(r, kind)
    d_chunks = triton.cdiv(D, block_do)
    common = dict(D=D, KIND=kind, NEGATE=negate, PRECISION=precision, ROW_BOUNDS=row_bounds, BLOCK_M=block_m, BLOCK_N=block_n,
                  BLOCK_D=block_d, BLOCK_DO=block_do, num_warps=num_warps, num_stages=num_stages)
    _host.launchable(_lifted_bwd_q_kernel)[(triton.cdiv(M, block_m), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, row_lse, bounds, grad_values, grad_q, weight_rows,
        M, N, q.stride(0), r.stride(0), grad_q.stride(0), near_tol, self_offset, shift_pos, bound_slack, **common)
    _host.launchable(_lifted_bwd_r_kernel)[(triton.cdiv(N, block_n), d_chunks)](
        q, r, q_sq, r_sq, q_labels, r_labels, unit, row_lse, bounds, grad_values, grad_r, weight_cols,
        M, N, q.stride(0), r.stride(0), grad_r.stride(0), near_tol, self_offset, shift_pos, bound_slack, **common)
    return grad_q, grad_r, weight_rows + weight_cols


def _fwd_fake(q, r, q_labels, r_labels, unit, row_lse, bounds, kind, negate, shift_pos, bound_slack, row_bounds,
              self_offset, precision, near_tol, block_m, block_n, block_d, num_warps, num_stages):
    M = q.shape[0]
    return q.new_empty((M,), dtype=torch.float32), q.new_empty((M,), dtype=torch.int64)


def _bwd_fake(grad_values, q, r, q_labels, r_labels, unit, row_lse, bounds, kind, negate, shift_pos, bound_slack,
              row_bounds, self_offset, precision, near_tol, block_m, block_n, block_d, block_do, num_warps, num_stages):
    return (q.new_empty(q.shape, dtype=torch.float32), r.new_empty(r.shape, dtype=torch.float32),
            q.new_empty((q.shape[0],), dtype=torch.float32))


lifted_fwd_op, lifted_bwd_op = _host.register_ops("lifted", _fwd_impl, _bwd_impl, _fwd_fake, _bwd_fake)


# --------------------------------------------------------------------------------------------
# The seam: cfg a SoftmaxConfig with variant "lifted" (fastcontrast/_lifted_triton.py)
# --------------------------------------------------------------------------------------------
def default_blocks(D: int, dtype: torch.dtype, device: torch.device, precision: str = "ieee") -> pair_margin.Blocks:
    """Not timed on hardware yet. The kernels have the pair-margin kernels' tile, masks and
    gradient rows plus a logaddexp per entry: float32 (and the interpreter) takes their blocks,
    which build without spills here too at D = 64, 128 and 1024 (sm_90, triton 3.9); for
    fp16/bf16 their D step of 128 spilled 112-416 B, a D step of 32 does not."""
    if device.type != "cuda" or dtype == torch.float32:
        return pair_margin.default_blocks(D, dtype, device, precision)
    return pair_margin.Blocks(fwd_m=64, fwd_n=64, bwd_m=64, bwd_n=32, block_d=_host.pow2(D, 16, 32),
                              block_do=_host.pow2(D, 16, 32), num_warps=8, num_stages=2)


def _prepare(q, r, q_labels, r_labels, cfg: SoftmaxConfig, bounds):
    kind = _host.metric_code(cfg)
    if cfg.masked_refs:
        raise ValueError("masked_refs (absent reference columns) is not an option of the lifted kernels")
    q, r, q_labels, r_labels = _host.prepare(q, r, q_labels, r_labels, "lifted")
    q, r, s, unit = _host.frame(q, r, kind)
    b = default_blocks(q.shape[1], q.dtype, q.device, cfg.precision)
    if cfg.row_bounds and bounds is None:
        raise ValueError("cfg.row_bounds needs a bounds tensor")
    # the (B, 2) row bounds in true l units, float32 (an empty placeholder without)
    bounds = (bounds.detach().to(device=q.device, dtype=torch.float32).contiguous() if cfg.row_bounds
              else torch.empty((0,), dtype=torch.float32, device=q.device))
    args = (bounds, kind, kind != tiles.KIND_CODES["dot"], float(cfg.shift_pos), float(cfg.bound_slack),
            bool(cfg.row_bounds), int(cfg.self_offset), cfg.precision, metrics.near_tolerance(q.dtype, cfg.precision))
    return q, r, q_labels, r_labels, s, unit, b, args


def forward(q, r, q_labels, r_labels, cfg: SoftmaxConfig, row_lse, bounds=None):
    """-> (values (B,) float32, n_pos (B,) int64), given row_lse (B,) float32 = L; bounds: the
    (B, 2) row bounds with cfg.row_bounds (a positive pair counts where l − slack < bounds_i0)."""
    q, r, q_labels, r_labels, _, unit, b, args = _prepare(q, r, q_labels, r_labels, cfg, bounds)
    return lifted_fwd_op(q, r, q_labels, r_labels, unit, row_lse.float().contiguous(), *args,
                         b.fwd_m, b.fwd_n, b.block_d, b.num_warps, b.num_stages)


def backward(grad_values, q, r, q_labels, r_labels, cfg: SoftmaxConfig, row_lse, bounds=None):
    """-> (grad_q, grad_r) of the positive pairs' terms, float32 in true units, and W (B,)
    float32, the weights of each anchor row's negatives."""
    q, r, q_labels, r_labels, s, unit, b, args = _prepare(q, r, q_labels, r_labels, cfg, bounds)
    grad_q, grad_r, weight = lifted_bwd_op(_host.upstream_grad(grad_values, q.device), q, r, q_labels, r_labels,
                                           unit, row_lse.float().contiguous(), *args,
                                           b.bwd_m, b.bwd_n, b.block_d, b.block_do, b.num_warps, b.num_stages)
    return grad_q * s, grad_r * s, weight
