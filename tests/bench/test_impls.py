"""Every implementation of a case computes the same number: fastcontrast's call for each
benchmark loss (impls._FC_CALLS) against the dense baseline, float64, values and gradients."""
import pytest
import torch

from fastcontrast.bench.cases import LOSSES, Case, make_inputs
from fastcontrast.bench.dense import step_for
from fastcontrast.bench.impls import IMPLS


@pytest.mark.parametrize("loss", list(LOSSES))
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
