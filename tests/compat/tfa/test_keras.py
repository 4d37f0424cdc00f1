"""Keras' loss-object conventions on the TF Addons class forms: name, reduction,
sample_weight, get_config/from_config — against tf.keras.losses.Loss.__call__'s arithmetic
(tests/compat/tfa/_oracle.keras_reduce) and TF Addons' own test numbers."""
import pytest
import torch

from fastcontrast.compat import tfa
from tests.compat.tfa import _oracle as tf_math
from tests.conftest import assert_close

REDUCTIONS = ["auto", "none", "sum", "sum_over_batch_size"]

# TF Addons' contrastive test batch
Y = torch.tensor([0, 0, 1, 1, 0, 1])
D = torch.tensor([0.1, 0.3, 1.3, 0.7, 1.1, 0.5])


def test_contrastive_tfa_cases():
    assert_close(tfa.ContrastiveLoss()(Y, torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])), torch.tensor(0.0))
    assert_close(tfa.ContrastiveLoss()(Y, D), torch.tensor(0.621666), rtol=1e-6, atol=1e-6)
    w = torch.tensor([1.2, 0.8, 0.5, 0.4, 1.5, 1.0])
    assert_close(tfa.ContrastiveLoss()(Y, D, sample_weight=w), torch.tensor(0.4425), rtol=1e-6, atol=1e-6)
    assert_close(tfa.ContrastiveLoss(margin=2.0)(Y, D), torch.tensor(1.623333), rtol=1e-6, atol=1e-6)
    assert_close(tfa.ContrastiveLoss()(Y, D, sample_weight=6.0), torch.tensor(3.73), rtol=1e-6, atol=1e-6)
    assert tfa.ContrastiveLoss()(Y, D, sample_weight=0.0).item() == 0.0
    assert_close(tfa.ContrastiveLoss(reduction="none")(Y, D), torch.tensor([0.81, 0.49, 1.69, 0.49, 0.0, 0.25]),
                 rtol=1e-5, atol=1e-6)
    assert_close(tfa.ContrastiveLoss(reduction="sum")(Y, D), torch.tensor(3.73), rtol=1e-6, atol=1e-6)


def test_names_reductions_and_config():
    cl = tfa.ContrastiveLoss(reduction="sum", name="cl")
    assert (cl.name, cl.reduction) == ("cl", "sum")
    assert cl.get_config() == {"reduction": "sum", "name": "cl", "margin": 1.0}
    assert tfa.ContrastiveLoss().get_config() == {"reduction": "sum_over_batch_size", "name": "contrastive_loss",
                                                  "margin": 1.0}
    nl = tfa.NpairsLoss(name="nl")
    assert (nl.name, nl.reduction) == ("nl", "none")
    assert tfa.NpairsLoss().get_config() == {"reduction": "none", "name": "npairs_loss"}
    assert tfa.NpairsMultilabelLoss().get_config() == {"reduction": "none", "name": "npairs_multilabel_loss"}
    assert tfa.NpairsMultilabelLoss(name="nml").name == "nml"
    assert tfa.TripletSemiHardLoss().get_config() == {"reduction": "none", "name": None, "margin": 1.0,
                                                      "distance_metric": "L2"}
    assert tfa.TripletHardLoss(0.5, True, "angular", "th").get_config() == {
        "reduction": "none", "name": "th", "margin": 0.5, "soft": True, "distance_metric": "angular"}
    for cls in (tfa.ContrastiveLoss, tfa.NpairsLoss, tfa.NpairsMultilabelLoss, tfa.TripletSemiHardLoss,
                tfa.TripletHardLoss):
        obj = cls(reduction="sum", name="x")
        again = cls.from_config(obj.get_config())
        assert type(again) is cls and again.get_config() == obj.get_config()


def test_bad_constructor_arguments():
    for cls in (tfa.ContrastiveLoss, tfa.NpairsLoss, tfa.NpairsMultilabelLoss, tfa.TripletSemiHardLoss,
                tfa.TripletHardLoss):
        with pytest.raises(ValueError, match="reduction"):
            cls(reduction="mean")
        with pytest.raises(TypeError, match="reduction"):
            cls(reduction=None)
        with pytest.raises(TypeError, match="name"):
            cls(name=3)
    for cls in (tfa.ContrastiveLoss, tfa.NpairsLoss, tfa.NpairsMultilabelLoss):
        with pytest.raises(TypeError, match="name"):
            cls(name=None)  # TF Addons types these names as str
    assert tfa.TripletHardLoss(name=None).name is None
    for cls in (tfa.TripletSemiHardLoss, tfa.TripletHardLoss):
        with pytest.raises(ValueError, match="distance_metric"):
            cls(distance_metric="cosine")
        with pytest.raises(TypeError, match="distance_metric"):
            cls(distance_metric=lambda e: e @ e.T)
        with pytest.raises(ValueError, match="margin"):
            cls(margin=float("nan"))
    with pytest.raises(TypeError, match="soft"):
        tfa.TripletHardLoss(soft="yes")
    with pytest.raises(TypeError, match="margin"):
        tfa.ContrastiveLoss(margin="1")


def _cases(gen):
    """(class instance, y_true, y_pred, loss-function output) for the five classes."""
    x = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (11,), generator=gen)
    s = torch.randn(11, 11, generator=gen, dtype=torch.float64)
    multi = (torch.rand(11, 5, generator=gen) < 0.5).long()
    multi[:, 1] = 1
    d = torch.rand(11, generator=gen, dtype=torch.float64) * 2
    pairs = torch.randint(0, 2, (11,), generator=gen)
    return [
        (lambda r: tfa.TripletSemiHardLoss(margin=0.7, reduction=r), labels, x, tf_math.semihard(labels, x, 0.7)),
        (lambda r: tfa.TripletHardLoss(soft=True, distance_metric="angular", reduction=r), labels, x,
         tf_math.hard(labels, x, soft=True, metric="angular")),
        (lambda r: tfa.NpairsLoss(reduction=r), labels, s, tf_math.npairs(labels, s)),
        (lambda r: tfa.NpairsMultilabelLoss(reduction=r), multi, s, tf_math.npairs_multilabel(multi, s)),
        (lambda r: tfa.ContrastiveLoss(margin=1.5, reduction=r), pairs, d, tf_math.contrastive(pairs, d, 1.5)),
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", ["none", "scalar", "one", "column", "matrix", "vector"])
def test_sample_weights_and_reductions(reduction, weight, gen):
    keras_reduction = "sum_over_batch_size" if reduction == "auto" else reduction
    for make, y_true, y_pred, values in _cases(gen):
        w = {"none": None, "scalar": 2.5, "one": torch.tensor([0.75], dtype=torch.float64),
             "column": torch.rand(11, 1, generator=gen, dtype=torch.float64),
             "matrix": torch.rand(11, 3, generator=gen, dtype=torch.float64),
             "vector": torch.rand(11, generator=gen, dtype=torch.float64)}[weight]
        loss = make(reduction)
        scalar = values.dim() == 0
        if weight == "vector" and scalar:
            # Keras squeezes the last axis of a weight one rank above the loss values: size 11, an error
            with pytest.raises(ValueError, match="sample_weight"):
                loss(y_true, y_pred, sample_weight=w)
            continue
        if weight == "matrix" and not scalar:
            with pytest.raises(ValueError, match="sample_weight"):
                loss(y_true, y_pred, sample_weight=w)
            continue
        got = loss(y_true, y_pred, sample_weight=w)
        want = tf_math.keras_reduce(values, w, keras_reduction)
        assert got.shape == want.shape
        assert_close(got, want)


def test_scalar_loss_weight_column_broadcasts(gen):
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    w = torch.linspace(0.0, 2.0, 8, dtype=torch.float64)[:, None]
    value = tfa.triplet_semihard_loss(y, x)
    out = tfa.TripletSemiHardLoss()(y, x, sample_weight=w)  # reduction "none": 8 weighted copies
    assert out.shape == (8, 1)
    assert_close(out, value.detach() * w)
    mean = tfa.TripletSemiHardLoss(reduction="sum_over_batch_size")(y, x, sample_weight=w)
    assert_close(mean, value.detach() * w.mean())
    g, = torch.autograd.grad(mean, x)
    g_ref, = torch.autograd.grad(tf_math.semihard(y, x) * w.mean(), x)
    assert_close(g, g_ref)


def test_weighted_dtypes(gen):
    d = torch.rand(9, generator=gen) * 2
    y = torch.randint(0, 2, (9,), generator=gen)
    w = torch.rand(9, generator=gen)
    out = tfa.ContrastiveLoss()(y, d.half(), sample_weight=w)
    assert out.dtype == torch.float16
    assert_close(out, tf_math.keras_reduce(tf_math.contrastive(y, d.half().double()), w.double()), torch.float16)
    x = torch.randn(9, 4, generator=gen)
    out = tfa.TripletHardLoss()(y, x.bfloat16(), sample_weight=3.0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out)


def test_bad_sample_weight(gen):
    loss = tfa.ContrastiveLoss()
    with pytest.raises(TypeError, match="sample_weight"):
        loss(Y, D, sample_weight=[1.0] * 6)
    with pytest.raises(TypeError, match="sample_weight"):
        loss(Y, D, sample_weight=torch.ones(6, dtype=torch.bool))
    with pytest.raises(TypeError, match="sample_weight"):
        loss(Y, D, sample_weight=True)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(Y, D, sample_weight=torch.full((6,), float("nan")))
    with pytest.raises(ValueError, match="sample_weight"):
        loss(Y, D, sample_weight=torch.ones(5))
    with pytest.raises(ValueError, match="sample_weight"):
        tfa.NpairsLoss()(torch.arange(4), torch.randn(4, 4, generator=gen), sample_weight=torch.ones(4))
    with pytest.raises(TypeError, match="y_pred"):
        loss(Y, D.tolist(), sample_weight=torch.ones(6))
