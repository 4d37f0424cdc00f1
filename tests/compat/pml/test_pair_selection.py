"""PairMarginMiner's lazy selection (MinedPairs) against pytorch-metric-learning 2.9.0: the
tuple it reads as, its pair counts, and fastcontrast's ContrastiveLoss fusing it unlisted
(values and gradients, float64 and float32, reducers, reference sets, odd shapes, one class,
all distinct, duplicate rows), or materializing it when it cannot."""
import copy
import pickle

import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402
from fastcontrast.compat.pml._pair_miners import MinedPairs  # noqa: E402

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}


def _batch(b, labels, dtype, seed=0, dim=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, dim, generator=gen, dtype=dtype)
    if labels == "one_class":
        y = torch.zeros(b, dtype=torch.int64)
    elif labels == "distinct":
        y = torch.arange(b)
    elif labels == "duplicates":  # repeated rows: distance-0 pairs
        x[1::3] = x[0::3][: x[1::3].shape[0]]
        y = torch.randint(0, 3, (b,), generator=gen)
    else:
        y = torch.randint(0, labels, (b,), generator=gen)
    return x, y


# (distance factory, miner margins, loss margins)
SETTINGS = {
    "lp": (lambda: pml_distances.LpDistance(), lambda: distances.LpDistance(), (0.9, 1.4), (0.0, 1.0)),
    "lp-loss-margins-beyond": (lambda: pml_distances.LpDistance(), lambda: distances.LpDistance(), (0.9, 1.4),
                               (1.2, 1.1)),
    "lp-squared": (lambda: pml_distances.LpDistance(power=2), lambda: distances.LpDistance(power=2), (1.0, 2.5),
                   (0.5, 2.0)),
    "cosine": (lambda: pml_distances.CosineSimilarity(), lambda: distances.CosineSimilarity(), (0.3, 0.1),
               (1.0, 0.0)),
    "cosine-loss-margins-beyond": (lambda: pml_distances.CosineSimilarity(), lambda: distances.CosineSimilarity(),
                                   (0.3, 0.1), (0.2, 0.3)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("shape", [(13, 3), (9, "one_class"), (11, "distinct"), (10, "duplicates"), (1, 1),
                                   (2, 1)])
def test_fused_contrastive_matches_pml(dtype, setting, shape):
    pml_d, fc_d, (pm, nm), (lpm, lnm) = SETTINGS[setting]
    x, y = _batch(*shape, dtype)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    theirs_miner = pml_miners.PairMarginMiner(pos_margin=pm, neg_margin=nm, distance=pml_d())
    ours_miner = miners.PairMarginMiner(pos_margin=pm, neg_margin=nm, distance=fc_d())
    expected = pml_losses.ContrastiveLoss(pos_margin=lpm, neg_margin=lnm, distance=pml_d())(
        xr, y, theirs_miner(xr, y))
    sel = ours_miner(xf, y)
    got = losses.ContrastiveLoss(pos_margin=lpm, neg_margin=lnm, distance=fc_d(), backend="torch")(xf, y, sel)
    assert isinstance(sel, MinedPairs) and sel._materialized is None  # fused: nothing listed
    assert (ours_miner.num_pos_pairs, ours_miner.num_neg_pairs) == \
        (theirs_miner.num_pos_pairs, theirs_miner.num_neg_pairs)
    torch.testing.assert_close(got, expected, **TOL[dtype])
    expected.backward()
    got.backward()
    torch.testing.assert_close(xf.grad, xr.grad, **TOL[dtype])


@pytest.mark.parametrize("reducer", ["MeanReducer", "SumReducer", "AvgNonZeroReducer"])
def test_fused_with_reducers_and_reference_set(reducer):
    x, y = _batch(12, 3, torch.float64, seed=1)
    ref, ry = _batch(7, 3, torch.float64, seed=2)
    for r_emb, r_lab in ((None, None), (ref, ry)):
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        theirs = pml_miners.PairMarginMiner(pos_margin=0.8, neg_margin=1.6)(xr, y, r_emb, r_lab)
        expected = pml_losses.ContrastiveLoss(neg_margin=1.2, reducer=getattr(pml_reducers, reducer)())(
            xr, y, theirs, r_emb, r_lab)
        sel = miners.PairMarginMiner(pos_margin=0.8, neg_margin=1.6)(xf, y, r_emb, r_lab)
        loss = losses.ContrastiveLoss(neg_margin=1.2, reducer=getattr(pml_reducers, reducer)(), backend="torch")
        got = loss(xf, y, sel, r_emb, r_lab)
        assert sel._materialized is None
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        expected.backward()
        got.backward()
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-10, atol=1e-12)


def test_reads_as_pml_pairs():
    x, y = _batch(15, 4, torch.float32, seed=3)
    expected = pml_miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.5)(x, y)
    sel = miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.5)(x, y)
    assert isinstance(sel, tuple) and len(sel) == 4
    a1, p, a2, n = sel
    for got, want in zip((a1, p, a2, n), expected):
        assert torch.equal(got, want)
    assert torch.equal(sel[2], expected[2]) and torch.equal(sel[-1], expected[-1])
    assert all(torch.equal(u, v) for u, v in zip(pickle.loads(pickle.dumps(sel)), expected))
    assert all(torch.equal(u, v) for u, v in zip(copy.deepcopy(sel), expected))
    # pytorch-metric-learning's own losses take it
    for loss in (pml_losses.ContrastiveLoss(), pml_losses.MultiSimilarityLoss(), pml_losses.CircleLoss()):
        torch.testing.assert_close(loss(x, y, sel), loss(x, y, expected))


def test_other_distance_or_tensors_materialize():
    x, y = _batch(11, 3, torch.float64, seed=4)
    sel = miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.5)(x, y)
    pairs = pml_miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.5)(x, y)
    cos = losses.ContrastiveLoss(distance=distances.CosineSimilarity(), pos_margin=1.0, neg_margin=0.0,
                                 backend="torch")
    expected = pml_losses.ContrastiveLoss(distance=pml_distances.CosineSimilarity(), pos_margin=1.0,
                                          neg_margin=0.0)(x, y, pairs)
    torch.testing.assert_close(cos(x, y, sel), expected, rtol=1e-10, atol=1e-12)
    assert sel._materialized is not None
    y2 = y.clone()  # other labels: the selection's pairs, as listed
    sel = miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.5)(x, y)
    torch.testing.assert_close(losses.ContrastiveLoss(backend="torch")(x, y2, sel),
                               pml_losses.ContrastiveLoss()(x, y2, pairs), rtol=1e-10, atol=1e-12)
    assert sel._materialized is not None


def test_collect_stats_is_pmls_miner():
    x, y = _batch(9, 2, torch.float64, seed=5)
    ours = miners.PairMarginMiner(collect_stats=True)
    theirs = pml_miners.PairMarginMiner(collect_stats=True)
    out = ours(x, y)
    assert not isinstance(out, MinedPairs)
    assert all(torch.equal(u, v) for u, v in zip(out, theirs(x, y)))
    assert (ours.num_pos_pairs, ours.num_neg_pairs) == (theirs.num_pos_pairs, theirs.num_neg_pairs)


# ---------------------------------------------------------------------------------------
# MultiSimilarityMiner's lazy selection, and both selections fused by the pair-LSE losses

from fastcontrast.compat.pml._pair_miners import MinedMultiSimilarity  # noqa: E402

DIST = {"cosine": (pml_distances.CosineSimilarity, distances.CosineSimilarity),
        "lp": (pml_distances.LpDistance, distances.LpDistance)}
# miner name -> {distance: constructor keywords}
MINER_KW = {"MultiSimilarityMiner": {"cosine": dict(epsilon=0.1), "lp": dict(epsilon=0.2)},
            "PairMarginMiner": {"cosine": dict(pos_margin=0.3, neg_margin=0.1),
                                "lp": dict(pos_margin=0.9, neg_margin=1.4)}}
LOSS_KW = {"MultiSimilarityLoss": {"cosine": dict(alpha=2, beta=10, base=0.3),
                                   "lp": dict(alpha=2, beta=10, base=1.0)},
           "CircleLoss": {"cosine": dict(m=0.3, gamma=12)},  # PML's Softplus returns x past 20
           "GeneralizedLiftedStructureLoss": {"cosine": dict(neg_margin=0.4, pos_margin=0.9),
                                              "lp": dict(neg_margin=1.2, pos_margin=0.3)},
           "ContrastiveLoss": {"cosine": dict(pos_margin=0.9, neg_margin=0.2), "lp": dict(pos_margin=0.1, neg_margin=1.1)},
           "MarginLoss": {"cosine": dict(margin=0.1, beta=0.4), "lp": dict(margin=0.2, beta=1.2)},
           "LiftedStructureLoss": {"cosine": dict(neg_margin=0.2, pos_margin=0.8),
                                   "lp": dict(neg_margin=0.8, pos_margin=0.2)}}
FUSED = [(loss, miner, dist) for loss in LOSS_KW for dist in LOSS_KW[loss] for miner in MINER_KW]


@pytest.fixture
def never_listed(monkeypatch):
    """A fused loss must not list the selection's pairs."""
    def refuse(self):
        raise AssertionError("the fused path listed the mined pairs")
    monkeypatch.setattr(MinedPairs, "materialize", refuse)
    monkeypatch.setattr(MinedMultiSimilarity, "materialize", refuse)


def _tol(loss_name, dtype):
    # PML's own CircleLoss gradient is ~2e-10 off ours in float64 even without a miner
    if loss_name == "CircleLoss" and dtype == torch.float64:
        return dict(rtol=1e-8, atol=1e-9)
    return TOL[dtype]


def _run(loss_name, miner_name, dist, x, y, refs=(), reducer=None):
    pml_d, fc_d = DIST[dist]
    lkw, mkw = LOSS_KW[loss_name][dist], MINER_KW[miner_name][dist]
    red = {} if reducer is None else dict(reducer=getattr(pml_reducers, reducer)())
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    own = lambda e: tuple(e if t == "embeddings" else t for t in refs)  # noqa: E731  "embeddings": the batch itself
    theirs_miner = getattr(pml_miners, miner_name)(**mkw, distance=pml_d())
    expected = getattr(pml_losses, loss_name)(**lkw, **red, distance=pml_d())(
        xr, y, theirs_miner(xr, y, *own(xr)), *own(xr))
    ours_miner = getattr(miners, miner_name)(**mkw, distance=fc_d())
    sel = ours_miner(xf, y, *own(xf))
    red = {} if reducer is None else dict(reducer=getattr(pml_reducers, reducer)())
    got = getattr(losses, loss_name)(**lkw, **red, distance=fc_d(), backend="torch")(xf, y, sel, *own(xf))
    assert (ours_miner.num_pos_pairs, ours_miner.num_neg_pairs) == \
        (theirs_miner.num_pos_pairs, theirs_miner.num_neg_pairs)
    return got, expected, xf, xr


def _check_lp_mined_step(theirs, ours, miner_name, x, y):
    """PML's miner + loss against ours (float64, Lp distance): loss value and embedding gradient."""
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    mkw = MINER_KW[miner_name]["lp"]
    expected = theirs(xr, y, getattr(pml_miners, miner_name)(**mkw, distance=pml_distances.LpDistance())(xr, y))
    got = ours(xf, y, getattr(miners, miner_name)(**mkw, distance=distances.LpDistance())(xf, y))
    torch.testing.assert_close(got, expected, **TOL[torch.float64])
    expected.backward()
    got.backward()
    torch.testing.assert_close(xf.grad, xr.grad, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loss_name,miner_name,dist", FUSED)
@pytest.mark.parametrize("shape", [(13, 3), (9, "one_class"), (11, "distinct"), (10, "duplicates"), (1, 1),
                                   (2, 1), (17, 5)])
def test_fused_selection_matches_pml(dtype, loss_name, miner_name, dist, shape, never_listed):
    x, y = _batch(*shape, dtype, seed=7)
    got, expected, xf, xr = _run(loss_name, miner_name, dist, x, y)
    torch.testing.assert_close(got, expected, **_tol(loss_name, dtype))
    expected.backward()
    got.backward()
    torch.testing.assert_close(xf.grad, xr.grad, **_tol(loss_name, dtype))


@pytest.mark.parametrize("loss_name,miner_name,dist", FUSED)
def test_fused_selection_with_reference_sets(loss_name, miner_name, dist, never_listed):
    x, y = _batch(12, 3, torch.float64, seed=8)
    ref, ry = _batch(7, 3, torch.float64, seed=9)
    calls = [(ref, ry), ("embeddings", y), ("embeddings", y.clone()), (x.flip(0).clone(), y.clone()),
             ("embeddings", None)]
    if miner_name != "MultiSimilarityMiner":  # PML's known quirk there (see _pair_miners)
        calls += [(x.flip(0).clone(), None), (x, y)]
    for refs in calls:
        got, expected, xf, xr = _run(loss_name, miner_name, dist, x, y, refs)
        torch.testing.assert_close(got, expected, **_tol(loss_name, torch.float64))
        expected.backward()
        got.backward()
        torch.testing.assert_close(xf.grad, xr.grad, **_tol(loss_name, torch.float64))


@pytest.mark.parametrize("loss_name,reducer", [("MultiSimilarityLoss", "SumReducer"),
                                               ("MultiSimilarityLoss", "AvgNonZeroReducer"),
                                               ("CircleLoss", "MeanReducer"),
                                               ("ContrastiveLoss", "MeanReducer"),
                                               ("ContrastiveLoss", "SumReducer")])
def test_fused_multi_similarity_with_reducers(loss_name, reducer, never_listed):
    x, y = _batch(14, 3, torch.float64, seed=10)
    got, expected, xf, xr = _run(loss_name, "MultiSimilarityMiner", "cosine", x, y, reducer=reducer)
    torch.testing.assert_close(got, expected, **_tol(loss_name, torch.float64))
    expected.backward()
    got.backward()
    torch.testing.assert_close(xf.grad, xr.grad, **_tol(loss_name, torch.float64))


def test_multi_similarity_selection_reads_as_pml_pairs():
    x, y = _batch(15, 4, torch.float32, seed=3)
    expected = pml_miners.MultiSimilarityMiner(epsilon=0.2)(x, y)
    sel = miners.MultiSimilarityMiner(epsilon=0.2)(x, y)
    assert isinstance(sel, MinedMultiSimilarity) and isinstance(sel, tuple) and len(sel) == 4
    assert sel._materialized is None  # the miner itself lists nothing
    for got, want in zip(sel, expected):
        assert torch.equal(got, want)
    assert all(torch.equal(u, v) for u, v in zip(pickle.loads(pickle.dumps(sel)), expected))
    for loss in (pml_losses.ContrastiveLoss(), pml_losses.MultiSimilarityLoss(), pml_losses.TripletMarginLoss()):
        torch.testing.assert_close(loss(x, y, sel), loss(x, y, expected))


@pytest.mark.parametrize("miner_name", list(MINER_KW))
@pytest.mark.parametrize("options", [dict(learn_beta=True, nu=0.1), dict(learn_beta=True, nu=0.1, num_classes=4)])
def test_fused_selection_margin_loss_beta(miner_name, options, never_listed):
    """MarginLoss's mined triplets (every mined positive pair with every mined negative pair of
    its anchor) counted per anchor, with the learned β's gradient (one β, one per class)."""
    x, y = _batch(18, 4, torch.float64, seed=13)
    theirs = pml_losses.MarginLoss(**options)
    ours = losses.MarginLoss(**options, backend="torch")
    _check_lp_mined_step(theirs, ours, miner_name, x, y)
    torch.testing.assert_close(ours.beta.grad, theirs.beta.grad, **TOL[torch.float32])  # β is a float32 Parameter


@pytest.mark.parametrize("loss_name", ["LiftedStructureLoss", "MultiSimilarityLoss"])
def test_other_distance_is_materialized(loss_name):
    """A loss on another distance than the miner's: the selection is listed, and the loss is
    PML's on those pairs."""
    x, y = _batch(12, 3, torch.float64, seed=11)
    dist, pml_dist = distances.LpDistance(), pml_distances.LpDistance()
    sel = miners.MultiSimilarityMiner()(x, y)
    pairs = pml_miners.MultiSimilarityMiner()(x, y)
    got = getattr(losses, loss_name)(distance=dist, backend="torch")(x, y, sel)
    torch.testing.assert_close(got, getattr(pml_losses, loss_name)(distance=pml_dist)(x, y, pairs),
                               **TOL[torch.float64])
    assert sel._materialized is not None


def test_pair_margin_miner_counts_lazily(never_listed):
    """The miner makes no pass of its own: a fused loss leaves its counts on the selection,
    which num_pos_pairs / num_neg_pairs then read (PML's numbers)."""
    x, y = _batch(16, 3, torch.float64, seed=12)
    theirs = pml_miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.4)
    theirs(x, y)
    ours = miners.PairMarginMiner(pos_margin=0.9, neg_margin=1.4)
    sel = ours(x, y)
    assert sel._counts is None
    losses.ContrastiveLoss(backend="torch")(x, y, sel)
    assert sel._counts is not None
    assert (ours.num_pos_pairs, ours.num_neg_pairs) == (theirs.num_pos_pairs, theirs.num_neg_pairs)
    ours.num_pos_pairs = 5  # still an attribute one can set
    assert ours.num_pos_pairs == 5 and ours.num_neg_pairs == theirs.num_neg_pairs


@pytest.mark.parametrize("miner_name", list(MINER_KW))
def test_fused_step_enumerates_no_pairs(miner_name, monkeypatch, never_listed):
    """Miner and fused loss, forward and backward, with every index-listing op watched: none
    lists more than 2·B entries at any point of the step (the distance tiles list their
    near-zero pairs, the self pairs among them; a mined pair list would be O(B·N))."""
    x, y = _batch(40, 5, torch.float32, seed=14)
    x.requires_grad_()
    steps = []
    for loss_name, dist in [(name, "lp") for name in LOSS_KW if "lp" in LOSS_KW[name]] + [("CircleLoss", "cosine")]:
        miner = getattr(miners, miner_name)(**MINER_KW[miner_name][dist], distance=DIST[dist][1]())
        loss = getattr(losses, loss_name)(**LOSS_KW[loss_name][dist], distance=DIST[dist][1](), backend="torch")
        steps.append((miner, loss))

    limit = 2 * x.shape[0]

    def watched(real):
        def listing(*args, **kwargs):
            out = real(*args, **kwargs)
            n = (out[0] if isinstance(out, tuple) else out).shape[0]
            assert n <= limit, f"an index list of {n} entries was built"
            return out
        return listing

    real_where = torch.where
    monkeypatch.setattr(torch, "nonzero", watched(torch.nonzero))
    monkeypatch.setattr(torch, "argwhere", watched(torch.argwhere))
    monkeypatch.setattr(torch.Tensor, "nonzero", watched(torch.Tensor.nonzero))
    where_one = watched(real_where)
    monkeypatch.setattr(torch, "where", lambda *a, **k: where_one(*a, **k) if len(a) == 1 else real_where(*a, **k))
    for miner, loss in steps:
        out = loss(x, y, miner(x, y))
        out.backward()
        assert torch.isfinite(out)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("miner_name", list(MINER_KW))
@pytest.mark.parametrize("window", [dict(low=0.1), dict(high=0.5), dict(low=0.05, high=0.6)])
def test_fused_selection_with_threshold_reducer(miner_name, window, never_listed):
    """ContrastiveLoss's fused ThresholdReducer (term bounds) on top of the fused selection
    (row bounds): the reducer sees exactly the mined pairs' terms, as in PML."""
    x, y = _batch(20, 3, torch.float64, seed=15)
    theirs = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.1,
                                        reducer=pml_reducers.ThresholdReducer(**window))
    ours = losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.1, reducer=pml_reducers.ThresholdReducer(**window),
                                  backend="torch")
    _check_lp_mined_step(theirs, ours, miner_name, x, y)
