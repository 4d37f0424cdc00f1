"""The pair-margin Function on the PyTorch path against the dense float64 reference."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._torch import pair_margin as torch_path
from fastcontrast.reference import pair_margin as ref
from tests.conftest import assert_close

DISTANCES = ("euclidean", "squared_euclidean", "dot", "cosine")
# margins that leave a mix of active and inactive hinges for random N(0, 1) data in D = 11
MARGINS = {"euclidean": (4.0, 5.0), "squared_euclidean": (16.0, 25.0), "dot": (1.0, -1.0),
           "cosine": (0.3, -0.1)}


def _data(gen, b=13, n=None, d=11, classes=3, dtype=torch.float64):
    x = torch.randn(b, d, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (b,), generator=gen)
    if n is None:
        return x, y, None, None
    return x, y, torch.randn(n, d, generator=gen, dtype=dtype), torch.randint(0, classes, (n,), generator=gen)


def _terms(x, y, r=None, rl=None, distance="euclidean", power=1, normalize=None, **kw):
    pm, nm = MARGINS[distance]
    loss = fc.ContrastiveLoss(pos_margin=pm, neg_margin=nm, power=power, distance=distance, backend="torch", normalize=normalize, **kw)
    return loss.terms(x, y, r, rl, self_offset=0 if r is None else -1)


def _check_against_reference(x, y, r, rl, distance, power):
    pm, nm = MARGINS[distance]
    xs = x.detach().clone().requires_grad_()
    rs = None if r is None else r.detach().clone().requires_grad_()
    t = _terms(xs, y, rs, rl, distance, power)
    v, c, nz = ref.per_anchor(x, y, pm, nm, power, distance, None, r, rl)
    assert torch.equal(t.counts, c) and torch.equal(t.nonzero, nz)
    assert_close(t.values, v)
    w = torch.randn(x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad((t.values * w).sum(), [xs] + ([] if r is None else [rs]))
    xr = x.detach().clone().requires_grad_()
    rr = None if r is None else r.detach().clone().requires_grad_()
    v2, _, _ = ref.per_anchor(xr, y, pm, nm, power, distance, None, rr, rl)
    want = torch.autograd.grad((v2 * w).sum(), [xr] + ([] if r is None else [rr]))
    for a, b in zip(grads, want):
        assert torch.isfinite(a).all()
        assert_close(a, b)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("power", [1, 2])
def test_matches_reference_batch_and_ref_set(distance, power, gen):
    x, y, r, rl = _data(gen, b=13, n=9)
    _check_against_reference(x, y, None, None, distance, power)
    _check_against_reference(x, y, r, rl, distance, power)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean"])
def test_duplicates_zero_distance(distance, gen):
    x, y, _, _ = _data(gen, b=10)
    x[4] = x[1]
    x[7] = x[1]
    y[4] = y[1]        # a positive pair at distance 0
    y[7] = y[1] + 1    # a negative pair at distance 0
    _check_against_reference(x, y, None, None, distance, 1)
    _check_against_reference(x, y, None, None, distance, 2)
    t = _terms(x, y, distance=distance)
    # the zero-distance positive pair gives no term (pos_margin 4 > 0 anyway); with pos_margin 0
    loss = fc.ContrastiveLoss(pos_margin=0.0, neg_margin=5.0, distance=distance, backend="torch", normalize=None)
    xs = x.clone().requires_grad_()
    val = loss(xs, y)
    val.backward()
    assert torch.isfinite(xs.grad).all() and torch.isfinite(val)
    assert t.values.isfinite().all()


@pytest.mark.parametrize("labels", ["single_class", "all_distinct", "singletons_and_pairs"])
def test_label_edge_cases(labels, gen):
    x, _, _, _ = _data(gen, b=9)
    y = {"single_class": torch.zeros(9, dtype=torch.int64),
         "all_distinct": torch.arange(9),
         "singletons_and_pairs": torch.tensor([0, 0, 1, 2, 2, 3, 4, 5, 5])}[labels]
    for distance in ("euclidean", "cosine"):
        _check_against_reference(x, y, None, None, distance, 1)
    t = _terms(x, y)
    if labels == "single_class":
        assert int(t.counts[:, 1].sum()) == 0
    if labels == "all_distinct":
        assert int(t.counts[:, 0].sum()) == 0
    loss = fc.contrastive_loss(x.clone().requires_grad_(), y, pos_margin=4.0, neg_margin=5.0, backend="torch", normalize=None)
    assert torch.isfinite(loss)


def test_single_row_has_no_pairs(gen):
    x = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    loss = fc.contrastive_loss(x, torch.tensor([3]), backend="torch", normalize=None)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("distance", ["euclidean", "dot"])
def test_chunk_invariance(distance, gen, monkeypatch):
    x, y, r, rl = _data(gen, b=17, n=11)
    results = []
    for chunk_elems in (torch_path.CHUNK_ELEMS, 1, 23):
        monkeypatch.setattr(torch_path, "CHUNK_ELEMS", chunk_elems)
        for refs in ((None, None), (r, rl)):
            xs = x.clone().requires_grad_()
            t = _terms(xs, y, *refs, distance=distance, power=2)
            g, = torch.autograd.grad(t.values.sum(), xs)
            results.append((t.values.detach(), t.counts, t.nonzero, g))
    for k in range(2, len(results)):
        base = results[k % 2]
        for a, b in zip(results[k], base):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12) if a.is_floating_point() else torch.equal(a, b)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("power", [1, 2])
def test_gradcheck(distance, power, gen):
    x, y, r, rl = _data(gen, b=6, n=5, d=4, classes=2)
    pm, nm = MARGINS[distance]
    loss = fc.ContrastiveLoss(pos_margin=pm * 0.5, neg_margin=nm * 0.5, power=power, distance=distance, average="mean", backend="torch", normalize=None)
    xs, rs = x.requires_grad_(), r.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (xs,))
    assert torch.autograd.gradcheck(lambda a, b: loss(a, y, ref_emb=b, ref_labels=rl), (xs, rs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype, gen):
    x, y, r, rl = _data(gen, b=12, n=7)
    want = ref.contrastive(x, y, 4.0, 5.0, 1, "euclidean", None, r, rl)
    xs = x.to(dtype).requires_grad_()
    got = fc.contrastive_loss(xs, y, pos_margin=4.0, neg_margin=5.0, ref_emb=r.to(dtype), ref_labels=rl,
                              backend="torch", normalize=None)
    got.backward()
    assert got.dtype == torch.float32 and xs.grad.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    assert abs(got.item() - want.item()) <= tol * max(1.0, abs(want.item()))


@pytest.mark.parametrize("self_offset", [-1, 0, 3, 40])
def test_pair_counts_from_histograms(self_offset, gen):
    q_labels = torch.randint(-2, 4, (11,), generator=gen)
    r_labels = torch.randint(-2, 4, (14,), generator=gen)
    same = q_labels[:, None] == r_labels[None, :]
    not_self = torch.ones_like(same)
    if self_offset >= 0:
        for i in range(11):
            if i + self_offset < 14:
                not_self[i, i + self_offset] = False
    want = torch.stack([(same & not_self).sum(1), (~same & not_self).sum(1)], 1)
    assert torch.equal(torch_path.pair_counts(q_labels, r_labels, self_offset), want)
