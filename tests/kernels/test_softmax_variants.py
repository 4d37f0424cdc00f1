"""The "dcl" and "sigmoid" variants of the softmax kernels against the PyTorch path, through
SoftmaxFunction (the interpreter on CPU; the real kernels with a GPU): every metric kind,
self-exclusion, ragged tiles, the temperature's and the bias's gradients."""
import pytest
import torch

from fastcontrast.configs import SoftmaxConfig
from fastcontrast.softmax import SoftmaxFunction
from tests.conftest import assert_close, triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not importable")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run(backend, q, r, ql, rl, tau, bias, cfg, g):
    leaves = [v.detach().clone().to(DEVICE).requires_grad_() for v in (q, r, tau)]
    b = None if bias is None else bias.detach().clone().to(DEVICE).requires_grad_()
    values, n_pos = SoftmaxFunction.apply(leaves[0], leaves[1], ql.to(DEVICE), rl.to(DEVICE), leaves[2], cfg,
                                          backend, False, b)
    wrt = leaves + ([] if b is None else [b])
    grads = torch.autograd.grad((values * g.to(DEVICE)).sum(), wrt)
    return values.detach().cpu(), n_pos.cpu(), [x.cpu() for x in grads]


@pytest.mark.parametrize("variant", ["dcl", "sigmoid"])
@pytest.mark.parametrize("kind", ["dot", "sqeuclidean", "euclidean"])
@pytest.mark.parametrize("self_offset", [-1, 0, 3])
def test_kernel_matches_torch_path(variant, kind, self_offset, gen):
    b, n, d = 19, 23, 10
    q = torch.randn(b, d, generator=gen) * 0.5
    r = torch.randn(n, d, generator=gen) * 0.5
    r[4] = q[1]  # an exact duplicate: a zero distance
    ql = torch.randint(0, 4, (b,), generator=gen)
    rl = torch.randint(0, 4, (n,), generator=gen)
    ql[0] = 9  # a lonely anchor: no positive
    g = torch.rand(b, generator=gen) + 0.5
    tau = torch.tensor(0.7)
    bias = torch.tensor(-1.5) if variant == "sigmoid" else None
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=self_offset)
    want = run("torch", q.double(), r.double(), ql, rl, tau.double(), None if bias is None else bias.double(), cfg, g.double())
    got = run("triton", q, r, ql, rl, tau, bias, cfg, g)
    assert_close(got[0], want[0], torch.float32)
    assert torch.equal(got[1], want[1])
    for a, w in zip(got[2], want[2]):
        assert_close(a, w, torch.float32, atol=1e-4)
