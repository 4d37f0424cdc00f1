"""LiftedStructureLoss on the Triton backend (the "glifted" kernels' per-row LSE over
negatives and backward, the pair combination in chunked PyTorch passes; _lifted_triton.py)
against the PyTorch path in the interpreter: values and the gradients of both inputs, every
kind, with and without a reference set, one chunk and many, single class, all distinct, fp16."""
import pytest
import torch

pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402
from fastcontrast._torch import softmax as torch_softmax  # noqa: E402
from tests.kernels.test_pair_weighted import _run  # noqa: E402  (values and weighted gradients)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DISTANCES = ("euclidean", "squared_euclidean", "cosine", "dot")


def _compare(x, y, ref, ry, weights, rtol=1e-4, **hyper):
    expected = _run(fc.LiftedStructureLoss(**hyper, backend="torch", reduction="none"), x, y, ref, ry, weights)
    on = [None if t is None else t.to(DEVICE) for t in (x, y, ref, ry, weights)]
    got = _run(fc.LiftedStructureLoss(**hyper, backend="triton", reduction="none"), *on)
    for a, b in zip(got, expected):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b, rtol=rtol, atol=rtol * 0.1 * max(1.0, b.abs().max().item()))
    return expected


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("dist", DISTANCES)
def test_matches_torch_path(dist, with_ref, gen):
    scale = 0.5 if dist == "dot" else 1.0
    x = torch.randn(21, 10, generator=gen) * scale
    y = torch.randint(0, 4, (21,), generator=gen)
    ref = ry = None
    if with_ref:  # fewer references than anchors: a positive p ≥ B has no row of its own
        ref = torch.randn(18, 10, generator=gen) * scale
        ry = torch.randint(0, 4, (18,), generator=gen)
    weights = torch.rand(21, generator=gen)
    margins = dict(neg_margin=0.8, pos_margin=0.1) if dist in ("cosine", "dot") else dict(neg_margin=3.0)
    values, gx, _ = _compare(x, y, ref, ry, weights, distance=dist, **margins)
    assert (values > 0).sum() >= 5 and gx.abs().sum() > 0  # the hinge is active: the test can fail


def test_many_chunks(gen, monkeypatch):
    # the pair passes in 2-row chunks, references longer than anchors
    x, ref = torch.randn(13, 7, generator=gen), torch.randn(29, 7, generator=gen)
    y, ry = torch.randint(0, 3, (13,), generator=gen), torch.randint(0, 3, (29,), generator=gen)
    weights = torch.rand(13, generator=gen)
    whole = _compare(x, y, ref, ry, weights, neg_margin=3.0)
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 29 * 2)
    chunked = _compare(x, y, ref, ry, weights, neg_margin=3.0)
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b)
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 13 * 3)  # its own references, 3 rows a chunk
    _compare(x, y, None, None, weights, neg_margin=3.0)


def test_single_class_and_all_distinct(gen):
    x = torch.randn(19, 8, generator=gen)
    weights = torch.rand(19, generator=gen)
    for y in (torch.zeros(19, dtype=torch.long), torch.arange(19)):  # no negative / no positive: 0
        values, gx, _ = _compare(x, y, None, None, weights, neg_margin=3.0)
        assert values.abs().max() == 0 and gx.abs().max() == 0
    # one anchor without negatives among others
    y = torch.randint(0, 3, (19,), generator=gen)
    ref, ry = torch.randn(5, 8, generator=gen), torch.zeros(5, dtype=torch.long)
    _compare(x, y, ref, ry, weights, neg_margin=3.0)


def test_half_precision(gen):
    x = torch.randn(19, 8, generator=gen)  # the kernels read fp16, accumulate in fp32
    y = torch.randint(0, 3, (19,), generator=gen)
    expected = fc.LiftedStructureLoss(neg_margin=3.0, backend="torch")(x, y)
    got = fc.LiftedStructureLoss(neg_margin=3.0, backend="triton")(x.to(DEVICE).half(), y.to(DEVICE))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float().cpu(), expected, rtol=2e-2, atol=2e-2 * max(1.0, expected.abs().item()))
