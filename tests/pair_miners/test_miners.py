"""The pair miners against pytorch-metric-learning's: the same pairs in the same order, for
every distance and strategy, with reference sets, and chunked."""
import itertools

import pytest
import torch

import fastcontrast as fc
from fastcontrast import pair_miners

pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

DISTANCES = {
    "euclidean": (dict(distance="euclidean", normalize=True), lambda: pml_distances.LpDistance()),
    "cosine": (dict(distance="cosine"), lambda: pml_distances.CosineSimilarity()),
}


def _same(a, b):
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert torch.equal(x.long(), y.long())


def _batch(gen, b=17, classes=4):
    return torch.randn(b, 5, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


@pytest.mark.parametrize("dist", list(DISTANCES))
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_multi_similarity(dist, eps, gen):
    fkw, d = DISTANCES[dist]
    for _ in range(3):
        x, y = _batch(gen)
        _same(fc.multi_similarity_miner(x, y, epsilon=eps, **fkw), pml_miners.MultiSimilarityMiner(epsilon=eps, distance=d())(x, y))


@pytest.mark.parametrize("dist", list(DISTANCES))
def test_pair_margin(dist, gen):
    fkw, d = DISTANCES[dist]
    margins = dict(pos_margin=0.5, neg_margin=1.1) if dist == "euclidean" else dict(pos_margin=0.3, neg_margin=0.0)
    x, y = _batch(gen)
    _same(fc.pair_margin_miner(x, y, **margins, **fkw), pml_miners.PairMarginMiner(**margins, distance=d())(x, y))


STRATEGY_PAIRS = [(p, n) for p, n in itertools.product(pair_miners.STRATEGIES, repeat=2)
                  if not (p == n == "semihard") and not ("all" in (p, n) and "semihard" in (p, n))]


@pytest.mark.parametrize("dist", list(DISTANCES))
@pytest.mark.parametrize("pos,neg", STRATEGY_PAIRS)
def test_batch_easy_hard(pos, neg, dist, gen):
    fkw, d = DISTANCES[dist]
    x, y = _batch(gen)
    rng = (0.3, 1.3) if dist == "euclidean" else (-0.5, 0.8)
    for pr, nr in ((None, None), (rng, None), (None, rng)):
        ours = fc.batch_easy_hard_miner(x, y, pos_strategy=pos, neg_strategy=neg, allowed_pos_range=pr,
                                        allowed_neg_range=nr, **fkw)
        theirs = pml_miners.BatchEasyHardMiner(pos_strategy=pos, neg_strategy=neg, allowed_pos_range=pr,
                                               allowed_neg_range=nr, distance=d())(x, y)
        _same(ours, theirs)


def test_reference_set_and_chunks(gen, monkeypatch):
    x, y = _batch(gen, 13, 3)
    ref, ry = _batch(gen, 9, 3)
    monkeypatch.setattr(pair_miners, "CHUNK_ELEMS", 9 * 2)
    _same(fc.multi_similarity_miner(x, y, ref_emb=ref, ref_labels=ry),
          pml_miners.MultiSimilarityMiner()(x, y, ref, ry))
    _same(fc.pair_margin_miner(x, y, ref_emb=ref, ref_labels=ry, normalize=True),
          pml_miners.PairMarginMiner()(x, y, ref, ry))
    _same(fc.batch_easy_hard_miner(x, y, ref_emb=ref, ref_labels=ry, normalize=True),
          pml_miners.BatchEasyHardMiner()(x, y, ref, ry))


@pytest.mark.parametrize("labels", [[0] * 6, list(range(6)), [0, 0, 1, 2, 3, 4]])
def test_edge_cases(labels, gen):
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    x[3] = x[2]
    y = torch.tensor(labels)
    _same(fc.multi_similarity_miner(x, y), pml_miners.MultiSimilarityMiner()(x, y))
    _same(fc.pair_margin_miner(x, y, normalize=True), pml_miners.PairMarginMiner()(x, y))
    _same(fc.batch_easy_hard_miner(x, y, normalize=True), pml_miners.BatchEasyHardMiner()(x, y))


def test_modules_and_mined_losses(gen):
    x, y = _batch(gen)
    miner = fc.MultiSimilarityMiner(epsilon=0.2)
    assert "epsilon=0.2" in repr(miner) and "distance='cosine'" in repr(miner)
    pairs = miner(x, y)
    _same(pairs, fc.multi_similarity_miner(x, y, epsilon=0.2))
    loss = fc.MultiSimilarityLoss()(x, y, pairs)
    assert torch.isfinite(loss)
    assert "pos_strategy='easy'" in repr(fc.BatchEasyHardMiner())
    with pytest.raises(ValueError, match="semihard"):
        fc.BatchEasyHardMiner(pos_strategy="semihard", neg_strategy="semihard")
    with pytest.raises(ValueError, match="pos_strategy"):
        fc.BatchEasyHardMiner(pos_strategy="medium")
    with pytest.raises(ValueError, match="allowed_pos_range"):
        fc.BatchEasyHardMiner(allowed_pos_range=(1,))
    with pytest.raises(TypeError):
        fc.PairMarginMiner(0.2)
