"""fastcontrast.compat.pml's NTXentLoss, SupConLoss, NPairsLoss against the installed
pytorch-metric-learning: values and gradients."""
import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402

from fastcontrast.compat.pml import distances, losses  # noqa: E402
from tests.compat.pml._distances import DISTANCES  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

LOSSES = ("NTXentLoss", "SupConLoss", "NPairsLoss")


def make(name, dist=None, dist_kw=None, own_distance=True, **kw):
    """(PML loss, fastcontrast compat loss) with the same settings."""
    pml_kw, fc_kw = dict(kw), dict(kw)
    if dist is not None:
        pml_kw["distance"] = getattr(pml_distances, dist)(**dist_kw)
        fc_kw["distance"] = (getattr(distances, dist)(**dist_kw) if own_distance
                             else getattr(pml_distances, dist)(**dist_kw))
    return getattr(pml_losses, name)(**pml_kw), getattr(losses, name)(**fc_kw)


def compare(pml_loss, fc_loss, x, dtype, *args, **kwargs):
    """Values and gradients of fastcontrast in `dtype` against PML. In float32 the oracle is
    PML run in float64 (PML's own float32 rounding is far larger than fastcontrast's where
    logits are large, e.g. unnormalized distances); PML's float32 result must still agree
    to 1% of the gradient scale."""
    def run(loss, dt):
        e = x.detach().clone().to(dt).requires_grad_()
        conv = {k: (v.to(dt) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                for k, v in kwargs.items()}
        out = loss(e, *args, **conv)
        out.backward()
        return out, e.grad

    got, got_grad = run(fc_loss, dtype)
    want, want_grad = run(pml_loss, torch.float64)
    assert got.dtype == dtype
    assert_close(got, want, dtype)
    assert_close(got_grad, want_grad, dtype)
    if dtype != torch.float64:
        same, same_grad = run(pml_loss, dtype)
        scale = float(want_grad.abs().max()) + 1e-3
        assert_close(got, same, dtype, rtol=1e-2, atol=1e-3)
        assert_close(got_grad, same_grad, dtype, rtol=1e-2, atol=1e-2 * scale)
    return got


def batch(gen, b=13, d=7, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


def temperature_kw(name):
    return {} if name == "NPairsLoss" else {"temperature": 0.25}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dist, dist_kw", DISTANCES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_distance(name, dist, dist_kw, dtype, gen):
    x, y = batch(gen)
    pml_loss, fc_loss = make(name, dist, dist_kw, **temperature_kw(name))
    compare(pml_loss, fc_loss, x, dtype, y)


@pytest.mark.parametrize("name", LOSSES)
def test_defaults_and_pml_distance_objects(name, gen):
    x, y = batch(gen)
    compare(getattr(pml_losses, name)(), getattr(losses, name)(), x, torch.float64, y)
    pml_loss, fc_loss = make(name, "LpDistance", {"power": 2}, own_distance=False)
    compare(pml_loss, fc_loss, x, torch.float64, y)


@pytest.mark.parametrize("name", ["NTXentLoss", "SupConLoss"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ref_emb(name, dtype, gen):
    x, y = batch(gen, b=9)
    r, ry = batch(gen, b=14)
    for dist, kw in [("CosineSimilarity", {}), ("LpDistance", {"normalize_embeddings": False})]:
        pml_loss, fc_loss = make(name, dist, kw, temperature=0.3)
        compare(pml_loss, fc_loss, x, dtype, y, ref_emb=r.to(dtype), ref_labels=ry)
    # ref_labels the very object `labels`: PML drops the self pairs
    pml_loss, fc_loss = make(name, temperature=0.3)
    r9 = r[:9].to(dtype)
    compare(pml_loss, fc_loss, x, dtype, y, ref_emb=r9, ref_labels=y)
    compare(pml_loss, fc_loss, x, dtype, y, ref_emb=r9, ref_labels=y.clone())


def pair_tuple(y, gen, keep=0.6):
    same = y[:, None] == y[None, :]
    pos = same.clone()
    pos.fill_diagonal_(False)
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = (~same).nonzero(as_tuple=True)
    kp = torch.rand(a1.shape, generator=gen) < keep
    kn = torch.rand(a2.shape, generator=gen) < keep
    return a1[kp], p[kp], a2[kn], n[kn]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_pairs_and_triplets(name, dtype, gen):
    x, y = batch(gen, b=12)
    pml_loss, fc_loss = make(name, **temperature_kw(name))
    compare(pml_loss, fc_loss, x, dtype, y, indices_tuple=pair_tuple(y, gen))
    # triplets from PML's own miner: pairs (a, p) and (a, n) repeat
    triplets = pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="all")(x.to(dtype), y)
    compare(pml_loss, fc_loss, x, dtype, y, indices_tuple=triplets)
    if name != "NPairsLoss":  # labels are optional with explicit pairs
        compare(pml_loss, fc_loss, x, dtype, None, indices_tuple=triplets)


def test_indices_tuple_with_ref_emb(gen):
    x, y = batch(gen, b=8)
    r, ry = batch(gen, b=11)
    same = y[:, None] == ry[None, :]
    a1, p = same.nonzero(as_tuple=True)
    a2, n = (~same).nonzero(as_tuple=True)
    for name in ("NTXentLoss", "SupConLoss"):
        pml_loss, fc_loss = make(name, temperature=0.5)
        compare(pml_loss, fc_loss, x, torch.float64, y, indices_tuple=(a1, p, a2[::2], n[::2]),
                ref_emb=r, ref_labels=ry)
        # explicit pairs need no labels at all
        compare(pml_loss, fc_loss, x, torch.float32, None, indices_tuple=(a1, p, a2, n), ref_emb=r)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("labels", [
    [0] * 8,                      # single class: no negatives
    list(range(8)),               # all distinct: no positives
    [0, 0, 1, 2, 3, 4, 5, 6],     # one class of two, the rest alone
    [0, 0, 1],                    # PML's early exit needs <= 1 pair of each kind: not here
    [5, 5, 5, 1, 1, 2, 2, 2],
])
def test_edge_batches(name, labels, gen):
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 5, generator=gen, dtype=torch.float64)
    pml_loss, fc_loss = make(name, **temperature_kw(name))
    compare(pml_loss, fc_loss, x, torch.float64, y)


@pytest.mark.parametrize("name", ["NTXentLoss", "SupConLoss"])
def test_early_exit_one_pair_each(name, gen):
    # one query against two references: one positive pair and one negative pair -> 0
    x = torch.randn(1, 4, generator=gen, dtype=torch.float64)
    r = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    pml_loss, fc_loss = make(name)
    got = compare(pml_loss, fc_loss, x, torch.float64, torch.tensor([0]), ref_emb=r,
                  ref_labels=torch.tensor([0, 1]))
    assert got.item() == 0


def test_duplicate_embeddings(gen):
    x, y = batch(gen, b=10, classes=3)
    x[3] = x[0]
    x[7] = x[5]
    for name in LOSSES:
        for dist, kw in [("CosineSimilarity", {}), ("LpDistance", {"power": 2})]:
            pml_loss, fc_loss = make(name, dist, kw, **temperature_kw(name))
            compare(pml_loss, fc_loss, x, torch.float64, y)


@pytest.mark.parametrize("reducer", ["MeanReducer", "AvgNonZeroReducer", "SumReducer"])
def test_reducers(reducer, gen):
    x, y = batch(gen, b=11)
    y[0] = 77  # an anchor without positives (counts in SupCon's MeanReducer)
    for name in LOSSES:
        pml_loss = getattr(pml_losses, name)(reducer=getattr(pml_reducers, reducer)())
        fc_loss = getattr(losses, name)(reducer=getattr(pml_reducers, reducer)())
        compare(pml_loss, fc_loss, x, torch.float64, y)


def test_large_temperature_range(gen):
    x, y = batch(gen, b=16)
    # at τ = 0.01 PML's float32 NTXent saturates (its numerator underflows and the log is
    # capped by the tiny constant it adds): compare that one in float64 only
    for t, dtype in ((0.01, torch.float64), (0.07, torch.float32), (3.0, torch.float32)):
        for name in ("NTXentLoss", "SupConLoss"):
            pml_loss, fc_loss = make(name, temperature=t)
            compare(pml_loss, fc_loss, x, dtype, y)


def test_terms_reduce_match_forward(gen):
    x, y = batch(gen)
    for name in LOSSES:
        fc_loss = getattr(losses, name)()
        assert_close(fc_loss.reduce(fc_loss.terms(x, y)), fc_loss(x, y), torch.float64)


def test_refusals(gen):
    x, y = batch(gen)
    with pytest.raises(TypeError, match="embedding_regularizer"):
        losses.NTXentLoss(embedding_regularizer=object())
    with pytest.raises(TypeError, match="reducer"):
        losses.SupConLoss(reducer=object())
    with pytest.raises(TypeError, match="distance"):
        losses.NTXentLoss(distance="cosine")
    with pytest.raises(ValueError, match="ref_emb"):
        losses.NPairsLoss()(x, y, ref_emb=x.clone(), ref_labels=y)
    with pytest.raises(ValueError, match="labels"):
        losses.NTXentLoss()(x)
    with pytest.raises(ValueError, match="labels"):
        losses.NPairsLoss()(x)
    with pytest.raises(ValueError, match="ref_labels"):
        losses.SupConLoss()(x, y, ref_emb=x[:5])
    with pytest.raises(ValueError, match="temperature"):
        losses.NTXentLoss(temperature=0)
