"""The label-grouped sweep of the PyTorch path (batch_all and the miner filters): label order,
extreme class sizes, and its flat float32 sort against the row-wise one."""
import pytest
import torch

from fastcontrast._torch import triplet as impl
from fastcontrast._torch import triplet_rows
from tests.triplet.test_triplet_torch import KINDS, cfg_for, check, run

FILTER_MODES = ["batch_all", "all", "hard", "semihard", "easy"]


def _orders(y, gen):
    """Permutations of a batch: labels sorted, reversed, interleaved (round robin over the
    classes) and random."""
    srt = torch.sort(y, stable=True)[1]
    rev = srt.flip(0)
    groups = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
    inter = torch.stack([g[k] for k in range(max(map(len, groups))) for g in groups if k < len(g)])
    rnd = torch.randperm(y.shape[0], generator=gen)
    return {"sorted": srt, "reversed": rev, "interleaved": inter, "random": rnd}


@pytest.fixture(params=["rowwise", "flat", "compiled"])
def sort_path(request, monkeypatch):
    """rowwise: stable row sorts; flat: packed keys with the torch passes; compiled: packed
    keys with the compiled row passes (numba)."""
    if request.param == "compiled" and not triplet_rows.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(impl, "PACKED_SORT", request.param != "rowwise")
    monkeypatch.setattr(triplet_rows, "AVAILABLE", request.param == "compiled")
    monkeypatch.setattr(triplet_rows, "MIN_ELEMENTS", 0)
    return "flat" if request.param == "compiled" else request.param


@pytest.mark.parametrize("mining", FILTER_MODES)
def test_label_orders_give_identical_results(mining, sort_path, gen):
    q = torch.randn(23, 6, generator=gen)
    y = torch.randint(0, 4, (23,), generator=gen)
    q[5] = q[3]                        # a duplicate: ties across the merged rows
    cfg = cfg_for(mining, "euclidean", False)
    g = torch.rand(23, generator=gen) + 0.5
    base = run(q, q, y, y, cfg, g)
    for name, perm in _orders(y, gen).items():
        qp, yp = q[perm].clone(), y[perm].clone()
        got = run(qp, qp, yp, yp, cfg, g[perm])
        torch.testing.assert_close(got[0], base[0][perm], rtol=1e-6, atol=1e-7, msg=name)
        assert torch.equal(got[1], base[1][perm]) and torch.equal(got[2], base[2][perm]), name
        torch.testing.assert_close(got[3], base[3][perm], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("mining", FILTER_MODES)
@pytest.mark.parametrize("kind,negate", KINDS)
def test_flat_sort_matches_reference(mining, kind, negate, gen, monkeypatch):
    monkeypatch.setattr(impl, "PACKED_SORT", True)
    q = torch.randn(19, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (19,), generator=gen)
    check(q, q, y, y, cfg_for(mining, kind, negate), gen, dtype=torch.float32)


@pytest.mark.parametrize("mining", FILTER_MODES)
def test_flat_sort_reference_set_and_self_offset(mining, gen, monkeypatch):
    monkeypatch.setattr(impl, "PACKED_SORT", True)
    q = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    r = torch.randn(14, 4, generator=gen, dtype=torch.float64)
    ql, rl = torch.randint(0, 3, (9,), generator=gen), torch.randint(0, 3, (14,), generator=gen)
    check(q, r, ql, rl, cfg_for(mining, "euclidean", False), gen, dtype=torch.float32)
    # references = [memory; batch] with the batch's self pairs at i + 5 (cross-batch memory)
    check(q, r, ql, rl, cfg_for(mining, "euclidean", False, self_offset=5), gen, dtype=torch.float32)


@pytest.mark.parametrize("mining", FILTER_MODES)
@pytest.mark.parametrize("labels", ["size_one_classes", "one_class_90_percent"])
def test_extreme_class_sizes(mining, labels, sort_path, gen):
    b = 20
    if labels == "size_one_classes":      # every class a singleton but one pair
        y = torch.arange(b)
        y[7] = 3
    else:                                  # 18 of 20 in one class
        y = torch.zeros(b, dtype=torch.long)
        y[4], y[11] = 1, 2
    y = y[torch.randperm(b, generator=gen)]
    q = torch.randn(b, 5, generator=gen, dtype=torch.float64)
    dtype = torch.float32 if sort_path == "flat" else torch.float64
    check(q, q, y, y, cfg_for(mining, "euclidean", False), gen, dtype=dtype)


def test_float32_flat_and_rowwise_agree(gen, monkeypatch):
    q = torch.randn(40, 8, generator=gen)
    y = torch.randint(0, 5, (40,), generator=gen)
    g = torch.rand(40, generator=gen) + 0.5
    cfg = cfg_for("semihard", "euclidean", False)
    monkeypatch.setattr(impl, "PACKED_SORT", True)
    flat = run(q, q, y, y, cfg, g)
    monkeypatch.setattr(impl, "PACKED_SORT", False)
    rowwise = run(q, q, y, y, cfg, g)
    assert torch.equal(flat[1], rowwise[1]) and torch.equal(flat[2], rowwise[2])
    torch.testing.assert_close(flat[0], rowwise[0], rtol=0, atol=0)
    torch.testing.assert_close(flat[3], rowwise[3], rtol=0, atol=0)


@pytest.mark.parametrize("mining", FILTER_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sweep_pieces_give_identical_results(mining, dtype, gen, monkeypatch):
    """One-row pieces, pieces that mix label groups (no group large enough to be swept on its
    own) and whole tiles: the same counts, values and gradients."""
    q = torch.randn(31, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (31,), generator=gen)
    y[:2] = 7                           # a small group next to large ones
    g = (torch.rand(31, generator=gen) + 0.5).to(dtype)
    cfg = cfg_for(mining, "euclidean", False)
    base = run(q, q, y, y, cfg, g)
    for budget, min_rows in ((1, 1), (1 << 30, 1 << 30), (400, 3)):
        monkeypatch.setattr(impl, "SWEEP_BUDGET", budget)
        monkeypatch.setattr(impl, "MIN_GROUP_ROWS", min_rows)
        got = run(q, q, y, y, cfg, g)
        assert torch.equal(got[1], base[1]) and torch.equal(got[2], base[2]), (budget, min_rows)
        torch.testing.assert_close(got[0], base[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got[3], base[3], rtol=1e-5, atol=1e-6)


def _labels(kind, gen):
    """Label structures the sweep's grouping must not mind: singletons (anchors without a
    positive), one class of 90%, lonely anchors next to ordinary classes."""
    if kind == "size_one_classes":
        y = torch.arange(20)
        y[7] = 3
    elif kind == "one_class_90_percent":
        y = torch.zeros(20, dtype=torch.long)
        y[4], y[11] = 1, 2
    else:                                  # "lonely_anchors": two classes of 8 and 4 singletons
        y = torch.tensor([0] * 8 + [1] * 8 + [2, 3, 4, 5])
    return y[torch.randperm(y.shape[0], generator=gen)]


@pytest.mark.parametrize("mining", FILTER_MODES)
@pytest.mark.parametrize("labels", ["size_one_classes", "one_class_90_percent", "lonely_anchors"])
def test_against_pml_in_every_label_order(mining, labels, gen):
    """fc.triplet_margin_loss on the PyTorch path against pytorch-metric-learning's
    TripletMarginLoss (batch_all: no miner; a filter: its TripletMarginMiner), values and
    gradients, with the batch in sorted, reversed, interleaved and random label order."""
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    import fastcontrast as fc
    y = _labels(labels, gen)
    x = torch.randn(y.shape[0], 6, generator=gen, dtype=torch.float64)
    margin, mm = 0.3, 0.1               # the miner window cuts into the active triplets
    for name, perm in _orders(y, gen).items():
        xp, yp = x[perm].clone(), y[perm].clone()
        e1, e2 = xp.clone().requires_grad_(), xp.clone().requires_grad_()
        got = fc.triplet_margin_loss(e1, yp, mining=mining, margin=margin, miner_margin=mm, backend="torch")
        loss = pml_losses.TripletMarginLoss(margin=margin)
        if mining == "batch_all":
            want = loss(e2, yp)
        else:
            want = loss(e2, yp, pml_miners.TripletMarginMiner(margin=mm, type_of_triplets=mining)(e2, yp))
        got.backward()
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=f"{labels} {name}")
        torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-7, atol=1e-10, msg=f"{labels} {name}")


@pytest.mark.parametrize("mining", FILTER_MODES)
def test_lonely_anchors_against_reference(mining, sort_path, gen):
    y = _labels("lonely_anchors", gen)
    q = torch.randn(y.shape[0], 5, generator=gen, dtype=torch.float64)
    dtype = torch.float32 if sort_path == "flat" else torch.float64
    check(q, q, y, y, cfg_for(mining, "euclidean", False), gen, dtype=dtype)
