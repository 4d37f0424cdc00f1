"""fastcontrast.compat.tfa.contrastive_loss against the float64 reference (TF Addons' formula)."""
import pytest
import torch

from fastcontrast.compat import tfa
from fastcontrast.reference import pair_margin as ref
from tests.conftest import assert_close


def test_documented_example():
    # tfa docs: distances of three pairs, two similar and one dissimilar
    d = torch.tensor([8.0623, 2.0, 4.4721], dtype=torch.float64)
    y = torch.tensor([1, 0, 1])
    out = tfa.contrastive_loss(y, d, margin=5.0)
    assert_close(out, torch.tensor([8.0623 ** 2, 9.0, 4.4721 ** 2], dtype=torch.float64))


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.5])
def test_matches_reference_values_and_gradient(margin, gen):
    d = (torch.rand(31, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    y = torch.randint(0, 2, (31,), generator=gen)
    out = tfa.contrastive_loss(y, d, margin)
    want = ref.tfa_contrastive(y, d, margin)
    assert out.shape == (31,)
    assert_close(out, want)
    w = torch.randn(31, generator=gen, dtype=torch.float64)
    g1, = torch.autograd.grad((out * w).sum(), d)
    g2, = torch.autograd.grad((want * w).sum(), d)
    assert_close(g1, g2)
    # hand-written gradient: 2yd − 2(1−y)relu(m − d)
    yf = y.double()
    assert_close(g1, w * (2 * yf * d - 2 * (1 - yf) * (margin - d).clamp_min(0)))


def test_class_reductions_and_dtypes(gen):
    d = torch.rand(10, generator=gen) * 2
    y = torch.randint(0, 2, (10,), generator=gen).float()
    per = tfa.contrastive_loss(y, d)
    assert_close(tfa.ContrastiveLoss()(y, d), per.mean(), torch.float32)
    assert_close(tfa.ContrastiveLoss(reduction="sum")(y, d), per.sum(), torch.float32)
    assert torch.equal(tfa.ContrastiveLoss(reduction="none")(y, d), per)
    half = tfa.contrastive_loss(y, d.half())
    assert half.dtype == torch.float16
    assert_close(half, per, torch.float16)


def test_bad_input():
    d = torch.rand(4)
    with pytest.raises(TypeError, match="y_pred"):
        tfa.contrastive_loss(torch.ones(4), [0.1, 0.2])
    with pytest.raises(TypeError, match="y_pred"):
        tfa.contrastive_loss(torch.ones(4), torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="y_true"):
        tfa.contrastive_loss(torch.ones(3), d)
    with pytest.raises(ValueError, match="y_pred"):
        tfa.contrastive_loss(torch.ones(4), torch.tensor([0.1, float("nan"), 0.2, 0.3]))
    with pytest.raises(ValueError, match="margin"):
        tfa.contrastive_loss(torch.ones(4), d, margin=float("inf"))
    with pytest.raises(ValueError, match="reduction"):
        tfa.ContrastiveLoss(reduction="mean")
