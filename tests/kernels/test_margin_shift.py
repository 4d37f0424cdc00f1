"""The pair-margin kernels' per-anchor margin shift (MarginLoss's β, HAS_SHIFT) against the
PyTorch path, in the interpreter at small shapes: values, both inputs' gradients and β's
gradient, one β and one per class, every kind, with and without a reference set."""
import pytest
import torch

pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _run(backend, dist, x, y, ref, ry, beta):
    x = x.clone().requires_grad_()
    r = None if ref is None else ref.clone().requires_grad_()
    b = beta.clone().requires_grad_()
    loss = fc.margin_loss(x, y, beta=b, nu=0.1, margin=0.2, distance=dist, ref_emb=r, ref_labels=ry,
                          backend=backend)
    loss.backward()
    return loss.detach().float(), x.grad.float(), None if r is None else r.grad.float(), b.grad.float()


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("dist", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_shift_matches_torch_path(dist, per_class, with_ref, gen):
    x = torch.randn(21, 10, generator=gen) * 0.5
    y = torch.randint(0, 4, (21,), generator=gen)
    ref = ry = None
    if with_ref:
        ref = torch.randn(18, 10, generator=gen) * 0.5
        ry = torch.randint(0, 4, (18,), generator=gen)
    base = {"euclidean": 1.0, "squared_euclidean": 1.5, "cosine": 0.2, "dot": 0.1}[dist]
    beta = base + 0.3 * torch.rand(4 if per_class else 1, generator=gen)
    expected = _run("torch", dist, x, y, ref, ry, beta)
    on = [None if t is None else t.to(DEVICE) for t in (x, y, ref, ry, beta)]
    got = _run("triton", dist, *on)
    for a, b in zip(got, expected):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_half_precision(gen):
    x = torch.randn(19, 8, generator=gen)
    y = torch.randint(0, 3, (19,), generator=gen)
    expected = fc.MarginLoss(normalize=True, backend="torch")(x, y)
    got = fc.MarginLoss(normalize=True, backend="triton")(x.to(DEVICE).half(), y.to(DEVICE))
    assert torch.isfinite(got)
    torch.testing.assert_close(got.float().cpu(), expected, rtol=2e-2, atol=2e-3)
