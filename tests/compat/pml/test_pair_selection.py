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
