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


# ----------------------------------------------------------------------------- multi-label

from fastcontrast.compat.tfa import NpairsMultilabelLoss, npairs_multilabel_loss  # noqa: E402
from tests.compat.tfa import _oracle as tf_math  # noqa: E402

# TF Addons' own test batch: f = fp = [[1, 1], [1, −1], [−1, 1], [−1, −1]], y_pred = f fpᵀ
TFA_F = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


def multi_hot(gen, b, c, p=0.4):
    y = (torch.rand(b, c, generator=gen) < p).long()
    y[torch.arange(b), torch.randint(0, c, (b,), generator=gen)] = 1  # no empty row
    return y


def test_multilabel_tfa_cases():
    s = TFA_F @ TFA_F.T
    single = torch.eye(4, dtype=torch.long)
    multi = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
    assert_close(npairs_multilabel_loss(single, s), torch.tensor(0.253856), rtol=1e-6, atol=1e-6)
    assert_close(npairs_multilabel_loss(multi, s), torch.tensor(1.420522), rtol=1e-6, atol=1e-6)
    assert_close(npairs_multilabel_loss(multi.to_sparse(), s), torch.tensor(1.420522), rtol=1e-6, atol=1e-6)
    assert_close(NpairsMultilabelLoss()(multi, s), torch.tensor(1.420522), rtol=1e-6, atol=1e-6)
    assert_close(NpairsLoss()(torch.arange(4), s), torch.tensor(0.253856), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("b,c", [(1, 1), (5, 3), (7, 11), (13, 4)])
def test_multilabel_values_and_gradients(b, c, gen):
    y = multi_hot(gen, b, c)
    s = (torch.randn(b, b, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    got = npairs_multilabel_loss(y, s)
    want = tf_math.npairs_multilabel(y, s)
    assert_close(got, want)
    g1, = torch.autograd.grad(got, s)
    g2, = torch.autograd.grad(want, s)
    assert_close(g1, g2)
    assert torch.autograd.gradcheck(lambda s: npairs_multilabel_loss(y, s), (s,))


def test_multilabel_counts_and_dtypes(gen):
    # non-binary entries weight the shared labels by their product, as Y Yᵀ does
    y = torch.randint(0, 3, (6, 4), generator=gen)
    y[:, 0] = 1
    s = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    assert_close(npairs_multilabel_loss(y, s), tf_math.npairs_multilabel(y, s))
    assert_close(npairs_multilabel_loss(y.double(), s), tf_math.npairs_multilabel(y, s))
    hot = (y > 0)
    assert_close(npairs_multilabel_loss(hot, s), tf_math.npairs_multilabel(hot.long(), s))


def test_multilabel_one_label_per_row_is_npairs(gen):
    labels = torch.tensor([0, 2, 1, 2, 0, 0, 3])
    s = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(labels, 5)
    assert_close(npairs_multilabel_loss(one_hot, s), npairs_loss(labels, s))


def test_multilabel_empty_row_is_zero_not_nan(gen):
    y = multi_hot(gen, 6, 4)
    y[2] = 0  # TF Addons: 0/0 targets, NaN loss
    s = torch.randn(6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.isnan(tf_math.npairs_multilabel(y, s))
    got = npairs_multilabel_loss(y, s)
    keep = torch.tensor([0, 1, 3, 4, 5])
    rows = tf_math.softmax_cross_entropy(s[keep], (y[keep].double() @ y.double().T)
                                         / (y[keep].double() @ y.double().T).sum(1, keepdim=True))
    assert_close(got, rows.sum() / 6)
    got.backward()
    assert torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[2], torch.zeros(6, dtype=torch.float64))
    assert npairs_multilabel_loss(torch.zeros(3, 2), torch.randn(3, 3, generator=gen)).item() == 0.0


def test_multilabel_half_precision_and_large_logits(gen):
    y = multi_hot(gen, 9, 5)
    s = torch.randn(9, 9, generator=gen)
    out = npairs_multilabel_loss(y, s.half())
    assert out.dtype == torch.float16
    assert_close(out, tf_math.npairs_multilabel(y, s.half().double()), torch.float16)
    big = npairs_multilabel_loss(y, s * 1e4)
    assert torch.isfinite(big)
    assert_close(big, tf_math.npairs_multilabel(y, s.double() * 1e4), torch.float32)
    bf = npairs_multilabel_loss(y, s.bfloat16())
    assert bf.dtype == torch.bfloat16 and torch.isfinite(bf)


def test_multilabel_bad_input(gen):
    s = torch.randn(4, 4, generator=gen)
    y = multi_hot(gen, 4, 3)
    with pytest.raises(ValueError, match="y_true"):
        npairs_multilabel_loss(torch.arange(4), s)
    with pytest.raises(ValueError, match="y_pred"):
        npairs_multilabel_loss(y, s[:3])
    with pytest.raises(ValueError, match="y_pred"):
        npairs_multilabel_loss(y[:3], s)
    with pytest.raises(ValueError, match="y_true"):
        npairs_multilabel_loss(y - 1, s)
    with pytest.raises(ValueError, match="y_true"):
        npairs_multilabel_loss(y.double().masked_fill(y > 0, float("nan")), s)
    with pytest.raises(ValueError, match="y_true"):
        npairs_multilabel_loss(torch.zeros(4, 0), s)
    with pytest.raises(ValueError, match="y_true"):
        npairs_multilabel_loss(torch.zeros(0, 3), torch.zeros(0, 0))
    with pytest.raises(TypeError, match="y_true"):
        npairs_multilabel_loss(y.tolist(), s)
    with pytest.raises(TypeError, match="y_pred"):
        npairs_multilabel_loss(y, s.long())
    with pytest.raises(ValueError, match="y_pred"):
        npairs_multilabel_loss(y, s.masked_fill(s > 1, float("inf")))
