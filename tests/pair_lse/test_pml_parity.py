"""Multi-Similarity, Circle and (generalized) Lifted Structure against pytorch-metric-learning
itself: values and gradients, float64 and float32, every distance, reference sets, explicit
pairs and the edge cases (one class, all distinct, duplicates, lonely anchors)."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._torch import softmax as torch_softmax
from tests.conftest import assert_close

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")

# (fastcontrast distance keywords, PML distance object)
DISTANCES = {
    "cosine": (dict(distance="cosine"), lambda: pml_distances.CosineSimilarity()),
    "dot": (dict(distance="dot"), lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False)),
    "euclidean": (dict(distance="euclidean", normalize=True), lambda: pml_distances.LpDistance()),
    "raw_euclidean": (dict(distance="euclidean"), lambda: pml_distances.LpDistance(normalize_embeddings=False)),
}

# name -> (fastcontrast Module, PML class, hyper-parameters, distances to test)
LOSSES = {
    "ms": (fc.MultiSimilarityLoss, "MultiSimilarityLoss", dict(alpha=3.0, beta=7.0, base=0.3),
           ("cosine", "dot", "euclidean", "raw_euclidean")),
    "circle": (fc.CircleLoss, "CircleLoss", dict(m=0.3, gamma=12.0), ("cosine",)),
    "glifted": (fc.GeneralizedLiftedStructureLoss, "GeneralizedLiftedStructureLoss",
                dict(neg_margin=0.7, pos_margin=0.1), ("cosine", "dot", "euclidean", "raw_euclidean")),
    "lifted": (fc.LiftedStructureLoss, "LiftedStructureLoss", dict(neg_margin=0.8, pos_margin=0.2),
               ("cosine", "dot", "euclidean", "raw_euclidean")),
}
CASES = [(name, dist) for name, (_, _, _, dists) in LOSSES.items() for dist in dists]


def _pair(name, dist, **override):
    cls, pml_name, hyper, _ = LOSSES[name]
    hyper = {**hyper, **override}
    fkw, pml_dist = DISTANCES[dist]
    return cls(**hyper, **fkw), getattr(pml_losses, pml_name)(**hyper, distance=pml_dist())


def _compare(ours, theirs, x, y, dtype, scale=1.0, **call):
    x = (x * scale).to(dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(x1, y, **call), theirs(x2, y, **call)
    a.backward()
    b.backward()
    assert_close(a, b, dtype)
    assert_close(x1.grad, x2.grad, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,dist", CASES)
def test_matches_pml(name, dist, dtype, gen):
    x = torch.randn(19, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (19,), generator=gen)
    ours, theirs = _pair(name, dist)
    _compare(ours, theirs, x, y, dtype, scale=0.4 if dist == "dot" else 1.0)


@pytest.mark.parametrize("name,dist", CASES)
def test_reference_set_and_pairs(name, dist, gen):
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    ref = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 3, (7,), generator=gen)
    ours, theirs = _pair(name, dist)
    scale = 0.4 if dist == "dot" else 1.0
    _compare(ours, theirs, x, y, torch.float64, scale, ref_emb=ref * scale, ref_labels=ry)
    # explicit pairs: a random subset of every pair, and triplets
    a1, p, a2, n = lmu.get_all_pairs_indices(y)
    keep_p = torch.rand(a1.shape, generator=gen) < 0.6
    keep_n = torch.rand(a2.shape, generator=gen) < 0.6
    pairs = (a1[keep_p], p[keep_p], a2[keep_n], n[keep_n])
    _compare(ours, theirs, x, y, torch.float64, scale, indices_tuple=pairs)
    triplets = lmu.get_all_triplets_indices(y)
    _compare(ours, theirs, x, y, torch.float64, scale, indices_tuple=triplets)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("labels", ["one_class", "all_distinct", "lonely", "duplicates", "pair"])
def test_edge_cases(name, labels, gen):
    b = 9
    x = torch.randn(b, 4, generator=gen, dtype=torch.float64)
    if labels == "one_class":
        y = torch.zeros(b, dtype=torch.long)
    elif labels == "all_distinct":
        y = torch.arange(b)
    elif labels == "lonely":  # anchors 6..8 have no positive
        y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3, 4])
    elif labels == "duplicates":
        x[3] = x[0]
        x[5] = x[1]
        y = torch.tensor([0, 0, 1, 0, 1, 0, 2, 2, 1])
    else:  # one positive pair and one negative pair
        x, y = x[:3], torch.tensor([0, 0, 1])
        y = torch.tensor([0, 0, 1])
    ours, theirs = _pair(name, "cosine")
    _compare(ours, theirs, x, y, torch.float64)


@pytest.mark.parametrize("name", list(LOSSES))
def test_chunked_equals_one_chunk(name, gen, monkeypatch):
    x = torch.randn(23, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (23,), generator=gen)
    ours, _ = _pair(name, "euclidean" if name != "circle" else "cosine")
    x1 = x.clone().requires_grad_()
    whole = ours(x1, y)
    whole.backward()
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 23 * 4)  # chunks of 4 rows, tile not kept
    x2 = x.clone().requires_grad_()
    chunked = ours(x2, y)
    chunked.backward()
    assert_close(chunked, whole)
    assert_close(x2.grad, x1.grad)


# Circle's gradient treats α as a constant (detached), which finite differences cannot see;
# its gradient is checked against PML's autograd above.
@pytest.mark.parametrize("name", ["ms", "glifted", "lifted"])
@pytest.mark.parametrize("dist", ["cosine", "dot", "euclidean"])
def test_gradcheck(name, dist, gen):
    cls, _, hyper, _ = LOSSES[name]
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    if dist == "dot":
        x = x * 0.5
    ref = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y, ry = torch.tensor([0, 0, 1, 1, 2, 0, 1]), torch.tensor([0, 1, 1, 2, 2])
    loss = cls(**hyper, distance=dist)
    x.requires_grad_()
    ref.requires_grad_()
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))
    assert torch.autograd.gradcheck(lambda e, r: loss(e, y, ref_emb=r, ref_labels=ry), (x, ref))


@pytest.mark.parametrize("name", list(LOSSES))
def test_reductions(name, gen):
    cls, _, hyper, _ = LOSSES[name]
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    per = cls(**hyper, reduction="none")(x, y)
    assert per.shape == (10,)
    assert_close(cls(**hyper, reduction="sum")(x, y), per.sum())
    mean = cls(**hyper)(x, y)
    if name == "circle":
        expected = per.sum() / (per > 0).sum()
    elif name == "lifted":
        expected = per.sum() / (lmu.get_all_pairs_indices(y)[0].numel())
    else:
        expected = per.mean()
    assert_close(mean, expected)


def test_half_precision_is_finite(gen):
    x = torch.randn(12, 8, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    for name, (cls, _, hyper, _) in LOSSES.items():
        ref = cls(**hyper)(x, y)
        for dtype in (torch.float16, torch.bfloat16):
            out = cls(**hyper)(x.to(dtype), y)
            assert torch.isfinite(out)
            assert_close(out, ref, dtype)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        fc.MultiSimilarityLoss(alpha=0)
    with pytest.raises(ValueError, match="gamma"):
        fc.CircleLoss(gamma=-1)
    with pytest.raises(ValueError, match="similarity"):
        fc.CircleLoss(distance="euclidean")
    with pytest.raises(TypeError, match="neg_margin"):
        fc.LiftedStructureLoss(neg_margin="1")
    with pytest.raises(ValueError, match="labels"):
        fc.multi_similarity_loss(torch.randn(4, 3))
    with pytest.raises(TypeError):
        fc.MultiSimilarityLoss(0.5)  # keyword-only


def test_repr_shows_settings():
    text = repr(fc.MultiSimilarityLoss(alpha=3, beta=40, base=0.4, distance="dot"))
    for part in ("alpha=3.0", "beta=40.0", "base=0.4", "distance='dot'", "reduction='mean'"):
        assert part in text
    assert "gamma=80.0" in repr(fc.CircleLoss())
    assert "neg_margin=1.0" in repr(fc.LiftedStructureLoss())
