"""SigLIP (fastcontrast.siglip) against a float64 dense reference.

The reference is written here from the SigLIP formula as open_clip's SigLipLoss computes it
at world size 1: logits = t·x·yᵀ + b, targets 2·I − 1, loss = −Σ log σ(targets·logits) / B.
(open_clip is not a test dependency: its package imports model code that needs
torchvision/timm; the formula was checked against its loss.py by hand.)
"""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcontrast as fc
from fastcontrast._torch import softmax as torch_softmax
from tests.conftest import assert_close, triton_available

F64 = torch.float64
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


def dense_siglip(x, y, scale, bias, labels=None, ref_labels=None, cosine=True, reduction="mean"):
    if cosine:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    logits = scale * x @ y.T + bias
    if labels is None:
        z = 2 * torch.eye(x.shape[0], y.shape[0], dtype=logits.dtype) - 1
    else:
        z = 2 * (labels[:, None] == ref_labels[None, :]).to(logits.dtype) - 1
    per_row = -F.logsigmoid(z * logits).sum(1)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.sum() / x.shape[0]


def leaves(gen, b, n, d, dtype=F64):
    x = torch.randn(b, d, generator=gen, dtype=F64)
    y = torch.randn(n, d, generator=gen, dtype=F64)
    log_t = torch.tensor(math.log(7.0), dtype=F64)
    bias = torch.tensor(-2.5, dtype=F64)
    return [v.to(dtype).requires_grad_() for v in (x, y, log_t, bias)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("distance", ["cosine", "dot"])
@pytest.mark.parametrize("shape,with_labels", [((9, 9, 5), False), ((7, 11, 6), False), ((10, 13, 3), True)])
def test_values_and_gradients_match_dense_reference(backend, distance, shape, with_labels, gen):
    """x, y, the log-scale and the bias all get the reference's gradients (float64 on the
    PyTorch path, float32 in the kernels)."""
    dtype = F64 if backend == "torch" else torch.float32
    b, n, d = shape
    ref = leaves(gen, b, n, d)
    got_in = [v.detach().to(dtype).requires_grad_() for v in ref]
    labels = ref_labels = None
    if with_labels:  # duplicates: several positives per query, and queries without any
        labels = torch.randint(0, 4, (b,), generator=gen)
        ref_labels = torch.randint(1, 6, (n,), generator=gen)
    x, y, log_t, bias = got_in
    got = fc.siglip_loss(x, y, logit_scale=log_t.exp(), logit_bias=bias, labels=labels, ref_labels=ref_labels,
                         distance=distance, backend=backend)
    rx, ry, rlog_t, rbias = ref
    want = dense_siglip(rx, ry, rlog_t.exp(), rbias, labels, ref_labels, cosine=distance == "cosine")
    assert_close(got, want, dtype)
    for g, w in zip(torch.autograd.grad(got, got_in), torch.autograd.grad(want, ref)):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_reductions(reduction, gen):
    x, y, log_t, bias = leaves(gen, 6, 8, 4)
    got = fc.siglip_loss(x, y, logit_scale=log_t.exp(), logit_bias=bias, reduction=reduction)
    assert_close(got, dense_siglip(x, y, log_t.exp(), bias, reduction=reduction))


def test_chunked_path_equals_one_chunk(monkeypatch, gen):
    """Many small chunks (forward keeps nothing, backward recomputes) give the same values
    and gradients as the one-chunk path that keeps its tile."""
    x, y, log_t, bias = leaves(gen, 9, 12, 5)

    def run():
        loss = fc.siglip_loss(x, y, logit_scale=log_t.exp(), logit_bias=bias, backend="torch")
        return (loss, *torch.autograd.grad(loss, (x, y, log_t, bias)))

    whole = run()
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 12 * 2)
    for a, b in zip(whole, run()):
        assert_close(a, b)


def test_gradcheck(gen):
    x, y, log_t, bias = leaves(gen, 4, 5, 3)

    def fn(x, y, log_t, bias):
        return fc.siglip_loss(x, y, logit_scale=log_t.exp(), logit_bias=bias, backend="torch")

    assert torch.autograd.gradcheck(fn, (x, y, log_t, bias))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype, gen):
    x, y, log_t, bias = leaves(gen, 12, 12, 8)
    xh, yh = x.detach().to(dtype).requires_grad_(), y.detach().to(dtype).requires_grad_()
    got = fc.siglip_loss(xh, yh, logit_scale=log_t.exp(), logit_bias=bias, backend="torch")
    assert got.dtype == torch.float32 and torch.isfinite(got)
    want = dense_siglip(xh.detach().double(), yh.detach().double(), log_t.exp(), bias)
    assert_close(got, want, torch.float32, rtol=1e-4, atol=1e-4)
    gx, = torch.autograd.grad(got, (xh,))
    assert gx.dtype == dtype and bool(torch.isfinite(gx).all())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = fc.siglip_loss(x.detach().float(), y.detach().float(), logit_scale=10.0, logit_bias=-10.0)
    assert auto.dtype == torch.float32
    assert_close(auto, dense_siglip(x.detach(), y.detach(), 10.0, -10.0), torch.float32)


def test_extreme_logits_stay_finite(gen):
    """A large scale and bias push every term far into softplus's linear and flat ends."""
    x, y, _, _ = leaves(gen, 5, 5, 4)
    for scale, bias in ((1e4, 0.0), (1.0, 1e4), (1.0, -1e4)):
        got = fc.siglip_loss(x.float(), y.float(), logit_scale=scale, logit_bias=bias)
        assert_close(got, dense_siglip(x.detach(), y.detach(), scale, bias), torch.float32)
        gx, = torch.autograd.grad(got, (x,))
        assert bool(torch.isfinite(gx).all())


def test_module_learns_scale_and_bias(gen):
    loss = fc.SigLIPLoss(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    assert isinstance(loss.logit_scale, torch.nn.Parameter) and isinstance(loss.logit_bias, torch.nn.Parameter)
    x, y, _, _ = leaves(gen, 6, 6, 4)
    value = loss(x.float(), y.float())
    value.backward()
    want = dense_siglip(x.detach(), y.detach(), 10.0, -10.0)
    assert_close(value, want, torch.float32)
    assert loss.logit_scale.grad.abs() > 0 and loss.logit_bias.grad.abs() > 0
    fixed = fc.SigLIPLoss(learnable=False)
    assert not list(fixed.parameters()) and "logit_scale" in dict(fixed.named_buffers())
    text = repr(loss)
    for setting in ("logit_scale=10", "logit_bias=-10", "learnable=True", "distance='cosine'",
                    "reduction='mean'", "backend=None", "normalize=None"):
        assert setting in text


def test_module_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        fc.SigLIPLoss(1.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(logit_scale=0.0), "logit_scale"),
    (dict(logit_scale=-1.0), "logit_scale"),
    (dict(logit_bias=float("nan")), "logit_bias"),
    (dict(logit_bias=torch.tensor([1.0, 2.0])), "logit_bias"),
    (dict(reduction="avg"), "reduction"),
    (dict(distance="manhattan"), "distance"),
])
def test_bad_options_raise(kwargs, match):
    x = torch.randn(4, 3)
    with pytest.raises((ValueError, TypeError), match=match):
        fc.siglip_loss(x, x, **kwargs)


def test_bad_inputs_raise():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="keys"):
        fc.siglip_loss(x, x[:3])
    with pytest.raises(ValueError, match="together"):
        fc.siglip_loss(x, x, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="query"):
        fc.siglip_loss(x[:, :2], x)
    with pytest.raises(ValueError, match="init_logit_bias"):
        fc.SigLIPLoss(init_logit_bias=float("inf"))


def test_compiles(gen):
    torch._dynamo.reset()
    model = torch.nn.Linear(5, 4).double()
    loss = fc.SigLIPLoss().double()
    x, y, _, _ = leaves(gen, 6, 6, 5)
    x, y = x.detach(), y.detach()

    def step(a, b):
        return loss(model(a), model(b))

    results = []
    for fn in (step, torch.compile(step, backend="aot_eager", fullgraph=True)):
        value = fn(x, y)
        grads = torch.autograd.grad(value, [*model.parameters(), *loss.parameters()])
        results.append((value.detach(), *grads))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)
