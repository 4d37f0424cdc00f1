"""metrics: the distance tile, its gradients and the frame, against float64 — small distances
included (near duplicates, identical rows), on random, clustered and near-duplicate batches,
and magnitudes from 1e-20 to 1e19 (issue: exact numbers at the edges)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fastcontrast import metrics

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def batch(kind: str, b: int, d: int, magnitude: float, gap: float, gen):
    """Rows of one of three shapes; `gap`: rows 1 and 3 are copies of rows 0 and 2 moved by gap·‖x‖."""
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    if kind == "clustered":
        x = 1.0 + 1e-2 * x
    x = x * magnitude
    if gap and b >= 4:
        for src, dst in ((0, 1), (2, 3)):
            step = torch.randn(d, generator=gen, dtype=torch.float64)
            x[dst] = x[src] + gap * x[src].norm() * step / step.norm()
    x[-1] = x[0]  # an identical pair
    return x.float().double()  # float32 inputs: the float64 values are the exact reference


def true_sq(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def check_tile(x, y, kind):
    """Float32 distances within 1e-3 relative of float64 wherever d ≥ 1e-6·max(‖x‖, ‖y‖)."""
    frame = metrics.Frame(x.float(), y.float(), kind)
    got, _ = frame.tile(*frame.rows(slice(0, x.shape[0])))
    exact = true_sq(x, y)
    if kind == "euclidean":
        exact = exact.sqrt()
    norms = torch.maximum(x.norm(dim=1)[:, None], y.norm(dim=1)[None, :])
    d = true_sq(x, y).sqrt()
    resolved = d >= 1e-6 * norms
    rel = ((got.double() - exact).abs() / exact.clamp_min(1e-300))[resolved]
    assert torch.isfinite(got).all()
    assert rel.numel() == 0 or float(rel.max()) < 1e-3, float(rel.max())
    assert (got[d == 0] == 0).all()  # identical rows: exactly 0


@PROPERTY
@given(shape=st.sampled_from(["random", "clustered"]), b=st.integers(4, 11), d=st.integers(1, 9),
       exponent=st.sampled_from([-20, -8, 0, 6, 19]), gap=st.sampled_from([0.0, 1e-6, 1e-4, 1e-2]),
       kind=st.sampled_from(["euclidean", "sqeuclidean"]), seed=st.integers(0, 2**16))
def test_tile_accuracy(shape, b, d, exponent, gap, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    x = batch(shape, b, d, 10.0 ** exponent, gap, gen)
    if kind == "sqeuclidean" and exponent == 19:
        x = x / 1e9  # squared distances of 1e19-norm rows are not representable in float32
    check_tile(x, x, kind)
    check_tile(x[: b // 2 + 1], x, kind)


@pytest.mark.parametrize("gap", [1e-6, 1e-4, 1e-2])
@pytest.mark.parametrize("kind", ["euclidean", "sqeuclidean"])
def test_tile_gradients_near_duplicates(gap, kind, gen):
    """The gradient of Σ g_ij·d_ij of float32 against float64, rows 1e-6…1e-2 of their norm apart."""
    x = batch("random", 9, 6, 3.0, gap, gen)
    g = torch.rand(9, 9, generator=gen, dtype=torch.float64)
    g.fill_diagonal_(0)
    exact = x.clone().requires_grad_()
    ref = true_sq(exact, exact)
    ref = ref.clamp_min(1e-300).sqrt() if kind == "euclidean" else ref
    (ref * g).sum().backward()
    frame = metrics.Frame(x.float(), x.float(), kind)
    xs, x_sq, xa = frame.rows(slice(0, 9))
    tile, near = frame.tile(xs, x_sq, xa)
    gq, gr = frame.tile_backward(g.float(), xs, tile, near, xa)
    got = (gq + gr).double()
    err = (got - exact.grad).norm(dim=1) / exact.grad.norm(dim=1).clamp_min(1e-30)
    assert float(err.max()) < 1e-3, float(err.max())


@pytest.mark.parametrize("gap", [1e-4, 1e-1])
def test_prescaled_euclidean_gradient_is_the_same_backward(gap, gen):
    """pairwise_backward(prescaled=True) given grad / max(2d, tiny) (0 at d = 0) is the plain
    call bit for bit, near pairs and coincident rows included."""
    x = batch("random", 11, 5, 3.0, gap, gen).float()
    x[4] = x[3]                                   # d = 0 off the diagonal
    frame = metrics.Frame(x, x, "euclidean")
    xs, x_sq, xa = frame.rows(slice(0, 11))
    tile, near = frame.tile(xs, x_sq, xa)
    assert near[0].numel() > 0
    g = torch.randn(11, 11, generator=gen)
    scaled = (tile * (2.0 / frame.unit)).clamp_min(torch.finfo(torch.float32).tiny)
    pre = torch.where(tile > 0, g / scaled, torch.zeros(()))
    plain = frame.tile_backward(g.clone(), xs, tile, near, xa)
    got = frame.tile_backward(pre, xs, tile, near, xa, prescaled=True)
    assert torch.equal(plain[0], got[0]) and torch.equal(plain[1], got[1])


@pytest.mark.parametrize("kind", ["euclidean", "sqeuclidean", "dot"])
@pytest.mark.parametrize("screen_block", [1, 7, 1 << 16])
def test_reused_buffers_and_screen_blocks_change_nothing(kind, screen_block, monkeypatch, gen):
    """The tile written into a caller's (dirty) buffer, dL/dr into its two (n, D) buffers, and
    the CPU near-band screen in row blocks of any size (one row, a ragged 7 entries, the whole
    tile) give the plain calls' tile, near pairs and gradients bit for bit."""
    x = batch("clustered", 13, 6, 3.0, 1e-4, gen).float()
    y = torch.cat([x[:5], batch("random", 8, 6, 3.0, 0.0, gen).float()])
    frame = metrics.Frame(x, y, kind)
    xs, x_sq, xa = frame.rows(slice(0, 13))
    tile, near = frame.tile(xs, x_sq, xa)
    g = torch.randn(13, 13, generator=gen)
    plain = frame.tile_backward(g, xs, tile, near, xa)
    monkeypatch.setattr(metrics, "SCREEN_BLOCK", screen_block)
    buf = torch.full((13, 13), float("nan"))
    r_out = (torch.full((13, 6), float("nan")), torch.full((13, 6), float("nan")))
    got, got_near = frame.tile(xs, x_sq, xa, out=buf)
    assert got.data_ptr() == buf.data_ptr() and torch.equal(got, tile)
    if kind != "dot":
        assert near[0].numel() > 0
        assert torch.equal(got_near[0], near[0]) and torch.equal(got_near[1], near[1])
    gq, gr = frame.tile_backward(g, xs, got, got_near, xa, r_out=r_out)
    assert gr.data_ptr() == r_out[0].data_ptr()
    assert torch.equal(gq, plain[0]) and torch.equal(gr, plain[1])


def test_identical_rows_have_zero_gradient():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 5.0]])
    frame = metrics.Frame(x, x, "euclidean")
    xs, x_sq, xa = frame.rows(slice(0, 3))
    tile, near = frame.tile(xs, x_sq, xa)
    assert tile[0, 1] == 0 and tile[0, 0] == 0
    g = torch.zeros(3, 3)
    g[0, 1] = 1.0
    gq, gr = frame.tile_backward(g, xs, tile, near, xa)
    assert torch.equal(gq + gr, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_normalize_zero_and_huge_rows(dtype):
    x = torch.randn(4, 8).to(dtype)
    x[0] = 0
    x[1] = 3e4 if dtype == torch.float16 else 1e30  # norm 8.5e4 > float16's largest finite number
    out = metrics.normalize_rows(x, torch.float32)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(8))
    torch.testing.assert_close(out[1:].norm(dim=1), torch.ones(3), rtol=1e-5, atol=1e-5)


def test_row_distances_match_the_tile():
    gen = torch.Generator().manual_seed(1)
    x = batch("random", 8, 5, 1e19, 1e-4, gen).float()
    d = metrics.row_distances(x[:-1], x[1:], "euclidean")
    exact = (x[:-1].double() - x[1:].double()).norm(dim=1)
    torch.testing.assert_close(d.double(), exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (7, 13), (5, 70000)])
def test_row_counts_match_the_bool_sum(shape, gen):
    mask = torch.rand(shape, generator=gen) < 0.6
    for m in (mask, mask[:, ::2], mask.t().contiguous().t()):     # contiguous and strided
        got = metrics.row_counts(m)
        assert got.dtype == torch.int64 and torch.equal(got, m.sum(1))
    with pytest.raises(TypeError, match="mask"):
        metrics.row_counts(mask.float())
