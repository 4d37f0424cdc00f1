"""InfoNCE's logit_scale= (CLIP's multiplier, logits = logit_scale · s) against temperature=
1 / logit_scale and against a dense CLIP loss written out here, values and gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcontrast as fc
from tests.conftest import assert_close, triton_available

F64 = torch.float64
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


def dense_clip(image, text, logit_scale, symmetric=True):
    """CLIP as usually written: normalize, scaled cosine logits, cross-entropy to the diagonal."""
    image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
    logits = logit_scale * image @ text.T
    target = torch.arange(image.shape[0])
    forward = F.cross_entropy(logits, target)
    if not symmetric:
        return forward
    return 0.5 * (forward + F.cross_entropy(logits.T, target))


def pair(gen, b=6, d=5):
    x = torch.randn(b, d, generator=gen, dtype=F64, requires_grad=True)
    y = torch.randn(b, d, generator=gen, dtype=F64, requires_grad=True)
    return x, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_tensor_logit_scale_matches_dense_clip_and_temperature(symmetric, backend, gen):
    """float64 on the PyTorch path; the Triton kernels take float32 (the dense reference
    stays float64, on the same values)."""
    dtype = F64 if backend == "torch" else torch.float32
    x, y = pair(gen)
    xs, ys = (v.detach().to(dtype).requires_grad_() for v in (x, y))
    raw = torch.tensor(math.log(1 / 0.07), dtype=F64, requires_grad=True)   # CLIP's parameter
    raw_s = raw.detach().to(dtype).requires_grad_()

    got = fc.info_nce_loss(xs, ys, logit_scale=raw_s.exp(), symmetric=symmetric, backend=backend)
    got_grads = torch.autograd.grad(got, (xs, ys, raw_s))

    want = dense_clip(x, y, raw.exp(), symmetric)
    want_grads = torch.autograd.grad(want, (x, y, raw))

    by_t = fc.info_nce_loss(xs, ys, temperature=1 / raw_s.exp(), symmetric=symmetric, backend=backend)
    t_grads = torch.autograd.grad(by_t, (xs, ys, raw_s))

    assert_close(got, want, dtype)
    assert_close(got, by_t, dtype)
    for g, w, t in zip(got_grads, want_grads, t_grads):
        assert_close(g, w, dtype)
        assert_close(g, t, dtype)
    assert got_grads[2].abs() > 0


def test_float_logit_scale_is_one_over_temperature(gen):
    x, y = pair(gen)
    got = fc.info_nce_loss(x, y, logit_scale=14.3, symmetric=True)
    assert_close(got, fc.info_nce_loss(x, y, temperature=1 / 14.3, symmetric=True), F64)
    assert_close(got, dense_clip(x, y, 14.3), F64)


def test_logit_scale_gradcheck(gen):
    x, y = pair(gen, b=4, d=3)
    s = torch.tensor(3.0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, y, s: fc.info_nce_loss(x, y, logit_scale=s, symmetric=True), (x, y, s))


def test_module_with_a_learnable_logit_scale_trains(gen):
    """A Parameter given to the Module is read at every call: several steps, fresh graphs."""
    x, y = pair(gen)
    scale = torch.nn.Parameter(torch.tensor(2.0, dtype=F64))
    loss_fn = fc.InfoNCELoss(logit_scale=scale, symmetric=True)
    opt = torch.optim.SGD([scale], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(x.detach(), y.detach())
        loss.backward()
        assert_close(loss, dense_clip(x.detach(), y.detach(), scale.detach()), F64)
        assert_close(scale.grad, torch.autograd.grad(
            dense_clip(x.detach(), y.detach(), scale), scale)[0], F64)
        opt.step()
    assert scale.item() != 2.0


def test_default_is_still_temperature_0_07(gen):
    x, y = pair(gen)
    assert_close(fc.info_nce_loss(x, y), fc.info_nce_loss(x, y, temperature=0.07), F64)
    assert fc.InfoNCELoss().temperature == 0.07
    assert fc.InfoNCELoss().logit_scale is None


@pytest.mark.parametrize("make", [
    lambda **kw: fc.info_nce_loss(torch.randn(4, 3), torch.randn(4, 3), **kw),
    lambda **kw: fc.InfoNCELoss(**kw),
])
def test_both_given_is_a_value_error_naming_both(make):
    with pytest.raises(ValueError, match="temperature.*logit_scale|logit_scale.*temperature"):
        make(temperature=0.1, logit_scale=10.0)
    with pytest.raises(ValueError, match="logit_scale"):
        make(temperature=torch.tensor(0.1), logit_scale=torch.tensor(10.0))


@pytest.mark.parametrize("bad, error", [
    (0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError),
    (torch.tensor(float("inf")), ValueError), (torch.tensor(-2.0), ValueError),
    (torch.tensor([1.0, 2.0]), ValueError), ("10", TypeError), (True, TypeError),
])
def test_bad_logit_scale(bad, error):
    with pytest.raises(error, match="logit_scale"):
        fc.info_nce_loss(torch.randn(4, 3), torch.randn(4, 3), logit_scale=bad)
    with pytest.raises(error, match="logit_scale"):
        fc.InfoNCELoss(logit_scale=bad)
