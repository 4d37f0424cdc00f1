"""fastcontrast.compat.supcontrast.SupConLoss against the float64 reference written from the
SupContrast conventions."""
import pytest
import torch

from fastcontrast.compat.supcontrast import SupConLoss
from fastcontrast.reference import softmax as ref
from tests.conftest import assert_close


def features(gen, b=7, v=3, d=5, dtype=torch.float64):
    f = torch.randn(b, v, d, generator=gen, dtype=torch.float64)
    return torch.nn.functional.normalize(f, dim=2).to(dtype)


@pytest.mark.parametrize("mode", ["all", "one"])
@pytest.mark.parametrize("kind", ["simclr", "labels", "mask"])
def test_values_and_gradients(mode, kind, gen):
    f = features(gen)
    y = torch.tensor([0, 1, 0, 2, 1, 3, 0])
    mask = (y[:, None] == y[None, :]).double()
    kw = {"simclr": {}, "labels": {"labels": y}, "mask": {"mask": mask}}[kind]
    ref_kw = {"simclr": {}, "labels": {"labels": y}, "mask": {"mask": mask}}[kind]
    a = f.clone().requires_grad_()
    b = f.clone().requires_grad_()
    got = SupConLoss(0.1, mode, 0.07)(a, **kw)
    want = ref.supcontrast(b, temperature=0.1, contrast_mode=mode, base_temperature=0.07, **ref_kw)
    assert_close(got, want, torch.float64)
    got.backward()
    want.backward()
    assert_close(a.grad, b.grad, torch.float64)


def test_gradcheck_with_tensor_temperature(gen):
    f = features(gen, b=5, v=2, d=4).requires_grad_()
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2])
    assert torch.autograd.gradcheck(lambda f, t: SupConLoss(t)(f, y), (f, t))
    m = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1.0]],
                     dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f, t: SupConLoss(t)(f, mask=m), (f, t))


def test_asymmetric_mask_and_anchors_without_positives(gen):
    f = features(gen, b=5, v=2)
    mask = torch.zeros(5, 5, dtype=torch.float64)
    mask[0, 3] = 1  # 0 sees 3 as positive, not the other way round
    got = SupConLoss(0.2, base_temperature=0.1)(f, mask=mask)
    assert_close(got, ref.supcontrast(f, mask=mask, temperature=0.2, base_temperature=0.1), torch.float64)
    # unique labels, one view: nobody has a positive, the loss is 0
    one = features(gen, b=4, v=1)
    assert SupConLoss()(one, torch.arange(4)).item() == 0


def test_simclr_equals_paper_nt_xent(gen):
    f = features(gen, b=6, v=2)
    rows = torch.cat([f[:, 0], f[:, 1]])
    assert_close(SupConLoss(0.5, base_temperature=0.5)(f), ref.simclr_ntxent(rows, 0.5), torch.float64)


def test_float_labels_and_more_dims(gen):
    f = features(gen, b=6, v=2, d=6)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    loss = SupConLoss()
    assert_close(loss(f, y.float()), loss(f, y), torch.float64)
    assert_close(loss(f.reshape(6, 2, 2, 3), y), loss(f, y), torch.float64)


def test_float32_and_no_normalization_inside(gen):
    f = torch.randn(5, 2, 4, generator=gen) * 0.3  # not unit vectors: used as given
    y = torch.tensor([0, 1, 0, 1, 1])
    got = SupConLoss()(f, y)
    assert got.dtype == torch.float32
    assert_close(got, ref.supcontrast(f.double(), y), torch.float32)


def test_bad_input(gen):
    f = features(gen)
    with pytest.raises(ValueError, match="features"):
        SupConLoss()(f[:, 0])
    with pytest.raises(ValueError, match="labels or mask"):
        SupConLoss()(f, torch.arange(7), torch.eye(7))
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(f, torch.arange(6))
    with pytest.raises(ValueError, match="mask"):
        SupConLoss()(f, mask=torch.eye(6))
    with pytest.raises(ValueError, match="contrast_mode"):
        SupConLoss(contrast_mode="two")
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0)
    with pytest.raises(ValueError, match="base_temperature"):
        SupConLoss(base_temperature=-1.0)
    with pytest.raises(ValueError, match="features"):
        SupConLoss()(f * float("nan"))
