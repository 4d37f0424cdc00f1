"""fastcontrast.compat.lightly against float64 references of lightly 1.6's losses.

lightly is not a test dependency: installing it pulls torchvision (and with it another
torch). The references below are written from lightly's formulas (ntx_ent_loss.py,
dcl_loss.py, memory_bank.py of lightly 1.6.0, read and compared by hand):
SimCLR cross-entropy over [sim_01 | sim_00 without its diagonal] for both directions; with a
memory bank, cross-entropy over [positive | bank] only; DCL's positive out of the
denominator.
"""
import pytest
import torch
import torch.nn.functional as F

from fastcontrast.compat.lightly import DCLLoss, DCLWLoss, MemoryBankModule, NTXentLoss
from tests.conftest import assert_close, triton_available

F64 = torch.float64
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


def ref_simclr(out0, out1, t):
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    b = out0.shape[0]
    eye = torch.eye(b, dtype=torch.bool)
    l00, l01 = out0 @ out0.T / t, out0 @ out1.T / t
    l10, l11 = out1 @ out0.T / t, out1 @ out1.T / t
    logits = torch.cat([torch.cat([l01, l00[~eye].view(b, -1)], 1), torch.cat([l10, l11[~eye].view(b, -1)], 1)])
    return F.cross_entropy(logits, torch.arange(b).repeat(2))


def ref_moco(out0, out1, bank, t):
    """bank: (K, D) entries before the update; in-batch keys other than the positive are
    not negatives."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    logits = torch.cat([(out0 * out1).sum(1, keepdim=True), out0 @ bank.T], 1) / t
    return F.cross_entropy(logits, torch.zeros(out0.shape[0], dtype=torch.long))


def ref_dcl(out0, out1, t, weight_fn=None):
    def one(a, b):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        n = a.shape[0]
        eye = torch.eye(n, dtype=torch.bool)
        s00, s01 = a @ a.T / t, a @ b.T / t
        positive = -s01[eye]
        if weight_fn is not None:
            positive = positive * weight_fn(a, b)
        return (positive + torch.cat([s00[~eye].view(n, -1), s01[~eye].view(n, -1)], 1).logsumexp(1)).mean()
    return 0.5 * (one(out0, out1) + one(out1, out0))


def vmf(sigma):
    return lambda a, b: (2 - a.shape[0] * ((a * b).sum(1) / sigma).softmax(0)).detach()


def views(gen, b=7, d=5, dtype=F64):
    return [torch.randn(b, d, generator=gen, dtype=F64).to(dtype).requires_grad_() for _ in range(2)]


def check(got, want, leaves, dtype):
    assert_close(got, want, dtype)
    for g, w in zip(torch.autograd.grad(got, leaves, retain_graph=True),
                    torch.autograd.grad(want, leaves, retain_graph=True)):
        assert_close(g, w, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ntxent_without_bank_is_simclr(backend, gen):
    dtype = F64 if backend == "torch" else torch.float32
    a, b = views(gen, dtype=dtype)
    check(NTXentLoss(temperature=0.3, backend=backend)(a, b), ref_simclr(a.double(), b.double(), 0.3), (a, b), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ntxent_memory_bank_steps(backend, gen):
    """Four steps over a bank of 10: the bank used is the one before the update, the keys
    go in first-in first-out, and a batch reaching the end fills it and restarts at 0."""
    dtype = F64 if backend == "torch" else torch.float32
    torch.manual_seed(3)
    loss = NTXentLoss(temperature=0.2, memory_bank_size=(10, 5), backend=backend)
    torch.manual_seed(3)
    bank = F.normalize(torch.randn(10, 5), dim=-1)  # lightly's initial draw
    assert torch.equal(loss.memory_bank.bank, bank)
    ptr = 0
    for step in range(4):
        a, b = views(gen, b=4, dtype=dtype)
        want = ref_moco(a.double(), b.double(), bank.double(), 0.2)
        check(loss(a, b), want, (a, b), dtype)
        keys = F.normalize(b.detach(), dim=1).float()
        if ptr + 4 >= 10:
            bank[ptr:] = keys[: 10 - ptr]
            ptr = 0
        else:
            bank[ptr:ptr + 4] = keys
            ptr += 4
        assert int(loss.memory_bank.bank_ptr) == ptr
        assert torch.equal(loss.memory_bank.bank, bank), step


def test_memory_bank_is_kept_without_grad_and_lazy_int_size(gen):
    loss = NTXentLoss(memory_bank_size=(6, 3))
    before = loss.memory_bank.bank.clone()
    a, b = (torch.randn(2, 3, generator=gen) for _ in range(2))
    loss(a, b)  # out0 does not require grad: an evaluation call, the bank stays
    assert torch.equal(loss.memory_bank.bank, before)
    lazy = MemoryBankModule(size=8)
    _, bank = lazy(torch.randn(3, 4), update=True)
    assert bank.shape == (4, 8) and lazy.size == (8, 4) and int(lazy.bank_ptr) == 3


def test_bank_negatives_only(gen):
    """A key identical to another row's query is not a negative with a bank."""
    a = torch.randn(3, 4, generator=gen, dtype=F64)
    loss = NTXentLoss(temperature=0.5, memory_bank_size=(5, 4))
    bank = loss.memory_bank.bank.clone().double()
    assert_close(loss(a, a.flip(0)), ref_moco(a, a.flip(0), bank, 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["dcl", "dclw", "custom"])
def test_dcl_and_dclw(form, backend, gen):
    dtype = F64 if backend == "torch" else torch.float32
    a, b = views(gen, dtype=dtype)
    if form == "dcl":
        got, weight = DCLLoss(temperature=0.2, backend=backend)(a, b), None
    elif form == "dclw":
        got, weight = DCLWLoss(temperature=0.2, sigma=0.3, backend=backend)(a, b), vmf(0.3)
    else:  # a differentiable weight: its gradient is kept, as in lightly
        def weight(x, y):
            return ((x - y) ** 2).sum(1)
        got = DCLLoss(temperature=0.2, weight_fn=weight, backend=backend)(a, b)
    check(got, ref_dcl(a.double(), b.double(), 0.2, weight), (a, b), dtype)


def test_signatures_and_errors():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError, match="memory bank"):
        NTXentLoss(memory_bank_size=(-1, 3))
    with pytest.raises(ValueError, match="rows"):
        DCLLoss()(torch.randn(3, 2), torch.randn(4, 2))
    assert "memory_bank_size=(16, 3)" in repr(NTXentLoss(0.1, (16, 3)))
    assert DCLWLoss(0.1, 0.7).sigma == 0.7
