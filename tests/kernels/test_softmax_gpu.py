"""Similarity-softmax kernels on a real GPU (skipped without CUDA).

The interpreter runs of test_softmax.py check the math; these check what only a GPU can:
that the kernels compile with the GPU tile sizes (kernels/softmax.default_blocks), tl.dot at
each input precision, D up to 1024, 64-bit offsets, determinism, and torch.compile with
Inductor. Tolerances, (rtol, atol as a fraction of max|expected|), against float64 on CPU:

    float32 ieee  1e-4, 1e-5      float32 tf32  5e-3, 5e-3
    float16       2e-2, 5e-3      bfloat16      5e-2, 2e-2
"""
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
triton = pytest.importorskip("triton")

from fastcontrast.configs import SoftmaxConfig  # noqa: E402
from fastcontrast.kernels import softmax as kernel  # noqa: E402

from .test_softmax import MIXED, _SelfSoftmaxLoss, check  # noqa: E402

PRECISIONS = {  # id: (dtype, tl.dot input precision, tolerance)
    "fp32-ieee": (torch.float32, "ieee", (1e-4, 1e-5)),
    "fp32-tf32": (torch.float32, "tf32", (5e-3, 5e-3)),
    "fp16": (torch.float16, "ieee", (2e-2, 5e-3)),
    "bf16": (torch.bfloat16, "ieee", (5e-2, 2e-2)),
}
# variant, kind, B, N, D, self_offset: the interpreter cases plus shapes spanning several GPU tiles
SHAPES = MIXED + [
    ("supcon", "dot", 300, None, 200, 0),
    ("ntxent", "euclidean", 257, 517, 96, 130),
    ("supcon", "sqeuclidean", 130, 70, 1024, -1),
    ("ntxent", "dot", 64, 300, 1024, -1),
]


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", SHAPES, ids=lambda v: str(v))
def test_matches_dense_on_gpu(variant, kind, B, N, D, self_offset, precision):
    dtype, dot_precision, tol = PRECISIONS[precision]
    check(variant, kind, B, N, D, self_offset, dtype=dtype, precision=dot_precision, tol=tol, device="cuda")


@pytest.mark.parametrize("labels,variant,kind", [("single", "supcon", "dot"), ("single", "ntxent", "euclidean"),
                                                 ("distinct", "supcon", "euclidean"),
                                                 ("distinct", "ntxent", "sqeuclidean"),
                                                 ("views", "ntxent", "dot")])
def test_label_edge_cases_on_gpu(labels, variant, kind):
    check(variant, kind, 200, None, 64, 0, labels=labels, device="cuda")


@pytest.mark.parametrize("variant,kind,pairs", [("supcon", "dot", True), ("ntxent", "euclidean", False)])
def test_symmetric_on_gpu(variant, kind, pairs):
    # one backward pass for both directions == the one-direction entry points run both ways
    B, N = 200, 200 if pairs else 270
    g = torch.Generator().manual_seed(4)
    q = (torch.randn(B, 96, generator=g) * 0.3).cuda()
    r = (torch.randn(N, 96, generator=g) * 0.3).cuda()
    ql = torch.arange(B) if pairs else torch.randint(0, 6, (B,), generator=g)
    rl = torch.arange(N) if pairs else torch.randint(0, 6, (N,), generator=g)
    ql, rl = ql.cuda(), rl.cuda()
    g_q, g_r = (torch.rand(B, generator=g) + 0.5).cuda(), (torch.rand(N, generator=g) + 0.5).cuda()
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=-1)
    tau = torch.tensor(0.25, device="cuda")

    v_q, _, v_r, _, saved = kernel.forward_symmetric(q, r, ql, rl, cfg, tau)
    grads = kernel.backward_symmetric(g_q, g_r, q, r, ql, rl, cfg, tau, saved, True)
    want_q, _, s_q = kernel.forward(q, r, ql, rl, cfg, tau)
    want_r, _, s_r = kernel.forward(r, q, rl, ql, cfg, tau)
    a = kernel.backward(g_q, q, r, ql, rl, cfg, tau, s_q, True)
    b = kernel.backward(g_r, r, q, rl, ql, cfg, tau, s_r, True)
    torch.testing.assert_close(v_q, want_q)
    torch.testing.assert_close(v_r, want_r)
    for got, want in zip(grads, (a[0] + b[1], a[1] + b[0], a[2] + b[2])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_deterministic_on_gpu():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1000, 128, generator=g).cuda().bfloat16()
    labels = torch.randint(0, 50, (1000,), generator=g).cuda()
    tau = torch.tensor(0.1, device="cuda")
    for variant in ("supcon", "ntxent"):
        cfg = SoftmaxConfig(kind="dot", variant=variant)
        runs = []
        for _ in range(2):
            values, _, saved = kernel.forward(q, q, labels, labels, cfg, tau)
            grads = kernel.backward(torch.ones_like(values), q, q, labels, labels, cfg, tau, saved, True)
            runs.append((values, *grads))
        for a, b in zip(*runs):
            assert torch.equal(a, b)


def test_offsets_past_int32_on_gpu():
    # r holds more than 2^31 elements; only its last rows are non-zero, so a dense check is small:
    # the zero rows (dot logit 0, a label no anchor has) enter every denominator as one column of
    # constant logit log(count), which has no gradient, like the zero rows themselves.
    D, tail = 1024, 40
    N = (1 << 31) // D + 2000
    g = torch.Generator().manual_seed(0)
    q_small = torch.randn(48, D, generator=g) / D ** 0.5
    tail_rows = torch.randn(tail, D, generator=g) / D ** 0.5
    ql = torch.randint(0, 5, (48,), generator=g)
    tail_labels = torch.randint(0, 5, (tail,), generator=g)
    r = torch.zeros(N, D, dtype=torch.bfloat16, device="cuda")
    r[N - tail:] = tail_rows.bfloat16().cuda()
    rl = torch.full((N,), 1000, dtype=torch.int64, device="cuda")
    rl[N - tail:] = tail_labels.cuda()
    q = q_small.bfloat16().cuda()
    tau = torch.tensor(0.2, device="cuda")
    cfg = SoftmaxConfig(kind="dot", variant="supcon", self_offset=-1)
    values, n_pos, saved = kernel.forward(q, r, ql.cuda(), rl, cfg, tau)
    grad_values = torch.ones(48, device="cuda")
    grad_q, grad_r, grad_tau = kernel.backward(grad_values, q, r, ql.cuda(), rl, cfg, tau, saved, True)

    q64 = q.double().cpu().requires_grad_()
    t64 = tail_rows.bfloat16().double().requires_grad_()
    tau64 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    logits = q64 @ t64.T / tau64
    pos = ql[:, None] == tail_labels[None, :]
    zero_col = torch.full((48, 1), float(N - tail), dtype=torch.float64).log()
    lse = torch.cat([logits, zero_col], 1).logsumexp(1)
    n = pos.sum(1)
    want = torch.where(n > 0, lse - (logits * pos).sum(1) / n.clamp_min(1), torch.zeros_like(lse))
    want.sum().backward()
    torch.testing.assert_close(values.cpu().double(), want.detach(), rtol=5e-2, atol=2e-2 * want.abs().max().item())
    assert torch.equal(n_pos.cpu(), n)
    torch.testing.assert_close(grad_q.cpu().double(), q64.grad, rtol=5e-2, atol=2e-2 * q64.grad.abs().max().item())
    torch.testing.assert_close(grad_r[N - tail:].cpu().double(), t64.grad, rtol=5e-2,
                               atol=2e-2 * t64.grad.abs().max().item())
    torch.testing.assert_close(grad_tau.cpu().double(), tau64.grad, rtol=5e-2, atol=1e-2 * tau64.grad.abs().item())


def test_compiled_training_step_on_gpu():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(512, 64, generator=g).cuda()
    labels = torch.randint(0, 32, (512,), generator=g).cuda()
    w0 = torch.randn(64, 128, generator=g).cuda()

    for variant in ("supcon", "ntxent"):
        cfg = SoftmaxConfig(kind="dot", variant=variant)

        def step(w, log_tau, opt):
            z = F.normalize(x @ w, dim=1)
            loss = _SelfSoftmaxLoss.apply(z, labels, log_tau.exp(), cfg).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss.detach()

        results = []
        for compile_it in (False, True):
            w = w0.clone().requires_grad_()
            log_tau = torch.tensor(-2.0, device="cuda", requires_grad=True)
            opt = torch.optim.SGD([w, log_tau], lr=0.1)
            fn = torch.compile(step) if compile_it else step
            losses = torch.stack([fn(w, log_tau, opt) for _ in range(3)])
            results.append((losses, w.detach(), log_tau.detach()))
        for eager, compiled in zip(*results):
            torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
