import pytest
import torch

from fastcontrast import metrics


def exact(x, y, kind):
    diff = x[:, None, :] - y[None, :, :]
    if kind == "dot":
        return x @ y.T
    sq = (diff * diff).sum(-1)
    return sq if kind == "sqeuclidean" else sq.sqrt()


@pytest.mark.parametrize("kind", metrics.KERNEL_KINDS)
def test_pairwise_matches_exact(kind, gen):
    x = torch.randn(7, 13, generator=gen, dtype=torch.float64)
    y = torch.randn(5, 13, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(metrics.pairwise(x, y, kind), exact(x, y, kind))


@pytest.mark.parametrize("kind", metrics.KERNEL_KINDS)
def test_pairwise_backward_matches_autograd(kind, gen):
    x = torch.randn(6, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    exact(x, y, kind).backward(g)
    gx, gy = metrics.pairwise_backward(g, x.detach(), y.detach(), kind)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gy, y.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_duplicates_have_zero_distance_and_zero_gradient(dtype, gen):
    x = torch.randn(5, 33, generator=gen, dtype=dtype) * 3
    y = torch.cat([x[2:3], torch.randn(2, 33, generator=gen, dtype=dtype)])
    d = metrics.pairwise(x, y, "euclidean")
    assert d[2, 0] == 0
    g = torch.ones_like(d)
    gx, gy = metrics.pairwise_backward(g, x, y, "euclidean", d)
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # the duplicate pair contributes nothing: compare with the gradient without that entry
    g0 = g.clone()
    g0[2, 0] = 0
    gx0, _ = metrics.pairwise_backward(g0, x, y, "euclidean", d)
    torch.testing.assert_close(gx, gx0)


def test_resolve_metric():
    assert metrics.resolve_metric("cosine") == metrics.Metric("dot", True, True)
    assert metrics.resolve_metric("euclidean", True) == metrics.Metric("euclidean", True, False)
    assert metrics.resolve_metric("squared_euclidean").kind == "sqeuclidean"
    with pytest.raises(ValueError, match="distance"):
        metrics.resolve_metric("manhattan")
    with pytest.raises(ValueError, match="normalize"):
        metrics.resolve_metric("cosine", normalize=False)


def test_chunks_cover_rows():
    rows = [r for s in metrics.chunks(1000, 300, budget_elems=7000) for r in range(s.start, s.stop)]
    assert rows == list(range(1000))
