"""Near-duplicate rows through the Triton kernels (interpreter on CPU): distances and
gradients from the row difference, to float32 accuracy of float64, where the matmul form
2(Σc·x − Σc·y) would cancel (its error was 2-3% of the gradient at gaps of 1e-6·‖x‖)."""
import pytest
import torch

import fastcontrast as fc
from tests.conftest import triton_available
from tests.test_metrics import batch

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LABELS = torch.tensor([0, 0, 1, 1] + [2, 3] * 8)
LOSSES = {
    "contrastive": lambda e, b: fc.contrastive_loss(e, LABELS.to(e.device), neg_margin=20.0, backend=b, normalize=None),
    "supcon-euclidean": lambda e, b: fc.supcon_loss(e, LABELS.to(e.device), distance="euclidean", backend=b),
    "infonce-sqeuclidean": lambda e, b: fc.info_nce_loss(e[:10], e[10:], distance="squared_euclidean",
                                                         temperature=2.0, symmetric=True, backend=b),
}


@pytest.mark.parametrize("gap", [1e-6, 1e-4])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_near_duplicates_match_float64(name, gap):
    x = batch("random", 20, 6, 3.0, gap, torch.Generator().manual_seed(0))  # rows 1, 3 near 0, 2; 19 = 0
    grads = {}
    for backend, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        e = x.to(device=DEVICE, dtype=dtype).clone().requires_grad_()
        loss = LOSSES[name](e, backend)
        loss.backward()
        grads[backend] = (loss.detach().double().cpu(), e.grad.double().cpu())
    (v, g), (v_ref, g_ref) = grads["triton"], grads["torch"]
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=0)
    # relative to the largest row gradient: a row whose terms cancel has a tiny gradient
    err = float((g - g_ref).norm(dim=1).max() / g_ref.norm(dim=1).max())
    assert err < 1e-5, err
