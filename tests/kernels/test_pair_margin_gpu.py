"""Pair-margin Triton kernels on a GPU (skipped without CUDA).

The same matrix as the interpreter tests at larger, ragged shapes, against the PyTorch path
run in float64 on the same (rounded) inputs. Tolerances, relative to the largest magnitude of
each output: fp32 with ieee dot 1e-4, fp32 with tf32 dot 5e-3, fp16 1e-2, bf16 5e-2.
Pair counts are label arithmetic and must match exactly; non-zero counts may differ only for
terms within rounding of the hinge (at most 0.5% of the pairs).
"""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

import fastcontrast as fc  # noqa: E402
from fastcontrast.configs import PairMarginConfig  # noqa: E402
from fastcontrast.pair_margin import PairMarginFunction  # noqa: E402

MARGINS = {"euclidean": (0.5, 1.2), "squared_euclidean": (0.3, 1.5), "dot": (0.5, 0.1), "cosine": (0.6, 0.2)}
TOL = {("fp32", "ieee"): 1e-4, ("fp32", "tf32"): 5e-3, ("fp16", "ieee"): 1e-2, ("bf16", "ieee"): 5e-2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _data(b, n, d, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    r = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    return (x.cuda(), torch.randint(0, classes, (b,), generator=g).cuda(),
            r.cuda(), torch.randint(0, classes, (n,), generator=g).cuda())


def _run(backend, x, y, r, rl, distance, power, precision="ieee"):
    pm, nm = MARGINS[distance]
    sim = distance in ("dot", "cosine")
    kind = {"euclidean": "euclidean", "squared_euclidean": "sqeuclidean", "dot": "dot", "cosine": "dot"}[distance]
    cfg = PairMarginConfig(kind=kind, negate=sim, pos_margin=-pm if sim else pm, neg_margin=-nm if sim else nm,
                           power=power, self_offset=0 if r is None else -1, precision=precision)
    xs = x.detach().clone().requires_grad_()
    rs = None if r is None else r.detach().clone().requires_grad_()
    q = fc.metrics.normalize_rows(xs) if distance == "cosine" else xs
    k = None if rs is None else (fc.metrics.normalize_rows(rs) if distance == "cosine" else rs)
    values, counts, nonzero = PairMarginFunction.apply(q, k, y, None if r is None else rl, cfg, backend)
    w = torch.linspace(-1, 1, values.numel(), device=values.device).reshape(values.shape)
    grads = torch.autograd.grad((values * w.to(values.dtype)).sum(), [xs] + ([] if rs is None else [rs]))
    return (values.detach(), counts, nonzero) + tuple(grads)


def _compare(got, want, tol):
    assert torch.equal(got[1], want[1])
    flips = (got[2] - want[2]).abs().sum().item()
    assert flips <= 0.005 * want[1].sum().item() + 2
    for u, v in zip((got[0],) + got[3:], (want[0],) + want[3:]):
        assert torch.isfinite(u).all()
        scale = max(float(v.abs().max()), 1e-6)
        err = float((u.double() - v.double()).abs().max())
        assert err <= tol * scale, (err, scale)


@pytest.mark.parametrize("distance, power, with_ref", [
    ("euclidean", 1, False), ("euclidean", 2, True), ("squared_euclidean", 1, True),
    ("squared_euclidean", 2, False), ("dot", 1, True), ("cosine", 2, False), ("cosine", 1, True),
])
@pytest.mark.parametrize("dtype, precision", list(TOL))
def test_gpu_matches_torch_path(distance, power, with_ref, dtype, precision):
    x, y, r, rl = _data(301, 257, 130)
    x, r = x.to(DTYPES[dtype]), r.to(DTYPES[dtype])
    x[17] = x[4]  # a duplicate: distance 0
    if not with_ref:
        r, rl = None, None
    got = _run("triton", x, y, r, rl, distance, power, precision)
    want = _run("torch", x.double(), y, None if r is None else r.double(), rl, distance, power)
    _compare(got, want, TOL[(dtype, precision)])


@pytest.mark.parametrize("d", [3, 64, 1000])
def test_gpu_dimensions(d):
    x, y, r, rl = _data(150, 150, d, seed=1)
    for dtype in (torch.float32, torch.bfloat16):
        got = _run("triton", x.to(dtype), y, r.to(dtype), rl, "euclidean", 1)
        want = _run("torch", x.to(dtype).double(), y, r.to(dtype).double(), rl, "euclidean", 1)
        _compare(got, want, 1e-4 if dtype == torch.float32 else 5e-2)


def test_gpu_large_batch_deterministic():
    x, y, _, _ = _data(4099, 1, 128, seed=2, classes=50)
    first = _run("triton", x, y, None, None, "euclidean", 1)
    second = _run("triton", x, y, None, None, "euclidean", 1)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_gpu_public_api():
    x, y, r, rl = _data(200, 90, 48, seed=3)
    for kw in ({}, {"ref_emb": r, "ref_labels": rl}):
        a = fc.contrastive_loss(x, y, pos_margin=0.5, neg_margin=1.2, backend="triton", **kw)
        b = fc.contrastive_loss(x.double(), y, pos_margin=0.5, neg_margin=1.2, backend="torch",
                                **({} if not kw else {"ref_emb": r.double(), "ref_labels": rl}))
        assert abs(a.item() - b.item()) <= 1e-4 * max(1.0, abs(b.item()))
    assert fc.resolve_backend(None, x.device) == "triton" or fc.backend.default_backend() == "torch"


def test_gpu_compiled_training_step():
    """A training step with the loss inside, compiled by inductor (the registered triton ops are
    traced into the graph), gives the eager step's loss and gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 48)).cuda()
    x = torch.randn(256, 32, device="cuda")
    y = torch.randint(0, 8, (256,), device="cuda")
    cfg = PairMarginConfig(pos_margin=0.2, neg_margin=1.5)

    def step_function(inp):
        v, c, nz = PairMarginFunction.apply(model(inp), None, y, None, cfg, "triton")
        return v.sum() / nz.sum().clamp_min(1)

    def step_public(inp):
        return fc.contrastive_loss(model(inp), y, pos_margin=0.2, neg_margin=1.5, backend="triton", normalize=None)

    for step, fullgraph in ((step_function, True), (step_public, False)):
        eager = step(x)
        eager_grads = torch.autograd.grad(eager, list(model.parameters()))
        compiled = torch.compile(step, fullgraph=fullgraph)(x)
        comp_grads = torch.autograd.grad(compiled, list(model.parameters()))
        assert abs(compiled.item() - eager.item()) <= 1e-4 * max(1.0, abs(eager.item()))
        for a, b in zip(comp_grads, eager_grads):
            assert float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))
