"""Triplet kernels on a real GPU (skipped without CUDA).

The interpreter runs of test_triplet.py check the math; these check what only a GPU can:
the kernels compile with the GPU tile sizes, tl.dot at each input precision, D up to 1024,
several chunks and tiles, determinism, bounded memory and torch.compile with Inductor.
Tolerances (rtol, atol as a fraction of max|expected|) against the float64 dense statement:

    float32 ieee  2e-4, 2e-5      float32 tf32  1e-2, 1e-2 (values only: tf32 moves ties)
    float16       2e-2, 2e-3      bfloat16      5e-2, 1e-2
Counts and nonzero counts must match exactly: the cases use data whose distances are
exact in every dtype (small integers), or small random batches away from boundaries.
"""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
triton = pytest.importorskip("triton")

from fastcontrast.configs import TripletConfig  # noqa: E402
from fastcontrast.kernels import triplet as kt  # noqa: E402

from .test_triplet import CASES, _Loss, check, make_data, run_dense, run_kernels  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("fields,data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_interpreter_matrix_on_gpu(fields, data, dtype):
    q, r, ql, rl, same = make_data(**data)
    check(q, r, ql, rl, TripletConfig(**fields), same, dtype=DTYPES[dtype])


# several anchor chunks and distance tiles, N ≠ B, D up to 1024; integer data: exact distances
WIDE = [
    ("batch_all", "sqeuclidean", 150, None, 96, 0),
    ("semihard", "sqeuclidean", 150, 203, 1024, 40),
    ("all", "dot", 131, 203, 200, -1),
    ("easy", "sqeuclidean", 129, None, 33, 0),
    ("semihard_tfa", "sqeuclidean", 150, 203, 1024, -1),
    ("semihard_tfa", "dot", 140, None, 96, 0),
    ("batch_hard", "sqeuclidean", 300, 517, 1024, 100),
    ("batch_hard", "dot", 257, None, 64, 0),
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("mining,kind,B,N,D,self_offset", WIDE, ids=lambda v: str(v))
def test_wide_shapes_on_gpu(mining, kind, B, N, D, self_offset, dtype, monkeypatch):
    monkeypatch.setattr(kt, "CHUNK_ELEMENTS", 48 * (N or B))  # chunks of 48 anchors
    monkeypatch.setattr(kt, "MIN_CHUNK_ROWS", 1)
    q, r, ql, rl, same = make_data(B=B, D=D, N=N, classes=7, style="wide-int", self_offset=self_offset)
    negate = kind == "dot"
    cfg = TripletConfig(mining=mining, kind=kind, negate=negate, margin=40.0, miner_margin=60.0,
                        self_offset=self_offset)
    check(q, r, ql, rl, cfg, same, dtype=DTYPES[dtype])


def test_smooth_and_swap_on_gpu():
    q, r, ql, rl, same = make_data(B=70, D=40, N=90, classes=5, style="wide-int", self_offset=-1)
    for fields in (dict(mining="batch_all", smooth=True), dict(mining="semihard", swap=True),
                   dict(mining="batch_hard", swap=True, smooth=True, hard_fallback="tfa")):
        cfg = TripletConfig(kind="sqeuclidean", margin=20.0, miner_margin=30.0, self_offset=-1, **fields)
        check(q, r, ql, rl, cfg, same)


def test_tf32_precision_on_gpu():
    q, r, ql, rl, same = make_data(B=200, D=128, classes=10)
    cfg = TripletConfig(mining="batch_all", margin=0.3, precision="tf32")
    grad = torch.ones(200)
    values = run_kernels(q, r, ql, rl, cfg, same, grad)[0]
    v_ref = run_dense(q, r, ql, rl, cfg, same, grad)[0][0]
    torch.testing.assert_close(values.double().cpu(), v_ref, rtol=1e-2, atol=1e-2 * float(v_ref.abs().max()))


def test_deterministic_on_gpu():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1000, 128, generator=g).cuda().half()
    labels = torch.randint(0, 10, (1000,), generator=g).cuda()
    grad = torch.rand(1000, generator=g).cuda()
    for mining in ("semihard", "semihard_tfa", "batch_hard"):
        cfg = TripletConfig(mining=mining, margin=0.3)
        runs = []
        for _ in range(2):
            values, counts, nonzero, saved = kt.forward(q, q, labels, labels, cfg)
            runs.append((values, counts, nonzero, *kt.backward(grad, q, q, labels, labels, cfg, saved)))
        for a, b in zip(*runs):
            assert torch.equal(a, b)


def test_semihard_memory_stays_within_chunks():
    """B = 4096, D = 128: peak memory beyond the inputs is O(B·D + chunk·N), well below one
    B×N float32 matrix (64 MiB) and nowhere near PML's B×B×B."""
    B, D = 4096, 128
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, D, generator=g).cuda()
    labels = torch.randint(0, 10, (B,), generator=g).cuda()
    grad = torch.ones(B, device="cuda")
    for mining in ("semihard", "semihard_tfa"):
        cfg = TripletConfig(mining=mining, margin=0.2)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        values, counts, nonzero, saved = kt.forward(q, q, labels, labels, cfg)
        gq, gr = kt.backward(grad, q, q, labels, labels, cfg, saved)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        chunk = kt._chunk_rows(B, B, kt.CHUNK_ELEMENTS)
        bound = 8 * B * D * 4 + 96 * chunk * B   # row copies + grads, and ≈ 96 bytes per C×N element
        assert extra <= bound, (mining, extra, bound)
        assert extra < B * B * 4, (mining, extra)
        assert bool(torch.isfinite(gq).all()) and int(counts.sum()) > 0


def test_torch_compile_training_step_on_gpu():
    """A training step with the loss inside, compiled by Inductor (the kernels trace as
    triton_op user kernels), equals the eager step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 16).cuda()
    x = torch.randn(300, 32, device="cuda")
    labels = torch.randint(0, 8, (300,), device="cuda")
    for mining in ("semihard", "semihard_tfa", "batch_hard"):
        cfg = TripletConfig(mining=mining, margin=0.3)

        def step():
            model.zero_grad()
            loss = _Loss.apply(model(x), labels, cfg)
            loss.backward()
            return loss.detach(), model.weight.grad.clone()

        eager = step()
        compiled = torch.compile(step)()
        torch.testing.assert_close(eager[0], compiled[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(eager[1], compiled[1], rtol=1e-4, atol=1e-6)
