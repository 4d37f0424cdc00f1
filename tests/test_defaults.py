"""The native losses' defaults: on the issue's batch (large, unnormalized rows) every
default-constructed loss gives pytorch-metric-learning's default-constructed numbers, and the
Modules' reprs show every setting."""
import inspect

import pytest
import torch

import fastcontrast as fc

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")

PAIRS = {
    "triplet": (fc.TripletMarginLoss, lambda: pml_losses.TripletMarginLoss()),
    "contrastive": (fc.ContrastiveLoss, lambda: pml_losses.ContrastiveLoss()),
    "npair": (fc.NPairLoss, lambda: pml_losses.NPairsLoss()),
    "supcon": (fc.SupConLoss, lambda: pml_losses.SupConLoss()),
    "ntxent": (fc.NTXentLoss, lambda: pml_losses.NTXentLoss()),
}
FUNCTIONAL = {"triplet": fc.triplet_margin_loss, "contrastive": fc.contrastive_loss, "npair": fc.npair_loss,
              "supcon": fc.supcon_loss, "ntxent": fc.nt_xent_loss}


@pytest.mark.parametrize("name", list(PAIRS))
def test_defaults_are_pml_defaults(name):
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(32, 16, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (32,), generator=gen)
    ours_cls, theirs = PAIRS[name]
    want = theirs()(e, y)
    torch.testing.assert_close(ours_cls()(e, y), want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(FUNCTIONAL[name](e, y), want, rtol=1e-9, atol=1e-12)
    # the scale of the rows does not matter where the defaults normalize
    torch.testing.assert_close(ours_cls()(e / 3, y), want, rtol=1e-9, atol=1e-12)


def test_normalize_false_is_the_raw_distance():
    e = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 5.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # raw Euclidean: the positive pairs are 3 and 1 apart; pos_margin 0 -> mean of the nonzero terms
    got = fc.ContrastiveLoss(neg_margin=0.0, normalize=False)(e, y)
    torch.testing.assert_close(got, torch.tensor(2.0, dtype=torch.float64))


@pytest.mark.parametrize("cls", [fc.TripletMarginLoss, fc.ContrastiveLoss, fc.NPairLoss, fc.SupConLoss,
                                 fc.NTXentLoss, fc.InfoNCELoss])
def test_keyword_only_and_repr_shows_every_setting(cls):
    params = list(inspect.signature(cls).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert not positional, f"{cls.__name__}: constructor arguments must be keyword-only, got {positional}"
    with pytest.raises(TypeError):
        cls(0.5)
    text = repr(cls())
    assert text.startswith(cls.__name__ + "(")
    for p in params:
        assert f"{p.name}=" in text, f"repr({cls.__name__}()) does not show {p.name}: {text}"


def test_repr_values():
    assert repr(fc.SupConLoss(temperature=0.3)) == (
        "SupConLoss(temperature=0.3, distance='cosine', normalize=None, reduction='mean', backend=None)")
    text = repr(fc.TripletMarginLoss(margin=0.2, reduction="sum"))
    assert "margin=0.2" in text and "reduction='sum'" in text
    assert "logit_scale=14.3" in repr(fc.InfoNCELoss(logit_scale=14.3))
