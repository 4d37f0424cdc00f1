"""Every loss family in float16, bfloat16 and under torch.autocast, on the PyTorch path and
(a sample) through the Triton kernels in the interpreter, against float64 on the same values:
16-bit inputs are computed in float32, so the results agree to float32 accuracy; zero rows
and rows whose norm overflows float16 included; never NaN on finite input.

A zero row's gradient through normalization is 1/eps = 1e12 times the upstream gradient (the
derivative of x / max(‖x‖, 1e-12) at 0, as in torch.nn.functional.normalize): beyond float16,
so it is left out of the float16 gradient checks. The mining losses compare values on a batch
without the zero row: its distance to every normalized row is 1 up to rounding, exact ties
that float32 and float64 may decide differently."""
import pytest
import torch

import fastcontrast as fc

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])
TOL = dict(rtol=2e-4, atol=2e-5)

LOSSES = {
    "supcon": lambda x, **kw: fc.supcon_loss(x, LABELS, temperature=0.2, **kw),
    "supcon_l2": lambda x, **kw: fc.supcon_loss(x, LABELS, distance="euclidean", normalize=True, **kw),
    "ntxent": lambda x, **kw: fc.nt_xent_loss(x, LABELS, temperature=0.3, **kw),
    "npair": lambda x, **kw: fc.npair_loss(x, LABELS, normalize=True, **kw),
    "infonce": lambda x, **kw: fc.info_nce_loss(x[:5], x[5:], temperature=0.3, **kw),
    "siglip": lambda x, **kw: fc.siglip_loss(x[:5], x[5:], logit_scale=10.0, logit_bias=-3.0, **kw),
    "dcl": lambda x, **kw: fc.dcl_loss(x, LABELS, temperature=0.3, **kw),
    "dclw": lambda x, **kw: fc.dcl_loss(x, temperature=0.3, sigma=0.5, **kw),
    "contrastive": lambda x, **kw: fc.contrastive_loss(x, LABELS, neg_margin=1.2, normalize=True, **kw),
    "triplet_semihard": lambda x, **kw: fc.triplet_margin_loss(x, LABELS, mining="semihard", margin=0.1,
                                                                miner_margin=0.4, normalize=True, **kw),
    "triplet_batch_hard": lambda x, **kw: fc.triplet_margin_loss(x, LABELS, mining="batch_hard", margin=0.3,
                                                                  normalize=True, **kw),
    "lifted": lambda x, **kw: fc.lifted_structure_loss(x, LABELS, **kw),
    "lifted_sq": lambda x, **kw: fc.lifted_structure_loss(x, LABELS, distance="squared_euclidean", normalize=True,
                                                          **kw),
    "triplet_explicit": lambda x, **kw: fc.triplet_margin_loss(
        x, indices_tuple=(torch.arange(10), (torch.arange(10) + 1) % 10, (torch.arange(10) + 2) % 10),
        margin=0.2, **kw),
}


MINING = ("triplet_semihard", "triplet_batch_hard")
ZERO_ROW = 3


def data(dtype, seed=0, zero_row=True):
    x = torch.randn(10, 12, generator=torch.Generator().manual_seed(seed))
    if zero_row:
        x[ZERO_ROW] = 0
    x[6] *= 3e3 if dtype == torch.float16 else 1e3  # norm > 65504 in float16
    return x.to(dtype)


def value_and_grad(name, x, backend="torch", autocast=None):
    x = x.detach().clone().requires_grad_()
    if autocast is None:
        loss = LOSSES[name](x, backend=backend)
    else:
        with torch.autocast("cpu", dtype=autocast):
            loss = LOSSES[name](x @ torch.eye(x.shape[1]), backend=backend)  # autocast's matmul: 16-bit rows
    loss.backward()
    return loss, x.grad


def other_rows(grad):
    return torch.cat([grad[:ZERO_ROW], grad[ZERO_ROW + 1:]])


def check(loss, grad, ref, ref_grad, rtol, atol, grad_rtol, grad_atol):
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(other_rows(grad)).all()
    torch.testing.assert_close(loss.double(), ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(other_rows(grad).double(), other_rows(ref_grad), rtol=grad_rtol, atol=grad_atol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_inputs_match_float64(name, dtype):
    x = data(dtype)
    loss, grad = value_and_grad(name, x)
    assert torch.isfinite(loss) and torch.isfinite(other_rows(grad)).all()
    x = data(dtype, zero_row=name not in MINING)
    loss, grad = value_and_grad(name, x)
    ref, ref_grad = value_and_grad(name, x.double())
    check(loss, grad, ref, ref_grad, **TOL, grad_rtol=1e-2, grad_atol=1e-3)  # grads round to x's dtype


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_autocast_bfloat16(name):
    x = data(torch.float32, zero_row=name not in MINING)
    loss, grad = value_and_grad(name, x, autocast=torch.bfloat16)
    rows = (x @ torch.eye(12)).to(torch.bfloat16)  # what autocast hands the loss
    ref, _ = value_and_grad(name, rows.double())
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), ref, **TOL)


@pytest.mark.parametrize("name", ["supcon", "ntxent", "contrastive", "triplet_semihard", "siglip", "dcl", "lifted",
                                  "lifted_sq"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_triton_interpreter(name, dtype):
    x = data(dtype, zero_row=name not in MINING)
    loss, grad = value_and_grad(name, x, backend="triton")
    ref, ref_grad = value_and_grad(name, x.double())
    # the kernels take 16-bit normalized rows
    check(loss, grad, ref, ref_grad, rtol=5e-3, atol=5e-4, grad_rtol=5e-2, grad_atol=5e-3)


def test_autocast_triton_interpreter():
    x = data(torch.float32)
    loss, grad = value_and_grad("supcon", x, backend="triton", autocast=torch.bfloat16)
    assert loss.dtype == torch.float32 and torch.isfinite(grad).all()
