"""Every pytorch-metric-learning reducer and embedding regularizer on the five fused losses,
against pytorch-metric-learning itself: values and gradients in float32 and float64, and
which path (fused or PML's own loss) each combination takes."""
import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import reducers as R  # noqa: E402
from pytorch_metric_learning import regularizers as G  # noqa: E402

from fastcontrast.compat.pml import losses  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

CLASSES = 4
LOSSES = {
    "TripletMarginLoss": dict(margin=0.3),
    "ContrastiveLoss": dict(pos_margin=0.3, neg_margin=1.1),
    "NTXentLoss": dict(temperature=0.3),
    "SupConLoss": dict(temperature=0.3),
    "NPairsLoss": dict(),
}
WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0])

# name -> reducer factory
REDUCERS = {
    "mean": lambda: R.MeanReducer(),
    "sum": lambda: R.SumReducer(),
    "avg_nonzero": lambda: R.AvgNonZeroReducer(),
    "threshold_low": lambda: R.ThresholdReducer(low=0.1),
    "threshold_band": lambda: R.ThresholdReducer(low=0.05, high=1.2),
    "class_weighted": lambda: R.ClassWeightedReducer(WEIGHTS.clone()),
    "per_anchor": lambda: R.PerAnchorReducer(),
    "per_anchor_nonzero": lambda: R.PerAnchorReducer(R.AvgNonZeroReducer()),
    "per_anchor_weighted": lambda: R.PerAnchorReducer(R.ClassWeightedReducer(WEIGHTS.clone())),
    "do_nothing": lambda: R.DoNothingReducer(),
    "divisor": lambda: R.DivisorReducer(),
}
ELEMENT_LOSSES = {"SupConLoss", "NPairsLoss"}


def fused_expected(loss, reducer, ref=False):
    """Whether the combination is documented as fused (else PML's own loss computes it)."""
    if reducer in ("mean", "sum", "avg_nonzero", "class_weighted"):
        return True
    if reducer.startswith("threshold"):
        return loss in ELEMENT_LOSSES or loss in ("ContrastiveLoss", "TripletMarginLoss")  # bounds in the pass
    if reducer.startswith("per_anchor"):
        return loss in ELEMENT_LOSSES or (loss in ("ContrastiveLoss", "NTXentLoss") and not ref)
    if reducer == "do_nothing":
        return loss == "SupConLoss"
    return False


def batch(gen, b=14, d=6):
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (b,), generator=gen)
    return x, y


def run(loss, x, y, dtype, **kw):
    e = x.detach().clone().to(dtype).requires_grad_()
    kw = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kw.items()}
    try:
        out = loss(e, y, **kw)
    except Exception as err:  # PML's own failure is part of its behaviour
        return type(err), None
    if isinstance(out, dict):
        total = sum(v["losses"].sum() for v in out.values() if torch.is_tensor(v["losses"]))
    else:
        total = out
    total.backward()
    return out, e.grad


def check_same(got, want, dtype):
    got_out, got_grad = got
    want_out, want_grad = want
    if isinstance(want_out, type):
        assert got_out is want_out, (got_out, want_out)
        return
    if isinstance(want_out, dict):
        assert set(got_out) == set(want_out)
        for k in want_out:
            assert got_out[k]["reduction_type"] == want_out[k]["reduction_type"]
            assert_close(got_out[k]["losses"], want_out[k]["losses"], dtype)
            if torch.is_tensor(want_out[k]["indices"]):
                assert torch.equal(got_out[k]["indices"], want_out[k]["indices"])
    else:
        assert got_out.dtype == dtype
        assert_close(got_out, want_out, dtype)
    scale = float(want_grad.abs().max()) + 1e-3
    assert_close(got_grad, want_grad, dtype, **({} if dtype == torch.float64 else dict(atol=2e-5 * scale)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reducer", sorted(REDUCERS))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reducer(name, reducer, dtype, gen):
    x, y = batch(gen)
    pml = getattr(pml_losses, name)(reducer=REDUCERS[reducer](), **LOSSES[name])
    fc = getattr(losses, name)(reducer=REDUCERS[reducer](), **LOSSES[name])
    check_same(run(fc, x, y, dtype), run(pml, x, y, dtype), dtype)
    assert (fc._dense_loss is None) == fused_expected(name, reducer), "fused / dense path"


@pytest.mark.parametrize("reducer", ["per_anchor", "class_weighted", "threshold_low", "avg_nonzero"])
@pytest.mark.parametrize("name", ["TripletMarginLoss", "ContrastiveLoss", "NTXentLoss", "SupConLoss"])
def test_reducer_with_ref_emb(name, reducer, gen):
    x, y = batch(gen)
    r = torch.randn(14, 6, generator=gen, dtype=torch.float64)
    ry = torch.randint(0, CLASSES, (14,), generator=gen)
    pml = getattr(pml_losses, name)(reducer=REDUCERS[reducer](), **LOSSES[name])
    fc = getattr(losses, name)(reducer=REDUCERS[reducer](), **LOSSES[name])
    check_same(run(fc, x, y, torch.float64, ref_emb=r, ref_labels=ry),
               run(pml, x, y, torch.float64, ref_emb=r, ref_labels=ry), torch.float64)
    assert (fc._dense_loss is None) == fused_expected(name, reducer, ref=True)


def test_multiple_reducers_per_sub_loss(gen):
    x, y = batch(gen)

    def mk(lib):
        reducer = R.MultipleReducers({"pos_loss": R.SumReducer(), "neg_loss": R.ClassWeightedReducer(WEIGHTS)})
        return lib.ContrastiveLoss(reducer=reducer, embedding_regularizer=G.LpRegularizer())

    fc = mk(losses)
    check_same(run(fc, x, y, torch.float64), run(mk(pml_losses), x, y, torch.float64), torch.float64)
    assert fc._dense_loss is None


def test_default_reducer_is_pmls():
    for name in LOSSES:
        ours, theirs = getattr(losses, name)(), getattr(pml_losses, name)()
        assert type(ours.reducer) is type(theirs.reducer), name
        ours = getattr(losses, name)(embedding_regularizer=G.LpRegularizer())
        theirs = getattr(pml_losses, name)(embedding_regularizer=G.LpRegularizer())
        assert type(ours.reducer) is R.MultipleReducers
        assert {k: type(v) for k, v in ours.reducer.reducers.items()} == \
            {k: type(v) for k, v in theirs.reducer.reducers.items()}
    given = R.MeanReducer()
    assert losses.TripletMarginLoss(reducer=given).reducer is not given  # a copy, as PML


REGULARIZERS = {
    "lp": lambda: G.LpRegularizer(),
    "lp_p1": lambda: G.LpRegularizer(p=1, power=2),
    "zero_mean": lambda: G.ZeroMeanRegularizer(),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reg", sorted(REGULARIZERS))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_embedding_regularizer(name, reg, dtype, gen):
    x, y = batch(gen)
    pml = getattr(pml_losses, name)(embedding_regularizer=REGULARIZERS[reg](), embedding_reg_weight=0.3,
                                    **LOSSES[name])
    fc = getattr(losses, name)(embedding_regularizer=REGULARIZERS[reg](), embedding_reg_weight=0.3,
                               **LOSSES[name])
    check_same(run(fc, x, y, dtype), run(pml, x, y, dtype), dtype)
    assert fc._dense_loss is None


def test_regularizer_with_a_reducer_and_nothing_to_average(gen):
    """PML adds the regularizer even when the loss itself is an exact 0."""
    x, _ = batch(gen)
    y = torch.arange(14)
    for name in ("TripletMarginLoss", "ContrastiveLoss", "SupConLoss"):
        pml = getattr(pml_losses, name)(embedding_regularizer=G.LpRegularizer(), reducer=R.SumReducer())
        fc = getattr(losses, name)(embedding_regularizer=G.LpRegularizer(), reducer=R.SumReducer())
        got, want = run(fc, x, y, torch.float64), run(pml, x, y, torch.float64)
        check_same(got, want, torch.float64)
        assert got[0].item() > 0


def test_threshold_reducer_stats(gen):
    x, y = batch(gen)
    pml = pml_losses.SupConLoss(reducer=R.ThresholdReducer(low=0.1, high=2.0, collect_stats=True))
    fc = losses.SupConLoss(reducer=R.ThresholdReducer(low=0.1, high=2.0, collect_stats=True))
    check_same(run(fc, x, y, torch.float64), run(pml, x, y, torch.float64), torch.float64)
    for attr in ("num_past_filter", "num_above_low", "num_above_high", "losses_size"):
        assert getattr(fc.reducer, attr) == getattr(pml.reducer, attr), attr


def test_bad_reducer():
    with pytest.raises(TypeError, match="reducer"):
        losses.TripletMarginLoss(reducer="mean")
    with pytest.raises(TypeError, match="embedding_regularizer"):
        losses.SupConLoss(embedding_regularizer="l2")


@pytest.mark.parametrize("name", ["TripletMarginLoss", "ContrastiveLoss", "NTXentLoss", "SupConLoss"])
def test_losses_size_stat(name, gen):
    x, y = batch(gen)
    for make in (lambda: R.MeanReducer(collect_stats=True), lambda: R.AvgNonZeroReducer(collect_stats=True),
                 lambda: R.PerAnchorReducer(R.SumReducer(collect_stats=True), collect_stats=True)):
        if name == "TripletMarginLoss" and type(make()) is R.PerAnchorReducer:
            continue  # PML has no per-anchor reduction of triplets
        pml, fc = getattr(pml_losses, name)(reducer=make()), getattr(losses, name)(reducer=make())
        pml(x, y)
        fc(x, y)
        for theirs, ours in zip(pml.reducer.modules(), fc.reducer.modules()):
            for attr in ("losses_size", "num_past_filter", "num_above_low"):
                if hasattr(theirs, attr):
                    assert getattr(ours, attr) == getattr(theirs, attr), (name, type(theirs).__name__, attr)


THRESHOLDS = [dict(low=0.2), dict(high=0.3), dict(low=-1.0), dict(low=0.05, high=0.6), dict(low=5.0)]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bounds", THRESHOLDS, ids=lambda b: "-".join(f"{k}{v}" for k, v in b.items()))
def test_contrastive_threshold_reducer_is_fused(bounds, backend, gen):
    """ThresholdReducer(low, high) on ContrastiveLoss: the fused pass sums only the terms in
    (low, high), per part (low=-1 keeps the zero terms too; low=5 keeps none), equal to PML
    in values and gradients; also with a different reducer per part, explicit triplets, and
    the stats PML records."""
    x, y = batch(gen, b=19)  # backend "triton": the kernels, in the interpreter without a GPU
    kw = dict(pos_margin=0.2, neg_margin=1.0)
    for reducer in (R.ThresholdReducer(**bounds, collect_stats=len(bounds) == 1),
                    R.MultipleReducers({"pos_loss": R.ThresholdReducer(**bounds)})):
        pml = pml_losses.ContrastiveLoss(reducer=reducer, **kw)
        fc = losses.ContrastiveLoss(reducer=reducer, backend=backend, **kw)
        check_same(run(fc, x, y, torch.float32), run(pml, x, y, torch.float32), torch.float32)
        assert fc._dense_loss is None
        if reducer.collect_stats:
            ours = losses.ContrastiveLoss(reducer=R.ThresholdReducer(**bounds, collect_stats=True), **kw)
            ours(x, y)
            pml(x, y)
            for name in ("losses_size", "num_past_filter", "num_above_low", "num_above_high"):
                assert getattr(ours.reducer.reducers["neg_loss"], name, None) == \
                    getattr(pml.reducer.reducers["neg_loss"], name, None), name
    triplets = (torch.tensor([0, 1, 2, 2]), torch.tensor([3, 4, 5, 5]), torch.tensor([6, 7, 8, 9]))
    pml = pml_losses.ContrastiveLoss(reducer=R.ThresholdReducer(**bounds), **kw)
    fc = losses.ContrastiveLoss(reducer=R.ThresholdReducer(**bounds), backend=backend, **kw)
    dtype = torch.float64 if backend == "torch" else torch.float32
    check_same(run(fc, x, y, dtype, indices_tuple=triplets), run(pml, x, y, dtype, indices_tuple=triplets), dtype)
