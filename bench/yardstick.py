"""The yardstick of the static report (bench/static_report.py): a plain bf16 QKᵀ tile with an
online log-sum-exp, the inner loop of an attention forward without P·V, at the tile size of the
softmax forward. Per anchor row i of a BLOCK_M block, over reference tiles of BLOCK_N rows:

    s = q_i·r_j·c (c = log2 e/τ),  m ← max(m, max_j s),  l ← l·2^(m_old − m) + Σ_j 2^(s − m),
    lse_i = (m + log2 l)·ln 2

written as the FlashAttention forward writes it (the scale folded into the exponent's FFMA).
No masks, no labels, N a multiple of BLOCK_N, D = BLOCK_D (one D step: q stays on chip).
Not part of the library: it only sets the scale for the softmax kernels' loop bodies.
"""
import triton
import triton.language as tl


@triton.jit
def lse_tile_kernel(q_ptr, r_ptr, lse_ptr, N, stride_q, stride_r, scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(q_ptr + offs_m[:, None] * stride_q + offs_d[None, :])
    r_ptrs = r_ptr + offs_n[:, None] * stride_r + offs_d[None, :]
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    s_sum = tl.zeros((BLOCK_M,), tl.float32)
    for _ in range(0, N, BLOCK_N):
        r = tl.load(r_ptrs)
        s = tl.dot(q, tl.trans(r))
        m_new = tl.maximum(m, tl.max(s, 1) * scale)
        s_sum = s_sum * tl.math.exp2(m - m_new) + tl.sum(tl.math.exp2(s * scale - m_new[:, None]), 1)
        m = m_new
        r_ptrs += BLOCK_N * stride_r
    tl.store(lse_ptr + offs_m, (m + tl.math.log2(s_sum)) * 0.6931471805599453)
