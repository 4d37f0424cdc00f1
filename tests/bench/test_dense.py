"""The dense baselines compute the numbers of the loss they stand for (checked against
pytorch-metric-learning itself, float64), so the timing tables compare like with like."""
import pytest
import torch

from fastcontrast.bench.cases import LOSSES, Case, make_inputs
from fastcontrast.bench.dense import step_for
from fastcontrast.bench.impls import IMPLS

PML_LOSSES = [name for name in LOSSES if IMPLS["pml"].why_not(Case(name, 24)) is None
              and not LOSSES[name].memory]   # the memory-bank case: tests/bench/test_impls.py


@pytest.mark.parametrize("loss", PML_LOSSES)
@pytest.mark.parametrize("B, classes", [(24, 4), (31, 3)])
def test_dense_baseline_matches_pml_value_and_gradient(loss, B, classes):
    if LOSSES[loss].labels == "simclr" and B % 2:
        B += 1
    case = Case(loss, B, D=7, classes=classes, dtype="float64", seed=B)
    x_dense, x_pml = make_inputs(case), make_inputs(case)
    dense = step_for(loss)(x_dense)
    pml = IMPLS["pml"].build(case)(x_pml)
    torch.testing.assert_close(dense, pml, rtol=1e-9, atol=1e-12)
    dense.backward()
    pml.backward()
    torch.testing.assert_close(x_dense["emb"].grad, x_pml["emb"].grad, rtol=1e-7, atol=1e-10)


def test_every_pml_loss_is_checked():
    assert set(PML_LOSSES) == set(LOSSES) - {"triplet-semihard-tfa", "info-nce", "clip", "siglip", "ntxent-membank",
                                             "xbm-triplet-semihard"}


def test_semihard_tfa_dense_baseline_on_a_hand_computed_batch():
    # 1-D points: class 0 at 0 and 1, class 1 at 3; margin 1
    emb = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # pairs (0,1): d_ap 1, negatives farther: d=3 -> relu(1-3+1)=0
    # (1,0): d_ap 1, negative at distance 2 > 1 -> relu(1-2+1)=0
    loss = step_for("triplet-semihard-tfa")({"emb": emb, "labels": labels})
    assert float(loss) == 0.0
    emb = torch.tensor([[0.0], [2.5], [3.0]], dtype=torch.float64)
    # (0,1): d_ap 2.5, negative d 3 > 2.5 -> 0.5; (1,0): d_ap 2.5, negative d 0.5 not farther
    # -> farthest negative 0.5 -> relu(2.5-0.5+1) = 3; mean over 2 pairs = 1.75
    loss = step_for("triplet-semihard-tfa")({"emb": emb, "labels": labels})
    assert float(loss) == pytest.approx(1.75)


def test_info_nce_dense_baseline_is_cross_entropy_of_cosine_logits():
    case = Case("info-nce", 12, D=5, dtype="float64")
    x = make_inputs(case)
    q = torch.nn.functional.normalize(x["emb"], dim=1)
    k = torch.nn.functional.normalize(x["keys"], dim=1)
    expected = -torch.log_softmax(q @ k.T / 0.07, dim=1).diagonal().mean()
    torch.testing.assert_close(step_for("info-nce")(x), expected)
