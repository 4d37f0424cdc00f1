"""Every implementation of a case computes the same number: fastcontrast's call for each
benchmark loss (impls._FC_CALLS) against the dense baseline, float64, values and gradients."""
import pytest
import torch

from fastcontrast.bench.cases import LOSSES, Case, make_inputs
from fastcontrast.bench.dense import step_for
from fastcontrast.bench.impls import IMPLS


@pytest.mark.parametrize("loss", [name for name, spec in LOSSES.items() if not spec.memory])
@pytest.mark.parametrize("B, classes", [(26, 3), (61, 5)])
def test_fastcontrast_call_computes_the_loss_the_case_names(loss, B, classes):
    if LOSSES[loss].labels == "simclr" and B % 2:
        B += 1
    case = Case(loss, B, D=6, classes=classes, dtype="float64", seed=B)
    x_fc, x_dense = make_inputs(case), make_inputs(case)
    fc_value = IMPLS["fastcontrast-torch"].build(case)(x_fc)
    dense_value = step_for(loss)(x_dense)
    torch.testing.assert_close(fc_value, dense_value, rtol=1e-9, atol=1e-12)
    fc_value.backward()
    dense_value.backward()
    for key in ("emb", "keys"):
        if key in x_fc:
            torch.testing.assert_close(x_fc[key].grad, x_dense[key].grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("B, N, classes", [(26, 26, 3), (24, 72, 5)])
def test_cross_batch_memory_case_equals_pml_over_consecutive_steps(B, N, classes):
    """The XBM case has no dense form: pytorch-metric-learning's CrossBatchMemory is the
    reference, over two steps (the second one after the first batch was enqueued)."""
    pytest.importorskip("pytorch_metric_learning")
    case = Case("xbm-triplet-semihard", B, N=N, D=6, classes=classes, dtype="float64", seed=B)
    ours, theirs = IMPLS["fastcontrast-torch"].build(case), IMPLS["pml"].build(case)
    assert IMPLS["dense-eager"].why_not(case) and IMPLS["dense-compile"].why_not(case)
    for _ in range(2):
        x_ours, x_theirs = make_inputs(case), make_inputs(case)
        value_ours, value_theirs = ours(x_ours), theirs(x_theirs)
        assert value_theirs.item() > 0
        torch.testing.assert_close(value_ours, value_theirs, rtol=1e-9, atol=1e-12)
        value_ours.backward()
        value_theirs.backward()
        torch.testing.assert_close(x_ours["emb"].grad, x_theirs["emb"].grad, rtol=1e-6, atol=1e-9)
