"""Shared @triton.jit helpers: the distance tile and the label masks.

The math (same formulas as fastcontrast/metrics.py, the PyTorch path):

    dot          s_ij = q_i·r_j
    sqeuclidean  d_ij = ‖q_i‖² + ‖r_j‖² − 2 q_i·r_j, clamped at 0; entries inside the band
                 near_tol·(‖q_i‖² + ‖r_j‖²) (near-duplicate rows, where the expansion
                 cancels) are recomputed as Σ_d (q_id − r_jd)², only on tiles that have one
    euclidean    sqrt of the above (gradient 0 at d = 0; see `euclidean_grad_scale`)

Masks from label vectors, never from a B×N tensor in memory:

    valid_ij = i < M and j < N and label_j ≥ 0 and j != i + self_offset   (self_offset < 0: no
               self-pair; the host's label ids are ≥ 0, and −1 marks a reference column that
               is absent: N-pair's fixed-size column set)
    pos_ij   = valid_ij and label_i == label_j
    neg_ij   = valid_ij and label_i != label_j

Gradient rows (`store_row_grad`): with c_ij = ∂L/∂(tile entry) accumulated against the other
side's rows, acc_i = Σ_j c_ij y_j and coef_sum_i = Σ_j c_ij,
    dot          grad x_i = acc_i
    squared      grad x_i = 2·coef_sum_i·x_i − 2·acc_i   (euclidean: c already over 2d)
"""
import triton
import triton.language as tl

KIND_DOT = tl.constexpr(0)
KIND_SQEUCLIDEAN = tl.constexpr(1)
KIND_EUCLIDEAN = tl.constexpr(2)
KIND_CODES = {"dot": 0, "sqeuclidean": 1, "euclidean": 2}


@triton.jit
def dot_tile(q_ptr, r_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             PRECISION: tl.constexpr):
    """q[offs_m] · r[offs_n]ᵀ accumulated in fp32 over D in BLOCK_D steps (rows past M/N read 0)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    q_rows = offs_m.to(tl.int64)[:, None] * stride_q
    r_rows = offs_n.to(tl.int64)[:, None] * stride_r
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        q = tl.load(q_ptr + q_rows + offs_d[None, :], mask=(offs_m[:, None] < M) & (offs_d[None, :] < D), other=0.0)
        r = tl.load(r_ptr + r_rows + offs_d[None, :], mask=(offs_n[:, None] < N) & (offs_d[None, :] < D), other=0.0)
        acc = tl.dot(q, tl.trans(r), acc, input_precision=PRECISION)
    return acc


@triton.jit
def row_block(ptr, offs_rows, n_rows, stride, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows offs_rows, columns 0 … BLOCK_D − 1 (D ≤ BLOCK_D: the whole row) of a row-major matrix,
    0 outside it: the operand of a one-step tile product, loaded once per program. No column
    mask when D == BLOCK_D."""
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = ptr + offs_rows.to(tl.int64)[:, None] * stride + offs_d[None, :]
    if D == BLOCK_D:
        return tl.load(ptrs, mask=(offs_rows < n_rows)[:, None], other=0.0)
    return tl.load(ptrs, mask=(offs_rows[:, None] < n_rows) & (offs_d[None, :] < D), other=0.0)


@triton.jit
def full_row_block(ptr, offs_rows, stride, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """`row_block` for rows that all exist (an interior tile): no row mask."""
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = ptr + offs_rows.to(tl.int64)[:, None] * stride + offs_d[None, :]
    if D == BLOCK_D:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)


@triton.jit
def difference_sq_tile(q_ptr, r_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Σ_d (q_id − r_jd)² in fp32 for a BLOCK_M×BLOCK_N tile (exact for identical rows), one
    column d at a time: only two tiles live, so the rare tiles that need it cost no registers
    in the main loop."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    q_rows = q_ptr + offs_m.to(tl.int64) * stride_q
    r_rows = r_ptr + offs_n.to(tl.int64) * stride_r
    for d in range(0, D):
        q = tl.load(q_rows + d, mask=offs_m < M, other=0.0).to(tl.float32)
        r = tl.load(r_rows + d, mask=offs_n < N, other=0.0).to(tl.float32)
        diff = q[:, None] - r[None, :]
        acc += diff * diff
    return acc


@triton.jit
def distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r, near_tol,
                  KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                  PRECISION: tl.constexpr):
    """A BLOCK_M×BLOCK_N fp32 tile of the metric KIND. q_sq/r_sq hold fp32 squared row norms
    (unused for KIND_DOT)."""
    dot = dot_tile(q_ptr, r_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                   BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    return metric_from_dot(dot, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                           near_tol, KIND, BLOCK_M, BLOCK_N)


@triton.jit
def metric_from_dot(dot, q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r, near_tol,
                    KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The metric tile of `distance_tile` from its dot-product tile (however that was computed)."""
    if KIND == 0:
        return dot
    q_sq = tl.load(q_sq_ptr + offs_m, mask=offs_m < M, other=0.0)
    r_sq = tl.load(r_sq_ptr + offs_n, mask=offs_n < N, other=0.0)
    scale = q_sq[:, None] + r_sq[None, :]
    sq = tl.maximum(scale - 2.0 * dot, 0.0)
    near = (sq <= near_tol * scale) & (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if tl.sum(near.to(tl.int32)) > 0:
        exact = difference_sq_tile(q_ptr, r_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r, BLOCK_M, BLOCK_N)
        sq = tl.where(near, exact, sq)
    if KIND == 1:
        return sq
    return tl.sqrt(sq)


@triton.jit
def euclidean_grad_scale(grad, dist):
    """dL/d(squared distance) from dL/d(distance): g / (2d), and 0 where d = 0."""
    return tl.where(dist > 0.0, grad / (2.0 * tl.where(dist > 0.0, dist, 1.0)), 0.0)


@triton.jit
def pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset, MASKED_REFS: tl.constexpr = True):
    """(valid, pos, neg) boolean tiles; self_offset < 0 means no self-pair exclusion.
    MASKED_REFS=False: the caller knows no label is −1 (columns past N are the only absent
    ones), which saves the label compare's share of the loop in some kernels."""
    in_m = offs_m < M
    q_lab = tl.load(q_lab_ptr + offs_m, mask=in_m, other=-1)
    r_lab = tl.load(r_lab_ptr + offs_n, mask=offs_n < N, other=-2)
    if MASKED_REFS:
        inside = in_m[:, None] & (r_lab >= 0)[None, :]  # −2 past N, −1 on a column the host masks out
    else:
        inside = in_m[:, None] & (offs_n < N)[None, :]
    not_self = (offs_n[None, :] != (offs_m[:, None] + self_offset)) | (self_offset < 0)
    valid = inside & not_self
    same = q_lab[:, None] == r_lab[None, :]
    return valid, valid & same, valid & (~same)


@triton.jit
def load_row_bounds(bounds_ptr, offs_m, M):
    """A fused miner selection's row bounds (the kernels' ROW_BOUNDS): anchor i's (b_i0, b_i1)
    at bounds_ptr[2i], [2i + 1], as columns; rows past M have no valid pair anyway."""
    in_m = offs_m < M
    b0 = tl.load(bounds_ptr + 2 * offs_m, mask=in_m, other=float("-inf"))
    b1 = tl.load(bounds_ptr + 2 * offs_m + 1, mask=in_m, other=float("inf"))
    return b0[:, None], b1[:, None]


@triton.jit
def row_bounded(pos, neg, l, pos_below, neg_above, slack):
    """The masks restricted to a fused miner selection, in units of l (a similarity, or −d):
    positives with l − slack < pos_below, negatives with l + slack > neg_above."""
    return pos & (l - slack < pos_below), neg & (l + slack > neg_above)


@triton.jit
def load_rows(ptr, offs_rows, offs_d, n_rows, D, stride):
    """Rows offs_rows, columns offs_d of a row-major n_rows×D matrix (0 outside it)."""
    mask = (offs_rows[:, None] < n_rows) & (offs_d[None, :] < D)
    return tl.load(ptr + offs_rows.to(tl.int64)[:, None] * stride + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def store_row_grad(out_ptr, x_ptr, acc, coef_sum, offs_rows, offs_d, n_rows, D, stride_x, stride_out,
                   KIND: tl.constexpr):
    """Writes the gradient of rows x (see the module docstring) in out's dtype; coef_sum is
    read only for the distance kinds."""
    if KIND == 0:
        grad = acc
    else:
        x = load_rows(x_ptr, offs_rows, offs_d, n_rows, D, stride_x).to(tl.float32)
        grad = 2.0 * (coef_sum[:, None] * x - acc)
    mask = (offs_rows[:, None] < n_rows) & (offs_d[None, :] < D)
    out_ptrs = out_ptr + offs_rows.to(tl.int64)[:, None] * stride_out + offs_d[None, :]
    tl.store(out_ptrs, grad.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def near_mask(t, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, near_tol, KIND: tl.constexpr):
    """Where a distance tile t (from distance_tile) lies inside the near band: the entries
    whose gradient must come from the row difference (see `near_rows_grad`)."""
    q_sq = tl.load(q_sq_ptr + offs_m, mask=offs_m < M, other=0.0)
    r_sq = tl.load(r_sq_ptr + offs_n, mask=offs_n < N, other=0.0)
    if KIND == 2:
        sq = t * t
    else:
        sq = t
    return (sq <= near_tol * (q_sq[:, None] + r_sq[None, :])) & (offs_m[:, None] < M) & (offs_n[None, :] < N)


@triton.jit
def near_rows_grad(acc, c_near, x_ptr, y_ptr, offs_x, y0, offs_do, n_x, n_y, D, stride_x, stride_y,
                   BLOCK_Y: tl.constexpr, Y_AXIS: tl.constexpr):
    """acc − Σ_j c_ij (x_i − y_j) over the near pairs of a tile, from the row difference: the
    matmul form 2(Σ_j c_ij x_i − Σ_j c_ij y_j) cancels for near rows, whose c = ∂L/∂d² is large.
    x rows (offs_x) are the program's own, y rows y0 … y0 + BLOCK_Y − 1 run along axis Y_AXIS
    of c_near (1: c is x-by-y; 0: y-by-x). Called only on tiles that hold a near pair."""
    x = load_rows(x_ptr, offs_x, offs_do, n_x, D, stride_x).to(tl.float32)
    lanes = tl.arange(0, BLOCK_Y)
    for j in range(0, BLOCK_Y):
        if Y_AXIS == 1:
            col = tl.sum(tl.where(lanes[None, :] == j, c_near, 0.0), 1)
        else:
            col = tl.sum(tl.where(lanes[:, None] == j, c_near, 0.0), 0)
        row = y0 + j
        width = tl.where(row < n_y, D, 0)  # a row past the end reads nothing (its c is 0)
        y = tl.load(y_ptr + row.to(tl.int64) * stride_y + offs_do, mask=offs_do < width, other=0.0).to(tl.float32)
        acc -= col[:, None] * (x - y[None, :])
    return acc


@triton.jit
def accumulate_row_grad(acc, coef_sum, c, t, other, own_ptr, other_ptr, offs_own, other0, offs_do,
                        n_own, n_other, D, stride_own, stride_other, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N,
                        near_tol, KIND: tl.constexpr, PRECISION: tl.constexpr, BLOCK_OTHER: tl.constexpr,
                        C_IS_OWN_BY_OTHER: tl.constexpr):
    """One tile's share of a backward program's gradient rows (`store_row_grad`'s acc and
    coef_sum): acc += c·other (c transposed when the program owns the tile's columns); for the
    distance kinds the near pairs are taken out of the matmul and added from the row
    difference (`near_rows_grad`), and Σc comes from the same rounded c the matmul used.
    t: the metric tile (near_mask), other: the other side's rows at offs_do."""
    if KIND == 0:
        c_op = c.to(other.dtype)
    else:
        near = near_mask(t, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, near_tol, KIND) & (c != 0.0)
        c_op = tl.where(near, 0.0, c).to(other.dtype)
    if C_IS_OWN_BY_OTHER:
        acc = tl.dot(c_op, other, acc, input_precision=PRECISION)
    else:
        acc = tl.dot(tl.trans(c_op), other, acc, input_precision=PRECISION)
    if KIND != 0:
        coef_sum += tl.sum(c_op.to(tl.float32), 1 if C_IS_OWN_BY_OTHER else 0)
        if tl.sum(near.to(tl.int32)) > 0:
            acc = near_rows_grad(acc, tl.where(near, c, 0.0), own_ptr, other_ptr, offs_own, other0, offs_do, n_own,
                                 n_other, D, stride_own, stride_other, BLOCK_OTHER, 1 if C_IS_OWN_BY_OTHER else 0)
    return acc, coef_sum
