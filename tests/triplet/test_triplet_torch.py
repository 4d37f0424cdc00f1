"""The PyTorch path of the triplet family against the dense float64 reference."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._torch import triplet as impl
from fastcontrast.configs import TripletConfig
from fastcontrast.reference.triplet import triplet_terms
from tests.conftest import assert_close

MODES = ["batch_all", "all", "hard", "semihard", "easy", "batch_hard", "semihard_tfa"]
KINDS = [("euclidean", False), ("sqeuclidean", False), ("dot", True)]


def run(q, r, ql, rl, cfg, g):
    """values, counts, nonzero and dL/dq, dL/dr (summed when r is q) of the torch path."""
    v, c, nz, saved = impl.forward(q, r, ql, rl, cfg)
    gq, gr = impl.backward(g, q, r, ql, rl, cfg, saved)
    return v, c, nz, (gq + gr if r is q else (gq, gr))


def reference(q, r, ql, rl, cfg, g):
    qq = q.detach().double().clone().requires_grad_()
    rr = qq if r is q else r.detach().double().clone().requires_grad_()
    v, c, nz = triplet_terms(qq, rr, ql, rl, cfg)
    (v * g.double()).sum().backward() if v.requires_grad else None
    for t in (qq, rr):
        if t.grad is None:
            t.grad = torch.zeros_like(t)
    return v.detach(), c, nz, (qq.grad if r is q else (qq.grad, rr.grad))


def check(q, r, ql, rl, cfg, gen, dtype=torch.float64):
    g = torch.rand(q.shape[0], generator=gen, dtype=torch.float64) + 0.5
    ref = reference(q, r, ql, rl, cfg, g)
    qd = q.to(dtype)
    got = run(qd, qd if r is q else r.to(dtype), ql, rl, cfg, g.to(dtype))
    assert_close(got[0], ref[0], dtype, msg=f"values {cfg}")
    assert torch.equal(got[1], ref[1]), f"counts {cfg}"
    assert torch.equal(got[2], ref[2]), f"nonzero {cfg}"
    grads = got[3] if isinstance(got[3], tuple) else (got[3],)
    ref_grads = ref[3] if isinstance(ref[3], tuple) else (ref[3],)
    for a, b in zip(grads, ref_grads):
        assert_close(a, b, dtype, msg=f"grad {cfg}")


def cfg_for(mining, kind, negate, **kw):
    margin = 0.3 if kind != "dot" else 0.5
    kw.setdefault("margin", margin)
    kw.setdefault("miner_margin", 0.45)
    return TripletConfig(kind=kind, negate=negate, mining=mining, **kw)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("kind,negate", KINDS)
def test_self_reference(mining, kind, negate, gen):
    q = torch.randn(13, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (13,), generator=gen)
    check(q, q, y, y, cfg_for(mining, kind, negate), gen)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("option", ["swap", "smooth", "both"])
def test_swap_smooth(mining, option, gen):
    q = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=gen)
    kw = dict(swap=option in ("swap", "both"), smooth=option in ("smooth", "both"))
    for kind, negate in KINDS[::2]:
        check(q, q, y, y, cfg_for(mining, kind, negate, **kw), gen)


@pytest.mark.parametrize("mining", MODES)
def test_reference_set(mining, gen):
    """N ≠ B without self pairs, and a distributed-style self_offset into a larger set."""
    q = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    r = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    ql, rl = torch.randint(0, 3, (7,), generator=gen), torch.randint(0, 3, (16,), generator=gen)
    check(q, r, ql, rl, cfg_for(mining, "euclidean", False, self_offset=-1), gen)
    r2 = r.clone()
    r2[4:11] = q
    rl2 = rl.clone()
    rl2[4:11] = ql
    check(q, r2, ql, rl2, cfg_for(mining, "euclidean", False, self_offset=4, swap=True), gen)
    check(q, r2, ql, rl2, cfg_for(mining, "dot", True, self_offset=4), gen)
    rl2[5] = ql[1] + 1  # the self pair is never a negative, even when its labels disagree
    check(q, r2, ql, rl2, cfg_for(mining, "sqeuclidean", False, self_offset=4), gen)


@pytest.mark.parametrize("mining", MODES)
def test_chunk_invariance(mining, gen, monkeypatch):
    q = torch.randn(17, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (17,), generator=gen)
    g = torch.rand(17, generator=gen, dtype=torch.float64)
    for kw in (dict(), dict(smooth=True), dict(swap=True)):
        cfg = cfg_for(mining, "euclidean", False, **kw)
        big = run(q, q, y, y, cfg, g)
        monkeypatch.setattr(impl, "CHUNK_BUDGET", 1)
        small = run(q, q, y, y, cfg, g)
        monkeypatch.undo()
        assert_close(small[0], big[0])
        assert torch.equal(small[1], big[1]) and torch.equal(small[2], big[2])
        assert_close(small[3], big[3])


@pytest.mark.parametrize("mining", MODES)
def test_ties_and_duplicates(mining, gen):
    """Integer coordinates: many exactly equal distances and duplicate rows; lowest index
    wins every tie, in both implementations."""
    q = torch.randint(0, 3, (14, 3), generator=gen).double()
    q[5] = q[2]
    q[9] = q[2]
    y = torch.randint(0, 3, (14,), generator=gen)
    for kind, negate in KINDS:
        for kw in (dict(), dict(swap=True)):
            check(q, q, y, y, cfg_for(mining, kind, negate, margin=1.0, miner_margin=1.0, **kw), gen)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("labels", ["one_class", "all_distinct", "lonely"])
def test_degenerate_batches(mining, labels, gen):
    b = 9
    q = torch.randn(b, 4, generator=gen, dtype=torch.float64)
    y = {"one_class": torch.zeros(b, dtype=torch.long),
         "all_distinct": torch.arange(b),
         "lonely": torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3])}[labels]
    for fallback in ("drop", "tfa"):
        cfg = cfg_for(mining, "euclidean", False, hard_fallback=fallback)
        check(q, q, y, y, cfg, gen)
        v, c, nz, saved = impl.forward(q, q, y, y, cfg)
        assert torch.isfinite(v).all()
    if labels == "one_class" and mining != "semihard_tfa":
        assert impl.forward(q, q, y, y, cfg_for(mining, "euclidean", False))[1].sum() == 0


def test_single_row(gen):
    q = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    for mining in MODES:
        check(q, q, y, y, cfg_for(mining, "euclidean", False, hard_fallback="tfa"), gen)


@pytest.mark.parametrize("mining", ["batch_all", "semihard", "batch_hard", "semihard_tfa"])
def test_float32_matches_float64(mining, gen):
    q = torch.randn(40, 24, generator=gen, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    y = torch.randint(0, 5, (40,), generator=gen)
    check(q, q, y, y, cfg_for(mining, "euclidean", False, margin=0.2, miner_margin=0.3), gen, dtype=torch.float32)


def test_float16_inputs_accumulate_in_float32(gen):
    q = torch.randn(20, 8, generator=gen).half()
    y = torch.randint(0, 3, (20,), generator=gen)
    cfg = cfg_for("semihard", "euclidean", False)
    v, c, nz, saved = impl.forward(q, q, y, y, cfg)
    assert v.dtype == torch.float32
    gq, gr = impl.backward(torch.ones(20), q, q, y, y, cfg, saved)
    assert gq.dtype == torch.float16
    ref = triplet_terms(q.double(), q.double(), y, y, cfg)
    assert_close(v, ref[0], torch.float16)


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_gradcheck(mining, distance, gen):
    """Finite differences through the autograd Function, away from hinge kinks (margins
    chosen so no h or t sits within the perturbation of a threshold)."""
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    kw = dict(margin=0.37, miner_margin=0.53, mining=mining, distance=distance, backend="torch",
              reduction="sum")
    for extra in (dict(), dict(smooth=True, swap=True)):
        f = lambda e: fc.triplet_margin_loss(e, y, **kw, **extra)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(),), eps=1e-7, atol=1e-5)
    r = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, 3, (10,), generator=gen)
    f = lambda e, re: fc.triplet_margin_loss(e, y, ref_emb=re, ref_labels=ry, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(), r.clone().requires_grad_()), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("mining", MODES)
def test_unit_gradients_in_forward(mining, gen):
    """forward(unit_grad=True) keeps dL/dq, dL/dr for dL/dvalues = 1; backward scales them for
    a uniform incoming gradient and recomputes for any other."""
    q = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    r = torch.randn(15, 4, generator=gen, dtype=torch.float64)
    ql, rl = torch.randint(0, 3, (11,), generator=gen), torch.randint(0, 3, (15,), generator=gen)
    for kw in (dict(), dict(smooth=True), dict(swap=True)):
        cfg = cfg_for(mining, "euclidean", False, self_offset=-1, **kw)
        v, c, nz, saved = impl.forward(q, r, ql, rl, cfg, unit_grad=True)
        _, _, _, plain = impl.forward(q, r, ql, rl, cfg)
        assert_close(v, impl.forward(q, r, ql, rl, cfg)[0])
        for g in (torch.full((11,), 0.37, dtype=torch.float64), torch.rand(11, generator=gen, dtype=torch.float64)):
            fast = impl.backward(g, q, r, ql, rl, cfg, saved)
            slow = impl.backward(g, q, r, ql, rl, cfg, plain)
            assert_close(fast[0], slow[0])
            assert_close(fast[1], slow[1])


@pytest.mark.parametrize("mining,kw", [("semihard_tfa", {}), ("semihard_tfa", dict(swap=True)),
                                       ("batch_all", dict(smooth=True)), ("semihard", dict(swap=True))])
def test_unit_gradients_take_no_second_pass(mining, kw, gen, monkeypatch):
    """forward(unit_grad=True) computes the values and the unit gradients from the same sort
    (semihard_tfa) or the same blocks (smooth, swap): as many sorts / filter blocks as without."""
    q = torch.randn(14, 4, generator=gen)
    y = torch.randint(0, 3, (14,), generator=gen)
    cfg = cfg_for(mining, "euclidean", False, **kw)
    calls = []
    for name in ("_padded_sort", "_kept"):
        fn = getattr(impl, name)
        monkeypatch.setattr(impl, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
    impl.forward(q, q, y, y, cfg)
    plain = list(calls)
    calls.clear()
    impl.forward(q, q, y, y, cfg, unit_grad=True)
    assert plain and calls == plain


@pytest.mark.parametrize("shape", [(7, 13), (40, 2000)])   # the second one packs with numba when installed
@pytest.mark.parametrize("numba", [True, False])
def test_packed_negative_sort_is_the_stable_sort(shape, numba, gen, monkeypatch):
    """float32 on the CPU: _padded_sort's packed int64 keys give the stable sort's values, order
    and counts, with ties, ±0.0, negative values and masked-out entries."""
    c, n = shape
    d = torch.randint(-3, 4, (c, n), generator=gen).float() * 0.5      # many ties, negatives
    d[torch.rand(c, n, generator=gen) < 0.2] = -0.0
    d[torch.rand(c, n, generator=gen) < 0.2] = 0.0
    mask = torch.rand(c, n, generator=gen) < 0.7
    mask[0] = False                                                   # a row without negatives
    monkeypatch.setattr(impl.triplet_rows, "AVAILABLE", numba and impl.triplet_rows.AVAILABLE)
    vals, order, counts = impl._padded_sort(d, mask)
    monkeypatch.setattr(impl, "PACKED_SORT", False)
    ref_vals, ref_order, ref_counts = impl._padded_sort(d, mask)
    assert torch.equal(counts, ref_counts) and torch.equal(counts, mask.sum(1))
    live = torch.arange(n)[None, :] < counts[:, None]
    assert torch.equal(torch.where(live, order, -1), torch.where(live, ref_order, -1))
    assert torch.equal(vals.view(torch.int32), ref_vals.view(torch.int32))   # the same bits, −0.0 kept
