"""The similarity-softmax kernels' pair-weighted variants ("ms", "circle", "glifted";
kernels/softmax.py) against the PyTorch path, in the interpreter at small shapes: values and
the gradients of both inputs, every kind, with and without a reference set, fp32 and fp16."""
import pytest
import torch

pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402
from fastcontrast.configs import SoftmaxConfig  # noqa: E402
from fastcontrast.kernels import softmax as kernel  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOSSES = {
    "ms": (fc.MultiSimilarityLoss, dict(alpha=3.0, beta=7.0, base=0.3)),
    "circle": (fc.CircleLoss, dict(m=0.3, gamma=12.0)),
    "glifted": (fc.GeneralizedLiftedStructureLoss, dict(neg_margin=0.7, pos_margin=0.1)),
}
CASES = [(v, d) for v in LOSSES for d in ("cosine", "dot", "euclidean", "squared_euclidean")
         if not (v == "circle" and d not in ("cosine", "dot"))]


def _run(loss, x, y, ref, ry, weights):
    x = x.clone().requires_grad_()
    r = None if ref is None else ref.clone().requires_grad_()
    v = loss(x, y) if ref is None else loss(x, y, ref_emb=r, ref_labels=ry)
    (v.float() * weights).sum().backward()
    return v.detach().float(), x.grad.float(), None if r is None else r.grad.float()


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("variant,dist", CASES)
def test_kernel_matches_torch_path(variant, dist, with_ref, gen):
    cls, hyper = LOSSES[variant]
    x = torch.randn(21, 10, generator=gen) * (0.5 if dist == "dot" else 1.0)
    y = torch.randint(0, 4, (21,), generator=gen)
    ref = ry = None
    if with_ref:
        ref = torch.randn(18, 10, generator=gen) * (0.5 if dist == "dot" else 1.0)
        ry = torch.randint(0, 4, (18,), generator=gen)
    weights = torch.rand(21, generator=gen)  # per-anchor upstream gradients
    expected = _run(cls(**hyper, distance=dist, backend="torch", reduction="none"), x, y, ref, ry, weights)
    on = [None if t is None else t.to(DEVICE) for t in (x, y, ref, ry, weights)]
    got = _run(cls(**hyper, distance=dist, backend="triton", reduction="none"), *on)
    for a, b in zip(got, expected):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("variant", list(LOSSES))
def test_half_precision_and_edges(variant, gen):
    cls, hyper = LOSSES[variant]
    x = torch.randn(19, 8, generator=gen)
    for y in (torch.randint(0, 3, (19,), generator=gen), torch.zeros(19, dtype=torch.long), torch.arange(19)):
        expected = cls(**hyper, backend="torch", reduction="none")(x, y)
        got = cls(**hyper, backend="triton", reduction="none")(x.to(DEVICE).half(), y.to(DEVICE))
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float().cpu(), expected, rtol=2e-2, atol=2e-2 * max(1.0, expected.abs().max().item()))


def test_parameters_travel_with_the_temperature():
    tau = torch.ones(())
    cfg = SoftmaxConfig(variant="ms", scale_pos=2.0, scale_neg=50.0, shift_pos=0.5, shift_neg=0.5)
    assert kernel._with_params(tau, cfg).tolist() == [1.0, 2.0, 50.0, 0.5, 0.5, 0.0]  # last: bound_slack
    assert kernel._with_params(tau, SoftmaxConfig(variant="supcon")) is tau
