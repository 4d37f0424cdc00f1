"""fastcontrast.compat.tfa.npairs_loss against the float64 reference written from TF Addons'
semantics (soft label-equality targets, softmax cross-entropy per row, mean)."""
import pytest
import torch

from fastcontrast.compat.tfa import NpairsLoss, npairs_loss
from fastcontrast.reference import softmax as ref
from tests.conftest import assert_close


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 3, 0], [4] * 5, list(range(6)), [2, 2, 7, 7]])
def test_values_and_gradients(labels, gen):
    y = torch.tensor(labels)
    b = len(labels)
    s = torch.randn(b, b, generator=gen, dtype=torch.float64, requires_grad=True)
    assert_close(npairs_loss(y, s), ref.tfa_npairs(y, s), torch.float64)
    assert torch.autograd.gradcheck(lambda s: npairs_loss(y, s), (s,))


def test_soft_targets_spread_over_the_class(gen):
    # one class: every row's target is uniform, the loss is the mean of LSE − mean(row)
    s = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    want = (torch.logsumexp(s, 1) - s.mean(1)).mean()
    assert_close(npairs_loss(torch.zeros(4), s), want, torch.float64)


def test_float_labels_and_column_shape(gen):
    s = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([1, 3, 1, 2, 3])
    assert_close(npairs_loss(y.double(), s), npairs_loss(y, s), torch.float64)
    assert_close(npairs_loss(y[:, None], s), npairs_loss(y, s), torch.float64)
    assert_close(NpairsLoss()(y, s), npairs_loss(y, s), torch.float64)


def test_sim_of_embeddings_matches_sohn(gen):
    a = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    p = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    assert_close(npairs_loss(torch.arange(6), a @ p.T), ref.sohn_npair(a, p), torch.float64)


def test_half_precision(gen):
    s = torch.randn(6, 6, generator=gen)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    out = npairs_loss(y, s.half())
    assert out.dtype == torch.float16
    assert_close(out, ref.tfa_npairs(y, s.double()), torch.float16)


def test_bad_input(gen):
    s = torch.randn(4, 4, generator=gen)
    with pytest.raises(ValueError, match="y_pred"):
        npairs_loss(torch.arange(4), s[:, :3])
    with pytest.raises(ValueError, match="y_true"):
        npairs_loss(torch.arange(4)[None].repeat(2, 1), s)
    with pytest.raises(TypeError, match="y_pred"):
        npairs_loss(torch.arange(4), torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="y_pred"):
        npairs_loss(torch.arange(4), s * float("inf"))
