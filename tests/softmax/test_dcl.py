"""DCL / DCLW (fastcontrast.dcl) against a float64 dense reference.

The reference is written here from the formulas of lightly's DCLLoss / DCLWLoss (lightly
1.6): both views normalized, per anchor −s(a, a')/τ·w + LSE over every other row that is not
its own view, averaged over both directions; w = 2 − B·softmax(s(x_k, x_k')/σ) for DCLW. It
is extended to labels (positives = same label, negatives = other labels). lightly is not a
test dependency (its package pulls torchvision); the formulas were compared with its
source by hand.
"""
import pytest
import torch
import torch.nn.functional as F

import fastcontrast as fc
from fastcontrast._torch import softmax as torch_softmax
from tests.conftest import assert_close, triton_available

F64 = torch.float64
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


def dense_dcl(x, labels=None, temperature=0.1, sigma=None, cosine=True, reduction="mean"):
    b = x.shape[0]
    if labels is None:
        labels = torch.arange(b) % (b // 2)
    if cosine:
        x = F.normalize(x, dim=1)
    logits = x @ x.T / temperature
    eye = torch.eye(b, dtype=torch.bool)
    same = labels[:, None] == labels[None, :]
    pos, neg = same & ~eye, ~same
    lse = torch.where(neg.any(1), logits.masked_fill(~neg, float("-inf")).logsumexp(1), torch.zeros(b, dtype=x.dtype))
    count = pos.sum(1)
    pos_mean = torch.where(pos, logits, 0).sum(1) / count.clamp_min(1)
    w = torch.ones(b, dtype=x.dtype)
    if sigma is not None:
        h = b // 2
        s = (x[:h] * x[h:]).sum(1).detach() / sigma
        w = torch.cat([2 - h * s.softmax(0)] * 2)
    values = torch.where(count > 0, lse - w * pos_mean, torch.zeros(b, dtype=x.dtype))
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return values.sum() / (count > 0).sum()


def lightly_form(out0, out1, temperature, sigma=None):
    """lightly's two-direction form, written out: the reference must equal it."""
    def one(a, b):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        n = a.shape[0]
        eye = torch.eye(n, dtype=torch.bool)
        s00, s01 = a @ a.T / temperature, a @ b.T / temperature
        positive = -s01[eye]
        if sigma is not None:
            positive = positive * (2 - n * ((a * b).sum(1).detach() / sigma).softmax(0))
        negatives = torch.cat([s00[~eye].view(n, -1), s01[~eye].view(n, -1)], 1).logsumexp(1)
        return (positive + negatives).mean()
    return 0.5 * (one(out0, out1) + one(out1, out0))


@pytest.mark.parametrize("sigma", [None, 0.4])
def test_reference_is_lightly_form(sigma, gen):
    a, b = torch.randn(7, 5, generator=gen, dtype=F64), torch.randn(7, 5, generator=gen, dtype=F64)
    assert_close(dense_dcl(torch.cat([a, b]), temperature=0.3, sigma=sigma), lightly_form(a, b, 0.3, sigma))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sigma", [None, 0.5])
def test_two_views_match_reference(backend, sigma, gen):
    dtype = F64 if backend == "torch" else torch.float32
    x = torch.randn(14, 6, generator=gen, dtype=F64, requires_grad=True)
    t = torch.tensor(0.2, dtype=F64, requires_grad=True)
    xs, ts = x.detach().to(dtype).requires_grad_(), t.detach().to(dtype).requires_grad_()
    got = fc.dcl_loss(xs, temperature=ts, sigma=sigma, backend=backend)
    want = dense_dcl(x, temperature=t, sigma=sigma)
    assert_close(got, want, dtype)
    for g, w in zip(torch.autograd.grad(got, (xs, ts)), torch.autograd.grad(want, (x, t))):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_labels_match_reference(backend, distance, gen):
    """Duplicated labels (several positives), a lonely anchor (no positive) and one class
    missing negatives is impossible here; single-class batches are tested below."""
    dtype = F64 if backend == "torch" else torch.float32
    x = torch.randn(11, 4, generator=gen, dtype=F64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 0, 4, 1])
    xs = x.detach().to(dtype).requires_grad_()
    got = fc.dcl_loss(xs, labels, temperature=0.3, distance=distance, backend=backend)
    want = dense_dcl(x, labels, temperature=0.3, cosine=distance == "cosine")
    assert_close(got, want, dtype)
    assert_close(torch.autograd.grad(got, xs)[0], torch.autograd.grad(want, x)[0], dtype)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_reductions_and_single_class(reduction, gen):
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    single = torch.zeros(6, dtype=torch.long)  # positives but no negatives: −mean_P l only
    assert_close(fc.dcl_loss(x, single, reduction=reduction), dense_dcl(x, single, reduction=reduction))
    distinct = torch.arange(6)  # no positives: exact 0
    assert float(fc.dcl_loss(x, distinct)) == 0.0


def test_chunks_and_gradcheck(monkeypatch, gen):
    x = torch.randn(8, 3, generator=gen, dtype=F64, requires_grad=True)
    whole = fc.dcl_loss(x, sigma=0.5)
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 8 * 3)
    assert_close(fc.dcl_loss(x, sigma=0.5), whole)
    # DCLW's weights carry no gradient by definition, so finite differences check DCL only
    assert torch.autograd.gradcheck(lambda v: fc.dcl_loss(v, temperature=0.5), (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype, gen):
    x = torch.randn(10, 8, generator=gen).to(dtype).requires_grad_()
    got = fc.dcl_loss(x, sigma=0.5)
    assert got.dtype == torch.float32
    assert_close(got, dense_dcl(x.detach().double(), sigma=0.5), torch.float32, rtol=1e-4, atol=1e-4)
    g, = torch.autograd.grad(got, (x,))
    assert g.dtype == dtype and bool(torch.isfinite(g).all())


def test_module_options_and_errors():
    loss = fc.DCLLoss(temperature=0.2, sigma=0.5)
    text = repr(loss)
    for setting in ("temperature=0.2", "sigma=0.5", "distance='cosine'", "reduction='mean'", "backend=None",
                    "normalize=None"):
        assert setting in text
    with pytest.raises(TypeError):
        fc.DCLLoss(0.1)
    with pytest.raises(ValueError, match="sigma"):
        fc.DCLLoss(sigma=0.0)
    with pytest.raises(ValueError, match="temperature"):
        fc.DCLLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="labels=None"):
        loss(torch.randn(4, 3), torch.arange(4))
    with pytest.raises(ValueError, match="even"):
        fc.dcl_loss(torch.randn(5, 3))


def test_compiles(gen):
    torch._dynamo.reset()
    model = torch.nn.Linear(5, 4).double()
    x = torch.randn(8, 5, generator=gen, dtype=F64)
    loss = fc.DCLLoss(temperature=0.2, sigma=0.5)

    def step(v):
        return loss(model(v))

    results = []
    for fn in (step, torch.compile(step, backend="aot_eager", fullgraph=True)):
        value = fn(x)
        results.append((value.detach(), *torch.autograd.grad(value, list(model.parameters()))))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)
