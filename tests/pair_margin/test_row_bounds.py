"""Row bounds (a fused miner selection) on ContrastiveLoss: the terms, counts and non-zero
counts with row_bounds equal those of the explicit pairs the bounds select, with their
gradients (distances and similarities, power 1 and 2, reference sets, many chunks, term
bounds on top, rows that select nothing)."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._torch import pair_margin as torch_pair_margin
from tests.conftest import assert_close

DISTANCES = {"euclidean": dict(distance="euclidean", normalize=True, pos_margin=0.2, neg_margin=1.1),
             "raw_sq": dict(distance="squared_euclidean", normalize=False, pos_margin=1.0, neg_margin=6.0),
             "dot": dict(distance="dot", normalize=True, pos_margin=0.7, neg_margin=0.1)}


def _d(x, r, kw):
    metric = fc.metrics.resolve_metric(kw["distance"], kw["normalize"])
    d = fc.metrics.pairwise(fc.metrics.prepare(x, metric), fc.metrics.prepare(r, metric), metric.kind)
    return -d if metric.is_similarity else d


@pytest.mark.parametrize("dist", list(DISTANCES))
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("term_bounds", [None, ((0.05, 0.6), (0.0, 0.5))])
def test_row_bounds_equal_the_selected_pairs(dist, power, with_ref, term_bounds, gen, monkeypatch):
    monkeypatch.setattr(torch_pair_margin, "CHUNK_ELEMS", 30)
    kw = DISTANCES[dist]
    x = torch.randn(14, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (14,), generator=gen)
    ref = torch.randn(9, 4, generator=gen, dtype=torch.float64) if with_ref else None
    ry = torch.randint(0, 3, (9,), generator=gen) if with_ref else None
    loss = fc.ContrastiveLoss(**kw, power=power, reduction="none", backend="torch")
    d = _d(x, x if ref is None else ref, kw)  # d, or −s for a similarity
    lo, hi = d.min(1).values, d.max(1).values
    t = torch.rand(14, 2, generator=gen, dtype=torch.float64)
    bounds = torch.stack([lo + t[:, 0] * (hi - lo), lo + t[:, 1] * (hi - lo)], 1)
    bounds[0] = torch.tensor([float("inf"), -float("inf")])  # selects nothing
    slack, offset = 0.1, (-1 if with_ref else 0)
    same = y[:, None] == (y if ref is None else ry)[None, :]
    valid = torch.ones_like(same)
    if offset == 0:
        valid.fill_diagonal_(False)
    pos = same & valid & (d + slack > bounds[:, 0:1])
    neg = ~same & valid & (d - slack < bounds[:, 1:2])
    pairs = pos.nonzero(as_tuple=True) + neg.nonzero(as_tuple=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ra, rb = (None, None) if ref is None else (ref.clone().requires_grad_(), ref.clone().requires_grad_())
    got = loss.terms(xa, y, ra, ry, offset, term_bounds=term_bounds, row_bounds=bounds, bound_slack=slack)
    want = loss.terms(xb, y, rb, ry, offset, indices_tuple=pairs, term_bounds=term_bounds)
    assert torch.equal(got.counts, want.counts) and torch.equal(got.nonzero, want.nonzero)
    assert got.counts[0].sum() == 0
    assert_close(got.values, want.values)
    w = torch.rand(14, 2, generator=gen, dtype=torch.float64)
    (got.values * w).sum().backward()
    (want.values * w).sum().backward()
    assert_close(xa.grad, xb.grad)
    if ref is not None:
        assert_close(ra.grad, rb.grad)


def test_row_bounds_checked(gen):
    x, y = torch.randn(6, 3, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2])
    loss = fc.ContrastiveLoss()
    with pytest.raises(ValueError, match="row_bounds"):
        loss.terms(x, y, row_bounds=torch.zeros(4, 2))
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="indices_tuple"):
        loss.terms(x, y, indices_tuple=pairs, row_bounds=torch.zeros(6, 2))
