"""The compat distance objects implement PML's BaseDistance interface (PML's other losses
accept them), and distances without a fused form go through the warned dense path with
PML's numbers."""
import warnings

import pytest
import torch

pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

SETTINGS = [("LpDistance", {}), ("LpDistance", {"p": 1, "normalize_embeddings": False}),
            ("LpDistance", {"power": 2}), ("DotProductSimilarity", {"normalize_embeddings": False}),
            ("CosineSimilarity", {})]
STANDALONE = {"LpDistance": distances._StandaloneLp, "DotProductSimilarity": distances._StandaloneDot,
              "CosineSimilarity": distances._StandaloneCos}


def batch(gen, b=15, d=5, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


def interface(dist, q, r):
    """Every BaseDistance method PML's losses call, evaluated."""
    x, y = q[:, 0], r[:4, 0] if r.shape[0] >= 4 else r[:, 0]
    return [dist(q, r), dist(q), dist.compute_mat(q, r), dist.pairwise_distance(q[:4], r[:4]),
            dist.normalize(q), dist.maybe_normalize(q), dist.get_norm(q), dist.margin(x[:4], y),
            dist.smallest_dist(x[:4], y), dist.largest_dist(x[:4], y), torch.tensor(float(dist.is_inverted))]


@pytest.mark.parametrize("k", range(len(SETTINGS)))
def test_interface_matches_pml(k, gen):
    name, kw = SETTINGS[k]
    q, _ = batch(gen)
    r, _ = batch(gen, b=6)
    want = interface(getattr(pml_distances, name)(**kw), q, r)
    for ours in (getattr(distances, name)(**kw), STANDALONE[name](**kw)):  # with and without PML installed
        for got, exp in zip(interface(ours, q, r), want):
            assert_close(got, exp)
    assert isinstance(getattr(distances, name)(**kw), getattr(pml_distances, name))


@pytest.mark.parametrize("case", ["margin", "multi_similarity", "arcface", "lifted", "angular_miner"])
def test_pml_losses_accept_compat_distances(case, gen):
    x, y = batch(gen)

    def make(lib):
        if case == "margin":
            return lib.losses.MarginLoss(distance=lib.distances.LpDistance(power=2))
        if case == "multi_similarity":
            return lib.losses.MultiSimilarityLoss(distance=lib.distances.CosineSimilarity())
        if case == "arcface":
            torch.manual_seed(0)
            return lib.losses.ArcFaceLoss(num_classes=4, embedding_size=5, distance=lib.distances.CosineSimilarity())
        if case == "lifted":
            return lib.losses.GeneralizedLiftedStructureLoss(distance=lib.distances.DotProductSimilarity())
        return lib.miners.MultiSimilarityMiner(distance=lib.distances.CosineSimilarity())

    import pytorch_metric_learning as theirs
    import fastcontrast.compat.pml as ours
    fc, pml = make(ours), make(theirs)
    if case == "angular_miner":
        assert all(torch.equal(a, b) for a, b in zip(fc(x, y), pml(x, y)))
        return
    e1, e2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = fc(e1, y), pml(e2, y)
    got.backward()
    want.backward()
    assert_close(got, want)
    assert_close(e1.grad, e2.grad)


def user_distance():
    """A user's own BaseDistance subclass (defined fresh, so its warning is new)."""
    class Manhattanish(pml_distances.BaseDistance):
        def compute_mat(self, query_emb, ref_emb):
            return torch.cdist(query_emb, ref_emb, p=1) ** 0.5

        def pairwise_distance(self, query_emb, ref_emb):
            return (query_emb - ref_emb).abs().sum(1) ** 0.5
    return Manhattanish(normalize_embeddings=False)


DENSE = {
    "lp_p1": lambda lib: lib.LpDistance(p=1),
    "lp_p3_power2": lambda lib: lib.LpDistance(p=3, power=2, normalize_embeddings=False),
    "dot_power2": lambda lib: lib.DotProductSimilarity(power=2),
    "snr": lambda lib: lib.SNRDistance(),
    "pml_subclass_of_lp": lambda lib: type("MyLp", (pml_distances.LpDistance,), {})(),
}
LOSS_KW = {"TripletMarginLoss": dict(margin=0.2), "ContrastiveLoss": dict(pos_margin=0.1, neg_margin=0.9),
           "NTXentLoss": dict(temperature=0.5), "SupConLoss": dict(temperature=0.5), "NPairsLoss": {}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dist", sorted(DENSE))
@pytest.mark.parametrize("name", sorted(LOSS_KW))
def test_dense_path_matches_pml(name, dist, dtype, gen):
    x, y = batch(gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = getattr(losses, name)(distance=DENSE[dist](distances), **LOSS_KW[name])
    pml = getattr(pml_losses, name)(distance=DENSE[dist](pml_distances), **LOSS_KW[name])
    assert fc.metric is None
    e1 = x.detach().clone().to(dtype).requires_grad_()
    e2 = x.detach().clone().to(dtype).requires_grad_()
    got, want = fc(e1, y), pml(e2, y)
    got.backward()
    want.backward()
    assert_close(got, want, dtype)
    assert_close(e1.grad, e2.grad, dtype)


@pytest.mark.parametrize("miner", ["TripletMarginMiner", "BatchHardMiner"])
def test_dense_miners_match_pml(miner, gen):
    x, y = batch(gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(miners, miner)(distance=distances.SNRDistance())
    theirs = getattr(pml_miners, miner)(distance=pml_distances.SNRDistance())
    got, want = ours(x, y), theirs(x, y)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert ours.num_triplets == theirs.num_triplets


def test_user_distance_warns_once_and_matches_pml(gen):
    x, y = batch(gen)
    dist = user_distance()
    with pytest.warns(UserWarning, match="not fused"):
        fc = losses.TripletMarginLoss(distance=dist)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc2 = losses.TripletMarginLoss(distance=dist, margin=0.3)  # same class: no second warning
    for loss, margin in ((fc, 0.05), (fc2, 0.3)):
        assert_close(loss(x, y), pml_losses.TripletMarginLoss(distance=dist, margin=margin)(x, y))
    with pytest.warns(UserWarning, match="not fused"):
        m = miners.TripletMarginMiner(distance=dist, type_of_triplets="semihard")
    want = pml_miners.TripletMarginMiner(distance=dist, type_of_triplets="semihard")(x, y)
    assert all(torch.equal(a, b) for a, b in zip(m(x, y), want))


def test_not_a_distance():
    with pytest.raises(TypeError, match="distance"):
        losses.ContrastiveLoss(distance=lambda q, r: q @ r.T)
    with pytest.raises(TypeError, match="distance"):
        miners.BatchHardMiner(distance="euclidean")
    with pytest.raises(ValueError, match="is_inverted"):
        distances.DotProductSimilarity(is_inverted=False)
