"""fastcontrast.compat.pml's MultiSimilarityLoss, CircleLoss, LiftedStructureLoss,
GeneralizedLiftedStructureLoss, MarginLoss and the pair miners against pytorch-metric-learning:
the same signatures, values and gradients (β's too), with reducers, reference sets, explicit
and mined tuples, float32, early exits and the dense fallbacks."""
import inspect

import pytest
import torch

from tests.conftest import assert_close

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402

LOSSES = ["MultiSimilarityLoss", "CircleLoss", "LiftedStructureLoss", "GeneralizedLiftedStructureLoss", "MarginLoss"]
MINERS = ["MultiSimilarityMiner", "PairMarginMiner", "BatchEasyHardMiner"]


def _params(cls):
    return [(p.name, p.default) for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in ("self", "kwargs", "backend")]


@pytest.mark.parametrize("name", LOSSES + MINERS)
def test_signature_matches_pml(name):
    ours = getattr(losses, name, None) or getattr(miners, name)
    theirs = getattr(pml_losses, name, None) or getattr(pml_miners, name)
    base = [("distance", None), ("reducer", None), ("embedding_regularizer", None), ("embedding_reg_weight", 1),
            ("collect_stats", None)] if name in LOSSES else [("distance", None), ("collect_stats", None)]
    assert _params(ours) == _params(theirs) + base


def _compare(ours, theirs, x, y, dtype=torch.float64, seed=None, **call):
    x1, x2 = x.to(dtype).clone().requires_grad_(), x.to(dtype).clone().requires_grad_()
    if seed is not None:
        torch.manual_seed(seed)
    a = ours(x1, y, **call)
    if seed is not None:
        torch.manual_seed(seed)
    b = theirs(x2, y, **call)
    assert a.dtype == b.dtype
    a.backward()
    b.backward()
    assert_close(a, b, dtype)
    assert_close(x1.grad, x2.grad, dtype)
    return a


CONFIGS = [
    ("MultiSimilarityLoss", dict()), ("MultiSimilarityLoss", dict(alpha=1, beta=20, base=0.2)),
    ("MultiSimilarityLoss", dict(reducer="SumReducer")), ("MultiSimilarityLoss", dict(distance="Lp")),
    ("CircleLoss", dict()), ("CircleLoss", dict(m=0.25, gamma=30, reducer="MeanReducer")),
    ("LiftedStructureLoss", dict()), ("LiftedStructureLoss", dict(neg_margin=0.5, pos_margin=0.1)),
    ("LiftedStructureLoss", dict(reducer="AvgNonZeroReducer")), ("LiftedStructureLoss", dict(distance="Cosine")),
    ("GeneralizedLiftedStructureLoss", dict()), ("GeneralizedLiftedStructureLoss", dict(reducer="AvgNonZeroReducer")),
    ("MarginLoss", dict()), ("MarginLoss", dict(margin=0.1, beta=0.8, learn_beta=True, nu=0.2)),
    ("MarginLoss", dict(learn_beta=True, nu=0.1, num_classes=4)), ("MarginLoss", dict(reducer="MeanReducer")),
    ("MarginLoss", dict(distance="Cosine", beta=0.3, margin=0.1)),
]


def _build(name, kw):
    kw = dict(kw)
    mk = {}
    if "reducer" in kw:
        reducer = kw.pop("reducer")
        mk["reducer"] = lambda: getattr(pml_reducers, reducer)()
    if "distance" in kw:
        which = kw.pop("distance")
        mk["distance"] = {"Lp": lambda: distances.LpDistance(), "Cosine": lambda: distances.CosineSimilarity()}[which]
    ours = getattr(losses, name)(**kw, **{k: f() for k, f in mk.items()})
    theirs = getattr(pml_losses, name)(**kw, **{k: f() for k, f in mk.items()})
    return ours, theirs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_values_and_gradients(k, dtype, gen):
    name, kw = CONFIGS[k]
    x = torch.randn(15, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (15,), generator=gen)
    ours, theirs = _build(name, kw)
    if name == "MarginLoss":
        ours.beta.data, theirs.beta.data = ours.beta.data.to(dtype), theirs.beta.data.to(dtype)
    _compare(ours, theirs, x, y, dtype)
    if getattr(ours, "learn_beta", False):
        assert_close(ours.beta.grad, theirs.beta.grad, dtype)


@pytest.mark.parametrize("name", LOSSES)
def test_reference_sets_and_tuples(name, gen):
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    ref = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 3, (8,), generator=gen)
    ours, theirs = _build(name, {})
    _compare(ours, theirs, x, y, ref_emb=ref, ref_labels=ry)
    _compare(ours, theirs, x, y, ref_emb=x.clone(), ref_labels=y)  # ref_labels is labels: self pairs dropped
    for miner in MINERS:
        pairs = getattr(pml_miners, miner)()(x, y)
        _compare(ours, theirs, x, y, indices_tuple=pairs)
        lazy = getattr(miners, miner)()(x, y)
        _compare(ours, theirs, x, y, indices_tuple=lazy)
    triplets = pml_miners.TripletMarginMiner(margin=0.5)(x, y)
    _compare(ours, theirs, x, y, indices_tuple=triplets)


@pytest.mark.parametrize("name", LOSSES)
def test_early_exits_and_edges(name, gen):
    ours, theirs = _build(name, {})
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    for y in (torch.zeros(9, dtype=torch.long), torch.arange(9), torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5])):
        _compare(ours, theirs, x, y)
    # one positive pair and one negative pair (explicit): the pair losses' early exit (MarginLoss,
    # a triplet loss in PML, has none)
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    out = _compare(ours, theirs, x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4]), indices_tuple=pairs)
    assert out.requires_grad and (out.item() == 0) == (name != "MarginLoss")


def test_margin_loss_sampled_triplets_and_beta_state(gen):
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=gen)
    ours = losses.MarginLoss(triplets_per_anchor=4, learn_beta=True, nu=0.1)
    theirs = pml_losses.MarginLoss(triplets_per_anchor=4, learn_beta=True, nu=0.1)
    _compare(ours, theirs, x, y, seed=3)
    assert_close(ours.beta.grad.double(), theirs.beta.grad.double(), torch.float32)
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"beta"}
    assert isinstance(ours.beta, torch.nn.Parameter)
    assert not isinstance(losses.MarginLoss().beta, torch.nn.Parameter)


def test_unfused_distance_uses_pml(gen):
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    with pytest.warns(UserWarning, match="not fused"):
        ours = losses.MultiSimilarityLoss(distance=pml_distances.LpDistance(p=1))
    _compare(ours, pml_losses.MultiSimilarityLoss(distance=pml_distances.LpDistance(p=1)), x, y)
    with pytest.raises(ValueError, match="CosineSimilarity"):
        losses.CircleLoss(distance=distances.LpDistance())


@pytest.mark.parametrize("name", MINERS)
def test_miners_match_pml(name, gen):
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=gen)
    ref = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 4, (7,), generator=gen)
    calls = [(x, y), (x, y, ref, ry), (x, y, x, y.clone())]
    if name != "MultiSimilarityMiner":  # PML's known quirk there (see _pair_miners)
        calls.append((x, y, x.clone(), y))
    for call in calls:
        ours, theirs = getattr(miners, name)(), getattr(pml_miners, name)()
        a, b = ours(*call), theirs(*call)
        assert len(a) == len(b) == 4
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        assert (ours.num_pos_pairs, ours.num_neg_pairs) == (theirs.num_pos_pairs, theirs.num_neg_pairs)
    stats = getattr(miners, name)(collect_stats=True)
    stats(x, y)  # PML's own miner records the statistics
    assert stats.num_pos_pairs > 0
