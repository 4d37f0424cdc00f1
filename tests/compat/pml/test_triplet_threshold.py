"""pytorch-metric-learning's ThresholdReducer(low, high) on TripletMarginLoss, fused: the
term window is part of the sorted pass (batch-all, the lazy TripletMarginMiner and
BatchHardMiner selections), of the streamed smooth / swap passes and of explicit triplets.
PML itself is the oracle: values, gradients and the stats its reducer records."""
import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning import reducers as R  # noqa: E402

from fastcontrast.compat.pml import distances, losses, miners  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

MARGIN = 0.3
# None (one side open), a negative low (zero terms count), high below the margin, an empty
# window (low above every term, and high ≤ 0), a band
BOUNDS = [dict(low=0.1), dict(high=0.2), dict(low=-1.0), dict(low=-0.5, high=0.25), dict(low=0.05, high=0.25),
          dict(low=5.0), dict(high=0.0), dict(high=-0.3), dict(low=0.0, high=0.4), dict(low=0.2, high=0.1)]
IDS = ["-".join(f"{k}{v}" for k, v in b.items()) for b in BOUNDS]


def batch(gen, b=17, d=5, classes=4, dtype=torch.float64):
    return torch.randn(b, d, generator=gen, dtype=dtype), torch.randint(0, classes, (b,), generator=gen)


def run(loss, x, y, dtype, miner=None, **ref):
    e = x.detach().clone().to(dtype).requires_grad_()
    ref = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in ref.items()}
    mined = None if miner is None else miner(e, y, **ref)
    out = loss(e, y, mined, **ref)
    out.backward()
    return out, e.grad


def check(got, want, dtype):
    (out, grad), (want_out, want_grad) = got, want
    assert out.dtype == dtype
    assert_close(out, want_out, dtype)
    scale = float(want_grad.abs().max()) + 1e-3
    assert_close(grad, want_grad, dtype, **({} if dtype == torch.float64 else dict(atol=2e-5 * scale)))


def pair(bounds, collect_stats=False, distance=None, miner=None, **kw):
    """(PML's loss and miner, fastcontrast's), the same settings."""
    pml_d = None if distance is None else getattr(pml_distances, distance[0])(**distance[1])
    fc_d = None if distance is None else getattr(distances, distance[0])(**distance[1])
    backend = kw.pop("backend", None)
    pml = pml_losses.TripletMarginLoss(margin=MARGIN, distance=pml_d,
                                       reducer=R.ThresholdReducer(**bounds, collect_stats=collect_stats), **kw)
    fc = losses.TripletMarginLoss(margin=MARGIN, distance=fc_d, backend=backend,
                                  reducer=R.ThresholdReducer(**bounds, collect_stats=collect_stats), **kw)
    if miner is None:
        return (pml, None), (fc, None)
    name, mkw = miner
    pml_m = getattr(pml_miners, name)(distance=pml_d, **mkw) if pml_d is not None else getattr(pml_miners, name)(**mkw)
    fc_m = getattr(miners, name)(distance=fc_d, **mkw) if fc_d is not None else getattr(miners, name)(**mkw)
    return (pml, pml_m), (fc, fc_m)


MINERS = [None, ("TripletMarginMiner", dict(margin=0.2, type_of_triplets="all")),
          ("TripletMarginMiner", dict(margin=0.2, type_of_triplets="hard")),
          ("TripletMarginMiner", dict(margin=0.4, type_of_triplets="semihard")),
          ("TripletMarginMiner", dict(margin=0.1, type_of_triplets="easy")),
          ("BatchHardMiner", {})]
MINER_IDS = ["batch_all", "all", "hard", "semihard", "easy", "batch_hard"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("miner", MINERS, ids=MINER_IDS)
@pytest.mark.parametrize("bounds", BOUNDS, ids=IDS)
def test_threshold_fused_sorted_pass(bounds, miner, dtype, gen):
    x, y = batch(gen)
    (pml, pml_m), (fc, fc_m) = pair(bounds, miner=miner)
    check(run(fc, x, y, dtype, fc_m), run(pml, x, y, dtype, pml_m), dtype)
    assert fc._dense_loss is None, "ThresholdReducer on triplets is fused"


@pytest.mark.parametrize("options", [dict(smooth_loss=True), dict(swap=True), dict(smooth_loss=True, swap=True)],
                         ids=["smooth", "swap", "smooth_swap"])
@pytest.mark.parametrize("miner", [MINERS[0], MINERS[3], MINERS[5]], ids=["batch_all", "semihard", "batch_hard"])
@pytest.mark.parametrize("bounds", [BOUNDS[i] for i in (0, 1, 2, 4, 5)], ids=[IDS[i] for i in (0, 1, 2, 4, 5)])
def test_threshold_smooth_and_swap(bounds, miner, options, gen):
    """softplus terms are compared with the bounds one by one (no zero term: low < 0 and
    low = 0 keep every triplet); swap's min(d_an, d_pn) likewise."""
    x, y = batch(gen)
    (pml, pml_m), (fc, fc_m) = pair(bounds, miner=miner, **options)
    for dtype in (torch.float64, torch.float32):
        check(run(fc, x, y, dtype, fc_m), run(pml, x, y, dtype, pml_m), dtype)
    assert fc._dense_loss is None


@pytest.mark.parametrize("distance", [("CosineSimilarity", {}), ("DotProductSimilarity", {}),
                                      ("LpDistance", {"power": 2}), ("LpDistance", {"normalize_embeddings": False})],
                         ids=["cosine", "dot", "sqeuclidean", "raw"])
@pytest.mark.parametrize("bounds", [BOUNDS[i] for i in (0, 2, 4)], ids=[IDS[i] for i in (0, 2, 4)])
def test_threshold_distances(bounds, distance, gen):
    """Similarities: the term is relu(s_an − s_ap + m), the window flipped with it."""
    x, y = batch(gen)
    for miner in (None, MINERS[3]):
        (pml, pml_m), (fc, fc_m) = pair(bounds, distance=distance, miner=miner)
        check(run(fc, x, y, torch.float64, fc_m), run(pml, x, y, torch.float64, pml_m), torch.float64)
        assert fc._dense_loss is None


@pytest.mark.parametrize("bounds", [BOUNDS[i] for i in (0, 1, 2, 4, 5)], ids=[IDS[i] for i in (0, 1, 2, 4, 5)])
def test_threshold_ref_emb_and_explicit_triplets(bounds, gen):
    x, y = batch(gen)
    r, ry = batch(gen, b=11)
    for miner in (None, MINERS[3], MINERS[5]):
        (pml, pml_m), (fc, fc_m) = pair(bounds, miner=miner)
        check(run(fc, x, y, torch.float64, fc_m, ref_emb=r, ref_labels=ry),
              run(pml, x, y, torch.float64, pml_m, ref_emb=r, ref_labels=ry), torch.float64)
        assert fc._dense_loss is None
    # PML's own miner: explicit index tensors, the window applied to each gathered term
    (pml, _), (fc, _) = pair(bounds)
    pml_miner = pml_miners.TripletMarginMiner(margin=0.4, type_of_triplets="semihard")
    check(run(fc, x, y, torch.float64, pml_miner), run(pml, x, y, torch.float64, pml_miner), torch.float64)
    assert fc._dense_loss is None


@pytest.mark.parametrize("bounds", [dict(low=0.1), dict(high=0.2), dict(low=-1.0), dict(low=5.0), dict(high=0.0)],
                         ids=["low0.1", "high0.2", "low-1", "low5", "high0"])
def test_threshold_stats(bounds, gen):
    """collect_stats: losses_size, num_past_filter, num_above_low / num_above_high as PML
    records them (one bound: fused; both bounds with stats take PML's own loss), including a
    batch without any triplet (PML: an already reduced 0 of size 1)."""
    x, y = batch(gen)
    single = torch.arange(6)  # every label distinct: no positive, no triplet
    for data in ((x, y), (x[:6], single)):
        for miner in (None, MINERS[3], MINERS[5]):
            (pml, pml_m), (fc, fc_m) = pair(bounds, collect_stats=True, miner=miner)
            want = run(pml, *data, torch.float64, pml_m)
            got = run(fc, *data, torch.float64, fc_m)
            check(got, want, torch.float64)
            assert fc._dense_loss is None
            for name in ("losses_size", "num_past_filter", "num_above_low", "num_above_high"):
                assert getattr(fc.reducer, name, None) == getattr(pml.reducer, name, None), (name, miner)


def test_threshold_both_bounds_with_stats_is_dense(gen):
    x, y = batch(gen)
    (pml, _), (fc, _) = pair(dict(low=0.05, high=0.25), collect_stats=True)
    check(run(fc, x, y, torch.float64), run(pml, x, y, torch.float64), torch.float64)
    assert fc._dense_loss is not None
    for name in ("losses_size", "num_past_filter", "num_above_low", "num_above_high"):
        assert getattr(fc.reducer, name, None) == getattr(pml.reducer, name, None), name


@pytest.mark.parametrize("miner", [MINERS[0], MINERS[3], MINERS[1], MINERS[5]],
                         ids=["batch_all", "semihard", "all", "batch_hard"])
@pytest.mark.parametrize("bounds", [BOUNDS[i] for i in (0, 1, 3, 4, 5)], ids=[IDS[i] for i in (0, 1, 3, 4, 5)])
def test_threshold_triton_backend(bounds, miner, gen):
    """The kernels (the interpreter without a GPU) against PML, float32."""
    x, y = batch(gen, b=13)
    (pml, pml_m), (fc, fc_m) = pair(bounds, miner=miner, backend="triton")
    check(run(fc, x, y, torch.float32, fc_m), run(pml, x, y, torch.float32, pml_m), torch.float32)
    assert fc._dense_loss is None
    (pml, pml_m), (fc, fc_m) = pair(bounds, miner=miner, backend="triton", smooth_loss=True)
    check(run(fc, x, y, torch.float32, fc_m), run(pml, x, y, torch.float32, pml_m), torch.float32)
