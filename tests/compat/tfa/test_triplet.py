"""fastcontrast.compat.tfa's triplet losses against float64 dense statements of TF Addons'
rules (fastcontrast.reference.triplet.tfa_*): values and gradients."""
import pytest
import torch

from fastcontrast.compat import tfa
from fastcontrast.reference.triplet import tfa_triplet_hard_loss, tfa_triplet_semihard_loss
from tests.conftest import assert_close

METRICS = ["L2", "squared-L2", "angular"]


def compare(fn, ref, y, x, dtype=torch.float64, **kw):
    e = x.detach().clone().to(dtype).requires_grad_()
    got = fn(y, e, **kw)
    got.backward()
    assert got.dtype == dtype
    r = x.detach().clone().requires_grad_()
    want = ref(y, r, **{("metric" if k == "distance_metric" else k): v for k, v in kw.items()})
    if want.requires_grad:
        want.backward()
    want_grad = r.grad if r.grad is not None else torch.zeros_like(r)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    assert_close(got, want, compute if dtype != torch.float16 else torch.float16)
    assert_close(e.grad, want_grad, dtype)
    return got


def batch(gen, b=15, d=5, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_semihard(metric, margin, gen):
    x, y = batch(gen)
    y[3] = 9  # an anchor without positives
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y, x, margin=margin, distance_metric=metric)
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y[:, None], x, torch.float32,
            margin=margin, distance_metric=metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
def test_hard(metric, soft, gen):
    x, y = batch(gen)
    y[3] = 9  # no positive: d_ap = 0
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, margin=0.7, soft=soft, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, torch.float32, soft=soft, distance_metric=metric)


@pytest.mark.parametrize("metric", METRICS)
def test_one_class_and_duplicates(metric, gen):
    x, _ = batch(gen)
    x[4] = x[1]
    one = torch.zeros(15, dtype=torch.long)  # no negatives: TF Addons' row min / row max fallbacks
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, one, x, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, one, x, distance_metric=metric)
    y = torch.tensor([0, 1, 1, 2, 1, 0, 2, 3, 3, 0, 1, 2, 2, 0, 3])
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y, x, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, distance_metric=metric)


def test_no_positive_pair_is_zero_not_nan(gen):
    x, _ = batch(gen)
    e = x.clone().requires_grad_()
    loss = tfa.triplet_semihard_loss(torch.arange(15), e)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(x))
    assert torch.isfinite(tfa.triplet_hard_loss(torch.arange(15), x))


def test_half_precision_computes_in_float32(gen):
    x, y = batch(gen)
    got = tfa.triplet_semihard_loss(y, x.half())
    assert got.dtype == torch.float16
    assert_close(got, tfa_triplet_semihard_loss(y, x.half().double()), torch.float16)


def test_modules_and_bad_input(gen):
    x, y = batch(gen)
    assert_close(tfa.TripletSemiHardLoss(margin=0.5)(y, x), tfa.triplet_semihard_loss(y, x, margin=0.5))
    assert_close(tfa.TripletHardLoss(soft=True)(y, x), tfa.triplet_hard_loss(y, x, soft=True))
    with pytest.raises(ValueError, match="distance_metric"):
        tfa.triplet_semihard_loss(y, x, distance_metric="cosine")
    with pytest.raises(TypeError, match="distance_metric"):
        tfa.triplet_hard_loss(y, x, distance_metric=lambda e: e @ e.T)
    with pytest.raises(TypeError, match="y_true"):
        tfa.triplet_hard_loss(y.float(), x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_semihard_loss(y[:-1], x)
    with pytest.raises(ValueError, match="y_pred"):
        tfa.triplet_semihard_loss(y, x.masked_fill(x > 1, float("inf")))
    with pytest.raises(TypeError, match="soft"):
        tfa.triplet_hard_loss(y, x, soft=1)
