"""Row bounds (a fused miner selection) on the pair-LSE losses: the terms with row_bounds
equal the terms of the explicit pairs the bounds select (values and gradients, every
distance, reference sets, many chunks, rows whose bounds select nothing), and the
Multi-Similarity bounds pass selects exactly multi_similarity_miner's pairs."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast import pair_miners
from fastcontrast._torch import softmax as torch_softmax
from fastcontrast.pair_miners import multi_similarity_bounds
from tests.conftest import assert_close

DISTANCES = {"cosine": dict(distance="cosine"), "dot": dict(distance="dot"),
             "euclidean": dict(distance="euclidean", normalize=True), "raw_sq": dict(distance="squared_euclidean")}
LOSSES = {"ms": (fc.MultiSimilarityLoss, dict(alpha=3.0, beta=7.0, base=0.3)),
          "circle": (fc.CircleLoss, dict(m=0.3, gamma=12.0)),
          "glifted": (fc.GeneralizedLiftedStructureLoss, dict(neg_margin=0.7, pos_margin=0.1)),
          "lifted": (fc.LiftedStructureLoss, dict(neg_margin=0.8, pos_margin=0.2))}
CASES = [(name, dist) for name in LOSSES for dist in DISTANCES if name != "circle" or dist in ("cosine", "dot")]


def _logits(x, r, kw):
    metric = fc.metrics.resolve_metric(kw["distance"], kw.get("normalize"))
    q, rr = fc.metrics.prepare(x, metric), fc.metrics.prepare(r, metric)
    d = fc.metrics.pairwise(q, rr, metric.kind)
    return d if metric.kind == "dot" else -d


def _selected_pairs(l, y, ry, self_offset, bounds, slack):
    """The explicit pairs (a1, p, a2, n) the row bounds select."""
    same = y[:, None] == ry[None, :]
    valid = torch.ones_like(same)
    if self_offset >= 0:
        valid.diagonal(self_offset).fill_(False)
    pos = same & valid & (l - slack < bounds[:, 0:1])
    neg = ~same & valid & (l + slack > bounds[:, 1:2])
    return pos.nonzero(as_tuple=True) + neg.nonzero(as_tuple=True)


def _random_bounds(l, gen):
    """Per-row bounds between the row's extremes; one row selects nothing, one everything."""
    lo, hi = l.min(1).values, l.max(1).values
    t = torch.rand(l.shape[0], 2, generator=gen, dtype=l.dtype)
    bounds = torch.stack([lo + t[:, 0] * (hi - lo), lo + t[:, 1] * (hi - lo)], 1)
    bounds[0] = torch.tensor([-float("inf"), float("inf")])
    bounds[-1] = torch.tensor([float("inf"), -float("inf")])
    return bounds


@pytest.mark.parametrize("name,dist", CASES)
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("slack", [0.0, 0.15])
def test_row_bounds_equal_the_selected_pairs(name, dist, with_ref, slack, gen, monkeypatch):
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 40)  # many chunks, and backward recomputes
    cls, hyper = LOSSES[name]
    kw = DISTANCES[dist]
    x = torch.randn(15, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (15,), generator=gen)
    ref = torch.randn(8, 5, generator=gen, dtype=torch.float64) if with_ref else None
    ry = torch.randint(0, 3, (8,), generator=gen) if with_ref else None
    loss = cls(**hyper, **kw, reduction="none", backend="torch")
    l = _logits(x, x if ref is None else ref, kw)
    bounds = _random_bounds(l, gen)
    self_offset = -1 if with_ref else 0
    pairs = _selected_pairs(l, y, y if ref is None else ry, self_offset, bounds, slack)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ra = rb = None
    if ref is not None:
        ra, rb = ref.clone().requires_grad_(), ref.clone().requires_grad_()
    got = loss.terms(xa, y, ra, ry, self_offset, row_bounds=bounds, bound_slack=slack).values
    want = loss.tuple_terms(xb, pairs, rb).values
    assert_close(got, want)
    w = torch.rand(15, generator=gen, dtype=torch.float64)
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert_close(xa.grad, xb.grad)
    if ref is not None:
        assert_close(ra.grad, rb.grad)


def test_row_bounds_gradcheck(gen):
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    for name, dist in (("ms", "cosine"), ("ms", "raw_sq"), ("glifted", "euclidean"), ("lifted", "dot")):  # Circle detaches α
        cls, hyper = LOSSES[name]
        loss = cls(**hyper, **DISTANCES[dist], reduction="sum", backend="torch")
        bounds = _random_bounds(_logits(x.detach(), x.detach(), DISTANCES[dist]), gen)
        assert torch.autograd.gradcheck(lambda e: loss.reduce(loss.terms(e, y, row_bounds=bounds,
                                                                         bound_slack=0.05)), (x,))


def test_row_bounds_checked(gen):
    x, y = torch.randn(6, 3, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="row_bounds"):
        fc.MultiSimilarityLoss().terms(x, y, row_bounds=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="row_bounds"):
        fc.LiftedStructureLoss().terms(x, y, row_bounds=torch.zeros(6, 3))


@pytest.mark.parametrize("dist", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("labels", ["random", "one_class", "distinct", "duplicates"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_multi_similarity_bounds_select_the_miners_pairs(dist, labels, dtype, gen, monkeypatch):
    monkeypatch.setattr(pair_miners, "CHUNK_ELEMS", 3 * 13)
    kw = DISTANCES[dist]
    x = torch.randn(13, 4, generator=gen, dtype=dtype)
    y = {"random": torch.randint(0, 3, (13,), generator=gen), "one_class": torch.zeros(13, dtype=torch.int64),
         "distinct": torch.arange(13), "duplicates": torch.arange(13) % 4}[labels]
    if labels == "duplicates":
        x[4:8] = x[0:4]
    for ref, ry, offset in ((None, None, 0), (x[:9].clone(), y[:9].clone(), -1)):
        bounds, counts = multi_similarity_bounds(x, y, epsilon=0.1, ref_emb=ref, ref_labels=ry, **kw)
        a1, p, a2, n = pair_miners.multi_similarity_miner(x, y, epsilon=0.1, ref_emb=ref, ref_labels=ry, **kw)
        l = _logits(x, x if ref is None else ref, kw).to(bounds.dtype)
        sel = _selected_pairs(l, y, y if ref is None else ry, offset, bounds, 0.1)
        key = lambda i, j: sorted(zip(i.tolist(), j.tolist()))  # noqa: E731
        assert key(*sel[:2]) == key(a1, p) and key(*sel[2:]) == key(a2, n)
        assert torch.equal(counts[:, 0], torch.bincount(a1, minlength=13))
        assert torch.equal(counts[:, 1], torch.bincount(a2, minlength=13))
