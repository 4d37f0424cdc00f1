"""MarginLoss against pytorch-metric-learning's MarginLoss: values, embedding gradients and
β's gradient (one β, one per class), float64 and float32, distances, explicit tuples, edge
cases; gradcheck of embeddings and β together."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._torch import pair_margin as torch_pair_margin
from tests.conftest import assert_close

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")

DISTANCES = {
    "euclidean": (dict(distance="euclidean", normalize=True), lambda: pml_distances.LpDistance()),
    "cosine": (dict(distance="cosine"), lambda: pml_distances.CosineSimilarity()),
    "dot": (dict(distance="dot"), lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False)),
}
SETTINGS = [
    dict(),
    dict(learn_beta=True, nu=0.3),
    dict(learn_beta=True, nu=0.2, num_classes=4, beta=0.9, margin=0.3),
    dict(num_classes=4, beta=0.5),
]


def _pair(dist, dtype, **kw):
    fkw, pml_dist = DISTANCES[dist]
    if dist != "euclidean":
        kw.setdefault("beta", 0.3)
        kw.setdefault("margin", 0.1)
    ours = fc.MarginLoss(**kw, **fkw).to(dtype)
    theirs = pml_losses.MarginLoss(**kw, distance=pml_dist())
    theirs.beta.data = theirs.beta.data.to(dtype)
    return ours, theirs


def _compare(ours, theirs, x, y, dtype, **call):
    x1, x2 = x.to(dtype).clone().requires_grad_(), x.to(dtype).clone().requires_grad_()
    a, b = ours(x1, y, **call), theirs(x2, y, **call)
    a.backward()
    b.backward()
    assert_close(a, b, dtype)
    assert_close(x1.grad, x2.grad, dtype)
    if ours.learn_beta:
        assert ours.beta.grad is not None
        # without any triplet PML's loss does not reach β at all (grad None): ours is exactly 0
        expected = torch.zeros_like(ours.beta) if theirs.beta.grad is None else theirs.beta.grad
        assert_close(ours.beta.grad, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dist", list(DISTANCES))
@pytest.mark.parametrize("k", range(len(SETTINGS)))
def test_matches_pml(k, dist, dtype, gen):
    x = torch.randn(17, 5, generator=gen, dtype=torch.float64) * (0.4 if dist == "dot" else 1.0)
    y = torch.randint(0, 4, (17,), generator=gen)
    ours, theirs = _pair(dist, dtype, **SETTINGS[k])
    _compare(ours, theirs, x, y, dtype)


@pytest.mark.parametrize("k", range(len(SETTINGS)))
def test_reference_set_and_tuples(k, gen):
    x = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    ref = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 3, (8,), generator=gen)
    ours, theirs = _pair("euclidean", torch.float64, **SETTINGS[k])
    _compare(ours, theirs, x, y, torch.float64, ref_emb=ref, ref_labels=ry)
    a, p, n = lmu.get_all_triplets_indices(y)
    keep = torch.rand(a.shape, generator=gen) < 0.5
    ours.zero_grad()
    theirs.zero_grad()
    _compare(ours, theirs, x, y, torch.float64, indices_tuple=(a[keep], p[keep], n[keep]))
    a1, p1, a2, n2 = lmu.get_all_pairs_indices(y)
    ours.zero_grad()
    theirs.zero_grad()
    _compare(ours, theirs, x, y, torch.float64, indices_tuple=(a1[::2], p1[::2], a2[::3], n2[::3]))


@pytest.mark.parametrize("labels", ["one_class", "all_distinct", "lonely", "duplicates"])
def test_edge_cases(labels, gen):
    b = 9
    x = torch.randn(b, 4, generator=gen, dtype=torch.float64)
    y = {"one_class": torch.zeros(b, dtype=torch.long), "all_distinct": torch.arange(b),
         "lonely": torch.tensor([0, 0, 0, 1, 1, 1, 2, 3, 3]),
         "duplicates": torch.tensor([0, 0, 1, 0, 1, 0, 2, 2, 1])}[labels]
    if labels == "duplicates":
        x[3] = x[0]
    ours, theirs = _pair("euclidean", torch.float64, learn_beta=True, nu=0.1)
    _compare(ours, theirs, x, y, torch.float64)


def test_chunks(gen, monkeypatch):
    x = torch.randn(21, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (21,), generator=gen)
    ours, theirs = _pair("euclidean", torch.float64, learn_beta=True, nu=0.1, num_classes=4)
    monkeypatch.setattr(torch_pair_margin, "CHUNK_ELEMS", 21 * 3)
    _compare(ours, theirs, x, y, torch.float64)


@pytest.mark.parametrize("dist", ["euclidean", "cosine", "dot"])
def test_gradcheck_with_beta(dist, gen):
    x = (torch.randn(8, 3, generator=gen, dtype=torch.float64) * 0.6).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    beta = torch.tensor([0.4, 0.7, 0.2], dtype=torch.float64, requires_grad=True)
    fn = lambda e, bt: fc.margin_loss(e, y, beta=bt, nu=0.1, margin=0.3, distance=dist)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, beta))


def test_reductions_and_functional(gen):
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    per = fc.MarginLoss(reduction="none", normalize=True)(x, y)
    assert per.shape == (10,)
    assert_close(fc.MarginLoss(reduction="sum", normalize=True)(x, y), per.sum())
    module = fc.MarginLoss(normalize=True)
    assert_close(fc.margin_loss(x, y, normalize=True, beta=module.beta), module(x, y))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        fc.MarginLoss(num_classes=0)
    with pytest.raises(TypeError, match="margin"):
        fc.MarginLoss(margin="a")
    with pytest.raises(ValueError, match="labels"):
        fc.MarginLoss(num_classes=2)(torch.randn(4, 3), torch.tensor([0, 1, 2, 2]))
    with pytest.raises(TypeError):
        fc.MarginLoss(0.2)  # keyword-only
    text = repr(fc.MarginLoss(learn_beta=True, num_classes=2))
    for part in ("margin=0.2", "nu=0.0", "beta=[1.2, 1.2]", "learn_beta=True", "num_classes=2", "reduction='mean'"):
        assert part in text
