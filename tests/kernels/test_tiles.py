"""The shared distance tile and masks, run through a tiny probe kernel."""
import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from fastcontrast import metrics  # noqa: E402
from fastcontrast.kernels import tiles  # noqa: E402


@triton.jit
def _probe(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, q_lab_ptr, r_lab_ptr, out_ptr, mask_ptr,
           M, N, D, stride_q, stride_r, near_tol, self_offset,
           KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    t = tiles.distance_tile(q_ptr, r_ptr, q_sq_ptr, r_sq_ptr, offs_m, offs_n, M, N, D, stride_q, stride_r,
                            near_tol, KIND, BLOCK_M, BLOCK_N, BLOCK_D, "ieee")
    valid, pos, neg = tiles.pair_masks(q_lab_ptr, r_lab_ptr, offs_m, offs_n, M, N, self_offset)
    code = valid.to(tl.int32) + 2 * pos.to(tl.int32) + 4 * neg.to(tl.int32)
    ptrs = offs_m[:, None] * N + offs_n[None, :]
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out_ptr + ptrs, t, mask=inside)
    tl.store(mask_ptr + ptrs, code, mask=inside)


@pytest.mark.parametrize("kind", metrics.KERNEL_KINDS)
@pytest.mark.parametrize("self_offset", [-1, 0])
def test_tile_matches_torch_path(kind, self_offset):
    g = torch.Generator().manual_seed(1)
    M, N, D = 21, (21 if self_offset == 0 else 13), 37
    q = torch.randn(M, D, generator=g)
    r = q.clone() if self_offset == 0 else torch.randn(N, D, generator=g)
    r[3] = q[5]  # a duplicate across the two sets: distance exactly 0
    ql = torch.randint(0, 4, (M,), generator=g)
    rl = ql.clone() if self_offset == 0 else torch.randint(0, 4, (N,), generator=g)
    # CPU tensors run in the interpreter (tests/conftest.py sets it without CUDA); with a GPU, on it
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    q, r, ql, rl = q.to(dev), r.to(dev), ql.to(dev), rl.to(dev)
    out = torch.empty(M, N, device=dev)
    code = torch.empty(M, N, dtype=torch.int32, device=dev)
    q_sq, r_sq = (q * q).sum(1), (r * r).sum(1)
    _probe[(triton.cdiv(M, 16), triton.cdiv(N, 16))](
        q, r, q_sq, r_sq, ql, rl, out, code, M, N, D, q.stride(0), r.stride(0),
        metrics.near_tolerance(q.dtype), self_offset,
        KIND=tiles.KIND_CODES[kind], BLOCK_M=16, BLOCK_N=16, BLOCK_D=16)
    expected = metrics.pairwise(q, r, kind)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    if kind != "dot":
        assert out[5, 3] == 0
    not_self = torch.ones(M, N, dtype=torch.bool, device=dev)
    if self_offset == 0:
        not_self.fill_diagonal_(False)
    same = ql[:, None] == rl[None, :]
    want = not_self.int() + 2 * (not_self & same).int() + 4 * (not_self & ~same).int()
    assert torch.equal(code, want)
