"""fastcontrast.compat.pml's TripletMarginLoss against the installed pytorch-metric-learning:
values and gradients, every distance, swap/smooth, reducers, ref_emb, explicit indices."""
import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402

from fastcontrast.compat.pml import distances, losses  # noqa: E402
from tests.compat.pml._distances import DISTANCES  # noqa: E402
from tests.conftest import assert_close  # noqa: E402


def make(dist=None, dist_kw=None, own_distance=True, **kw):
    pml_kw, fc_kw = dict(kw), dict(kw)
    if dist is not None:
        pml_kw["distance"] = getattr(pml_distances, dist)(**dist_kw)
        fc_kw["distance"] = (getattr(distances, dist)(**dist_kw) if own_distance
                             else getattr(pml_distances, dist)(**dist_kw))
    return pml_losses.TripletMarginLoss(**pml_kw), losses.TripletMarginLoss(**fc_kw)


def run(loss, x, dtype, *args, **kwargs):
    e = x.detach().clone().to(dtype).requires_grad_()
    conv = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in kwargs.items()}
    if "ref_emb" in conv and conv["ref_emb"] is not None:
        conv["ref_emb"] = conv["ref_emb"].detach().clone().requires_grad_()
    out = loss(e, *args, **conv)
    out.backward()
    return out, e.grad, (conv["ref_emb"].grad if conv.get("ref_emb") is not None else None)


def compare(pml_loss, fc_loss, x, dtype, *args, **kwargs):
    got = run(fc_loss, x, dtype, *args, **kwargs)
    want = run(pml_loss, x, dtype, *args, **kwargs)
    assert got[0].dtype == dtype
    assert_close(got[0], want[0], dtype)
    scale = float(want[1].abs().max()) + 1e-3
    tol = {} if dtype == torch.float64 else dict(atol=2e-5 * scale)
    assert_close(got[1], want[1], dtype, **tol)
    if want[2] is not None:
        assert_close(got[2], want[2], dtype, **tol)
    return got[0]


def batch(gen, b=17, d=7, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


def margin_for(dist, dist_kw):
    """A margin that makes a fair share of the triplets active for the distance's scale."""
    if dist is None or dist_kw.get("normalize_embeddings", True):
        return 0.3
    return 2.0


@pytest.mark.parametrize("dist, dist_kw", DISTANCES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_distance(dist, dist_kw, dtype, gen):
    x, y = batch(gen)
    compare(*make(dist, dist_kw, margin=margin_for(dist, dist_kw)), x, dtype, y)


def test_defaults_and_pml_distance_objects(gen):
    x, y = batch(gen)
    compare(*make(), x, torch.float64, y)
    compare(*make("LpDistance", {"power": 2}, own_distance=False, margin=0.5), x, torch.float64, y)


@pytest.mark.parametrize("swap, smooth", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dist, dist_kw", [(None, {}), ("CosineSimilarity", {}),
                                           ("LpDistance", {"normalize_embeddings": False, "power": 2})])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swap_smooth(swap, smooth, dist, dist_kw, dtype, gen):
    x, y = batch(gen)
    compare(*make(dist, dist_kw, margin=margin_for(dist, dist_kw), swap=swap, smooth_loss=smooth), x, dtype, y)


@pytest.mark.parametrize("reducer", ["AvgNonZeroReducer", "MeanReducer"])
def test_reducers(reducer, gen):
    x, y = batch(gen)
    pml = pml_losses.TripletMarginLoss(margin=0.2, reducer=getattr(pml_reducers, reducer)())
    fc = losses.TripletMarginLoss(margin=0.2, reducer=getattr(pml_reducers, reducer)())
    compare(pml, fc, x, torch.float64, y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ref_emb(dtype, gen):
    x, y = batch(gen)
    r, ry = batch(gen, b=23)
    pml, fc = make(margin=0.3)
    compare(pml, fc, x, dtype, y, ref_emb=r, ref_labels=ry)
    # ref_labels being the labels object drops the self pairs (PML's identity test)
    r2 = torch.randn(17, 7, generator=gen, dtype=torch.float64)
    compare(pml, fc, x, dtype, y, ref_emb=r2, ref_labels=y)
    compare(pml, fc, x, dtype, y, ref_emb=r2, ref_labels=y.clone())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_explicit_indices(dtype, gen):
    x, y = batch(gen)
    a = torch.tensor([0, 0, 3, 5, 9, 9, 9, 12])
    p = torch.tensor([1, 4, 6, 2, 11, 11, 0, 1])
    n = torch.tensor([2, 7, 1, 3, 4, 5, 6, 16])
    for kw in (dict(), dict(swap=True), dict(smooth_loss=True)):
        pml, fc = make(margin=0.4, **kw)
        compare(pml, fc, x, dtype, y, indices_tuple=(a, p, n))
        compare(pml, fc, x, dtype, None, indices_tuple=(a, p, n))
    pairs = (torch.tensor([0, 3, 3, 9]), torch.tensor([1, 6, 8, 11]), torch.tensor([3, 0, 9, 9, 2]),
             torch.tensor([2, 4, 1, 5, 0]))
    compare(*make(margin=0.4), x, dtype, y, indices_tuple=pairs)


@pytest.mark.parametrize("labels", ["one_class", "all_distinct"])
def test_nothing_to_average(labels, gen):
    x, _ = batch(gen)
    y = torch.zeros(17, dtype=torch.long) if labels == "one_class" else torch.arange(17)
    got = compare(*make(), x, torch.float64, y)
    assert got.item() == 0.0


def test_unsupported_options():
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        losses.TripletMarginLoss(triplets_per_anchor=0)
    with pytest.raises(TypeError, match="triplets_per_anchor"):
        losses.TripletMarginLoss(triplets_per_anchor="5")
    with pytest.raises(TypeError, match="distance"):
        losses.TripletMarginLoss(distance="euclidean")
    with pytest.raises(ValueError, match="labels"):
        losses.TripletMarginLoss()(torch.randn(4, 3))
