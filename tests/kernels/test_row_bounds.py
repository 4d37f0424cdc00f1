"""Row bounds (a fused miner selection) in the kernels against the PyTorch path, in the
interpreter at small shapes: the pair-weighted softmax variants (ms, circle, glifted) and the
pair-margin kernels, values, counts and both inputs' gradients, with bounds from the
Multi-Similarity pass and random per-row bounds (rows that select nothing or everything),
ragged tiles, with and without a reference set."""
import pytest
import torch

pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402
from fastcontrast.pair_miners import multi_similarity_bounds  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LSE_LOSSES = {
    "ms": (fc.MultiSimilarityLoss, dict(alpha=3.0, beta=7.0, base=0.3)),
    "circle": (fc.CircleLoss, dict(m=0.3, gamma=12.0)),
    "glifted": (fc.GeneralizedLiftedStructureLoss, dict(neg_margin=0.7, pos_margin=0.1)),
    "lifted": (fc.LiftedStructureLoss, dict(neg_margin=0.8, pos_margin=0.2)),  # the glifted kernels + pair pass
}
LSE_CASES = [(v, d) for v in LSE_LOSSES for d in ("cosine", "dot", "euclidean", "squared_euclidean")
             if not (v == "circle" and d not in ("cosine", "dot"))]
MARGIN = {"euclidean": dict(pos_margin=0.2, neg_margin=1.1, normalize=True),
          "squared_euclidean": dict(pos_margin=0.5, neg_margin=2.5, normalize=True),
          "dot": dict(pos_margin=0.8, neg_margin=0.1, normalize=True)}


def _bounds(kind, x, y, ref, ry, dist, normalize, gen):
    """Multi-Similarity's bounds (l units), or random ones between each row's extremes."""
    if kind == "ms":
        return multi_similarity_bounds(x, y, epsilon=0.1, distance=dist, normalize=normalize, ref_emb=ref,
                                       ref_labels=ry)[0]
    metric = fc.metrics.resolve_metric(dist, normalize)
    q = fc.metrics.prepare(x, metric)
    d = fc.metrics.pairwise(q, q if ref is None else fc.metrics.prepare(ref, metric), metric.kind)
    l = d if metric.kind == "dot" else -d
    lo, hi = l.min(1).values, l.max(1).values
    t = torch.rand(x.shape[0], 2, generator=gen)
    bounds = torch.stack([lo + t[:, 0] * (hi - lo), lo + t[:, 1] * (hi - lo)], 1)
    bounds[0] = torch.tensor([-float("inf"), float("inf")])  # nothing
    bounds[1] = torch.tensor([float("inf"), -float("inf")])  # everything
    return bounds


def _run(terms, x, ref, weights):
    x = x.clone().requires_grad_()
    r = None if ref is None else ref.clone().requires_grad_()
    t = terms(x, r)
    (t.values.float() * weights).sum().backward()
    return t, x.grad.float(), None if r is None else r.grad.float()


def _close(got, want):
    torch.testing.assert_close(got.float().cpu(), want.float(), rtol=1e-4, atol=1e-5 * max(1.0, want.abs().max().item()))


def _data(gen, with_ref):
    x = torch.randn(21, 10, generator=gen)
    y = torch.randint(0, 4, (21,), generator=gen)
    ref = ry = None
    if with_ref:
        ref, ry = torch.randn(18, 10, generator=gen), torch.randint(0, 4, (18,), generator=gen)
    return x, y, ref, ry


@pytest.mark.parametrize("bounds_from", ["ms", "random"])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("variant,dist", LSE_CASES)
def test_pair_lse_kernels_with_row_bounds(variant, dist, with_ref, bounds_from, gen):
    cls, hyper = LSE_LOSSES[variant]
    x, y, ref, ry = _data(gen, with_ref)
    if dist == "dot":
        x, ref = x * 0.5, None if ref is None else ref * 0.5
    bounds = _bounds(bounds_from, x, y, ref, ry, dist, None, gen)
    weights = torch.rand(21, generator=gen)
    offset = 0 if ref is None else -1

    def terms_with(backend, device):
        loss = cls(**hyper, distance=dist, backend=backend, reduction="none")
        labels, rl, b = y.to(device), None if ry is None else ry.to(device), bounds.to(device)
        return lambda e, r: loss.terms(e, labels, r, rl, offset, row_bounds=b, bound_slack=0.1)

    want = _run(terms_with("torch", "cpu"), x, ref, weights)
    got = _run(terms_with("triton", DEVICE), x.to(DEVICE), None if ref is None else ref.to(DEVICE),
               weights.to(DEVICE))
    _close(got[0].values, want[0].values)
    for a, b in zip(got[1:], want[1:]):
        if b is not None:
            _close(a, b)


@pytest.mark.parametrize("bounds_from", ["ms", "random"])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("dist", list(MARGIN))
def test_pair_margin_kernels_with_row_bounds(dist, power, with_ref, bounds_from, gen):
    kw = MARGIN[dist]
    x, y, ref, ry = _data(gen, with_ref)
    bounds = -_bounds(bounds_from, x, y, ref, ry, dist, True, gen)  # in d = −l units
    weights = torch.rand(21, 2, generator=gen)
    offset = 0 if ref is None else -1

    def terms_with(backend, device):
        loss = fc.ContrastiveLoss(**kw, power=power, distance=dist, backend=backend, reduction="none")
        labels, rl, b = y.to(device), None if ry is None else ry.to(device), bounds.to(device)
        return lambda e, r: loss.terms(e, labels, r, rl, offset, row_bounds=b, bound_slack=0.1)

    want = _run(terms_with("torch", "cpu"), x, ref, weights)
    got = _run(terms_with("triton", DEVICE), x.to(DEVICE), None if ref is None else ref.to(DEVICE),
               weights.to(DEVICE))
    assert torch.equal(got[0].counts.cpu(), want[0].counts) and torch.equal(got[0].nonzero.cpu(), want[0].nonzero)
    if bounds_from == "random":
        assert int(want[0].counts[0].sum()) == 0  # row 0 selects nothing
    _close(got[0].values, want[0].values)
    for a, b in zip(got[1:], want[1:]):
        if b is not None:
            _close(a, b)


@pytest.mark.parametrize("dist", ["euclidean", "dot"])
@pytest.mark.parametrize("num_classes", [None, 4])
def test_margin_loss_kernels_with_row_bounds(dist, num_classes, gen):
    """MarginLoss (a per-anchor margin shift β with its gradient) on mined pairs: both together."""
    x, y, _, _ = _data(gen, False)
    bounds = -_bounds("ms", x, y, None, None, dist, True, gen)
    beta = torch.full((num_classes or 1,), 0.9 if dist == "euclidean" else 0.3)
    if num_classes:
        beta = beta + torch.linspace(-0.1, 0.1, num_classes)

    def run(backend, device):
        xx = x.to(device).clone().requires_grad_()
        b = beta.to(device).clone().requires_grad_()
        loss = fc.MarginLoss(margin=0.2, nu=0.1, learn_beta=True, distance=dist, normalize=True, backend=backend)
        out = loss.loss_with(xx, y.to(device), None, None, None, b, True, 0, row_bounds=bounds.to(device),
                             bound_slack=0.1)
        out.backward()
        return out.detach(), xx.grad, b.grad

    for got, want in zip(run("triton", DEVICE), run("torch", "cpu")):
        _close(got, want)


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("variant,kind", [("ms", "dot"), ("circle", "dot"), ("glifted", "sqeuclidean")])
def test_both_backward_paths_honor_row_bounds(variant, kind, one_pass, gen):
    """The softmax seam with row bounds against the PyTorch path, on the one-pass backward and
    on the two per-chunk kernels (ragged 16-wide tiles, whole rows and 16-wide D chunks)."""
    from fastcontrast._torch import softmax as torch_path
    from fastcontrast.configs import SoftmaxConfig
    from fastcontrast.kernels import softmax as kernel

    x, y, ref, ry = _data(gen, True)
    x, ref = x * 0.4, ref * 0.4
    dist = "dot" if kind == "dot" else "squared_euclidean"
    bounds = _bounds("random", x, y, ref, ry, dist, False, gen)
    weights = torch.rand(21, generator=gen)
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=-1, scale_pos=2.0, scale_neg=5.0, shift_pos=0.4,
                        shift_neg=0.2, row_bounds=True, bound_slack=0.1)
    tau = torch.tensor(1.0)
    t_values, t_n_pos, t_saved = torch_path.forward(x, ref, y, ry, cfg, tau, bounds=bounds)
    t_grads = torch_path.backward(weights, x, ref, y, ry, cfg, tau, t_saved, False, bounds=bounds)
    dx, dref, dy, dry, dtau, dw, db = (t.to(DEVICE) for t in (x, ref, y, ry, tau, weights, bounds))
    for block_do in (32, 16):  # D = 10: whole rows, then (one pass) the chunked products
        blocks = kernel.Blocks(fwd_m=16, fwd_n=16, fwd_d=16, bwd_m=16, bwd_n=16, bwd_d=16, block_do=block_do,
                               num_warps=4, one_pass=one_pass)
        values, n_pos, saved = kernel.forward(dx, dref, dy, dry, cfg, dtau, blocks, bounds=db)
        grad_q, grad_r, _ = kernel.backward(dw, dx, dref, dy, dry, cfg, dtau, saved, False, blocks, bounds=db)
        _close(values, t_values)
        assert torch.equal(n_pos.cpu(), t_n_pos)
        _close(grad_q, t_grads[0])
        _close(grad_r, t_grads[1])
