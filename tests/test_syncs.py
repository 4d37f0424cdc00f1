"""No device-to-host synchronization on the CUDA call path.

On the CPU a TorchFunctionMode counts every call that reads a tensor's value on the host
(.item(), bool(), int(), float(), .tolist(), .nonzero() without a static size) made from
fastcontrast's own code during a loss call with the Triton backend — the path CUDA tensors
take — and with the NaN/Inf check policy a CUDA tensor gets ("auto" on CUDA = not checked).
With a GPU, torch.cuda.set_sync_debug_mode("error") runs the same calls for real."""
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import fastcontrast as fc
from fastcontrast import _validation

ROOT = Path(fc.__file__).resolve().parent
KERNELS = ROOT.parent / "kernels"
SYNCS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "nonzero"}


class CountSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.where = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCS:
            import traceback
            for frame in traceback.extract_stack()[:-1]:
                path = Path(frame.filename).resolve()
                if (ROOT in path.parents or KERNELS in path.parents) and "compat" not in path.parts:
                    self.where.append(f"{func.__name__} at {path.name}:{frame.lineno}")
                    break
        return func(*args, **(kwargs or {}))


def calls(x, y, t):
    return {
        "supcon": lambda: fc.supcon_loss(x, y, temperature=t, backend="triton"),
        "ntxent": lambda: fc.nt_xent_loss(x, y, temperature=t, backend="triton"),
        "infonce": lambda: fc.info_nce_loss(x[:6], x[6:], temperature=t, symmetric=True, backend="triton"),
        "contrastive": lambda: fc.contrastive_loss(x, y, backend="triton", normalize=None),
        "multi_similarity": lambda: fc.multi_similarity_loss(x, y, backend="triton"),
        "circle": lambda: fc.circle_loss(x, y, backend="triton"),
        "generalized_lifted": lambda: fc.generalized_lifted_structure_loss(x, y, backend="triton"),
        "lifted_cosine": lambda: fc.lifted_structure_loss(x, y, distance="cosine", backend="triton"),
        "margin": lambda: fc.MarginLoss(learn_beta=True, backend="triton")(x, y),
        "siglip": lambda: fc.siglip_loss(x[:6], x[6:], backend="triton"),
        "dcl": lambda: fc.dcl_loss(x, y, backend="triton"),
        "batch_all": lambda: fc.triplet_margin_loss(x, y, backend="triton"),
        "semihard": lambda: fc.triplet_margin_loss(x, y, mining="semihard", backend="triton"),
        "batch_hard": lambda: fc.triplet_margin_loss(x, y, mining="batch_hard", backend="triton"),
    }


# N-pair is not here: its pair selection (one pair per label with two rows or more) sizes
# the kernel's columns with a host read (.nonzero()) today. Lifted with a distance is not
# here either: its pair pass is PyTorch chunks, whose distance tiles find their near pairs
# with .nonzero() (metrics.pairwise); with a similarity it reads nothing.
SYNC_FREE = ["supcon", "ntxent", "infonce", "contrastive", "multi_similarity", "circle",
             "generalized_lifted", "lifted_cosine", "margin", "siglip", "dcl", "batch_all", "semihard", "batch_hard"]


@pytest.mark.parametrize("name", SYNC_FREE)
def test_triton_call_path_reads_no_value(name, monkeypatch):
    monkeypatch.setattr(_validation, "_check_finite", "never")  # what "auto" does for CUDA tensors
    x = torch.randn(12, 16, requires_grad=True)
    y = torch.randint(0, 3, (12,))
    t = torch.tensor(0.2, requires_grad=True)
    counter = CountSyncs()
    with counter:
        loss = calls(x, y, t)[name]()
        loss.backward()
    assert counter.where == [], counter.where


def test_the_counter_sees_a_sync():
    counter = CountSyncs()
    with counter:
        _validation.check_positive(torch.tensor(0.5), "temperature", allow_tensor=True)
    assert counter.where, "the CPU check reads the value: the counter must see it"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SYNC_FREE)
def test_cuda_sync_debug_mode(name):
    x = torch.randn(64, 32, device="cuda", requires_grad=True)
    y = torch.randint(0, 5, (64,), device="cuda")
    t = torch.tensor(0.2, device="cuda", requires_grad=True)
    fn = calls(x, y, t)[name]
    fn().backward()  # compile and warm up outside the checked region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_check_finite_modes(monkeypatch):
    bad = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    monkeypatch.setattr(_validation, "_check_finite", None)
    monkeypatch.setenv("FASTCONTRAST_CHECK_FINITE", "never")
    assert not torch.isfinite(fc.supcon_loss(bad, y))  # NaN propagates, no error
    monkeypatch.setenv("FASTCONTRAST_CHECK_FINITE", "bogus")
    with pytest.raises(ValueError, match="FASTCONTRAST_CHECK_FINITE"):
        fc.supcon_loss(bad, y)
    fc.set_check_finite("always")
    with pytest.raises(ValueError, match="embeddings contains NaN or Inf"):
        fc.supcon_loss(bad, y)
    with pytest.raises(ValueError, match="mode must be one of"):
        fc.set_check_finite("sometimes")
