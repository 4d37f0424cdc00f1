"""No device-to-host synchronization on the CUDA call path.

On the CPU a TorchFunctionMode counts every call that reads a tensor's value on the host —
.item(), bool(), int(), float(), .tolist(), .cpu(), torch.equal — or whose output size
depends on the values (.nonzero(), one-argument torch.where, boolean-mask indexing,
masked_select, unique, bincount, repeat_interleave without output_size), or that copies
host data to the device (torch.tensor / as_tensor of Python numbers with a device: from
pageable memory CUDA synchronizes the stream; torch.full does not), made from
fastcontrast's own code (compat excluded) during a loss call and its backward (run so that
the counter stays on: `backward`) with the Triton backend — the path CUDA tensors take — and
with the value-check policy a CUDA tensor gets ("auto" on CUDA = not checked). With a GPU,
torch.cuda.set_sync_debug_mode("error") runs the same calls for real."""
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import fastcontrast as fc
from fastcontrast.pair_miners import multi_similarity_bounds
from fastcontrast import _validation

ROOT = Path(fc.__file__).resolve().parent
KERNELS = ROOT.parent / "kernels"
# reads a value, or sizes its output by the values
SYNCS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy", "equal",
         "allclose", "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}


def _has_bool_index(index) -> bool:
    parts = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts)


def _is_sync(func, args, kwargs) -> bool:
    name = getattr(func, "__name__", "")
    if name in SYNCS:
        return True
    if name in ("__getitem__", "__setitem__", "index_put", "index_put_"):
        return len(args) > 1 and _has_bool_index(args[1])
    if name in ("tensor", "as_tensor"):  # host data copied to the device: a stream sync on CUDA
        return kwargs.get("device") is not None and not isinstance(args[0], torch.Tensor)
    if name == "where":
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":
        return isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor) \
            and kwargs.get("output_size") is None
    return False


class CountSyncs(TorchFunctionMode):
    """Records "name at file:line" (the innermost fastcontrast frame) of every sync."""

    def __init__(self):
        super().__init__()
        self.where = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_sync(func, args, kwargs):
            for frame in reversed(traceback.extract_stack()[:-1]):
                path = Path(frame.filename).resolve()
                if ROOT in path.parents or KERNELS in path.parents:
                    if "compat" not in path.parts:
                        self.where.append(f"{getattr(func, '__name__', func)} at {path.name}:{frame.lineno}")
                    break
        return func(*args, **kwargs)


def make_cases(device="cpu", b=12, dim=16):
    """name -> a call that returns a loss (a scalar, or per-anchor values to sum)."""
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype).requires_grad_()

    x, ref = leaf(b, dim), leaf(b - 2, dim)
    half, bf16 = leaf(b, dim, dtype=torch.float16), leaf(b, dim, dtype=torch.bfloat16)
    # classes of 3, 2 and 1 rows (a singleton: no positive), shuffled
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 5])[torch.randperm(b, generator=g)].to(device)
    ref_y = y[: b - 2].flip(0).clone()
    t = torch.tensor(0.2, device=device, requires_grad=True)
    scale = torch.tensor(5.0, device=device, requires_grad=True)
    # explicit selections, as a miner gives them: triplets (a, p, n) and pairs (a1, p, a2, n)
    same = y[:, None] == y[None, :]
    pos_pairs = (same & ~torch.eye(b, dtype=torch.bool, device=device)).nonzero(as_tuple=True)
    neg_pairs = (~same).nonzero(as_tuple=True)
    pairs = (pos_pairs[0], pos_pairs[1], neg_pairs[0][::5], neg_pairs[1][::5])
    a = torch.arange(b, device=device)
    triplets = (a, (a + 1) % b, (a + 2) % b)
    tri = dict(backend="triton")
    # modules with parameters, on the device as a training loop has them
    margin = fc.MarginLoss(learn_beta=True, backend="triton").to(device)
    class_margin = fc.MarginLoss(learn_beta=True, num_classes=6, nu=0.01, backend="triton").to(device)
    siglip = fc.SigLIPLoss(backend="triton").to(device)

    def mined(loss_cls, distance, with_ref=False):
        r, ry = (ref, ref_y) if with_ref else (None, None)
        bounds = multi_similarity_bounds(x, y, epsilon=0.1, distance=distance, ref_emb=r, ref_labels=ry)[0]
        loss = loss_cls(distance=distance, reduction="none", backend="triton")
        return loss.terms(x, y, r, ry, -1 if with_ref else 0, row_bounds=bounds, bound_slack=0.1).values
    cases = {
        "supcon": lambda: fc.supcon_loss(x, y, temperature=t, backend="triton"),
        "supcon_views": lambda: fc.supcon_loss(x, backend="triton"),
        "supcon_ref": lambda: fc.supcon_loss(x, y, ref_emb=ref, ref_labels=ref_y, backend="triton"),
        "supcon_dot_normalize": lambda: fc.supcon_loss(x, y, distance="dot", normalize=True, backend="triton"),
        "supcon_fp16": lambda: fc.supcon_loss(half, y, backend="triton"),
        "supcon_bf16": lambda: fc.supcon_loss(bf16, y, backend="triton"),
        "supcon_none": lambda: fc.supcon_loss(x, y, reduction="none", backend="triton"),
        "ntxent": lambda: fc.nt_xent_loss(x, y, temperature=t, backend="triton"),
        "ntxent_views": lambda: fc.nt_xent_loss(x, backend="triton"),
        "ntxent_simclr": lambda: fc.nt_xent_loss(x, temperature=t, form="simclr", backend="triton"),
        "ntxent_ref": lambda: fc.nt_xent_loss(x, y, ref_emb=ref, ref_labels=ref_y, backend="triton"),
        "ntxent_bf16_sum": lambda: fc.nt_xent_loss(bf16, y, reduction="sum", backend="triton"),
        "infonce": lambda: fc.info_nce_loss(x[:6], x[6:], temperature=t, backend="triton"),
        "infonce_symmetric": lambda: fc.info_nce_loss(x[:6], x[6:], temperature=t, symmetric=True,
                                                      backend="triton"),
        "infonce_logit_scale": lambda: fc.InfoNCELoss(logit_scale=scale, symmetric=True, backend="triton")(
            x[:6], x[6:]),
        "infonce_more_keys": lambda: fc.info_nce_loss(x[:4], ref, backend="triton"),
        "infonce_labels": lambda: fc.InfoNCELoss(temperature=t, backend="triton")(x, ref, y, ref_y),
        "infonce_fp16": lambda: fc.info_nce_loss(half[:6], half[6:], symmetric=True, backend="triton"),
        "npair": lambda: fc.npair_loss(x, y, backend="triton"),
        "npair_l2_reg": lambda: fc.npair_loss(x, y, l2_reg=0.02, backend="triton"),
        "npair_bf16_sum": lambda: fc.npair_loss(bf16, y, l2_reg=0.02, reduction="sum", backend="triton"),
        "npair_none": lambda: fc.npair_loss(x, y, reduction="none", backend="triton"),
        "contrastive": lambda: fc.contrastive_loss(x, y, backend="triton", normalize=None),
        "contrastive_ref": lambda: fc.contrastive_loss(x, y, ref_emb=ref, ref_labels=ref_y, power=2, **tri),
        "contrastive_pairs": lambda: fc.contrastive_loss(x, indices_tuple=pairs, **tri),
        "contrastive_triplets": lambda: fc.contrastive_loss(x, y, indices_tuple=triplets, **tri),
        "contrastive_fp16": lambda: fc.contrastive_loss(half, y, distance="cosine", **tri),
        "multi_similarity": lambda: fc.multi_similarity_loss(x, y, backend="triton"),
        "circle": lambda: fc.circle_loss(x, y, backend="triton"),
        "generalized_lifted": lambda: fc.generalized_lifted_structure_loss(x, y, backend="triton"),
        "lifted_cosine": lambda: fc.lifted_structure_loss(x, y, distance="cosine", backend="triton"),
        "lifted_euclidean": lambda: fc.lifted_structure_loss(x, y, backend="triton"),
        "lifted_squared_euclidean": lambda: fc.lifted_structure_loss(x, y, distance="squared_euclidean",
                                                                     normalize=True, backend="triton"),
        "lifted_ref": lambda: fc.lifted_structure_loss(x, y, ref_emb=ref, ref_labels=ref_y, backend="triton"),
        "lifted_fp16_squared_ref": lambda: fc.lifted_structure_loss(half, y, distance="squared_euclidean",
                                                                    ref_emb=half[2:], ref_labels=y[2:], **tri),
        "lifted_bf16": lambda: fc.lifted_structure_loss(bf16, y, backend="triton"),
        "margin": lambda: margin(x, y),
        "margin_class_beta": lambda: class_margin(x, y),
        "margin_triplets": lambda: margin(x, y, indices_tuple=triplets),
        "margin_pairs": lambda: fc.margin_loss(x, y, indices_tuple=pairs, backend="triton"),
        "supcon_pairs": lambda: fc.supcon_loss(x, y, indices_tuple=pairs, backend="triton"),
        "ntxent_pairs": lambda: fc.nt_xent_loss(x, y, indices_tuple=pairs, backend="triton"),
        "multi_similarity_pairs": lambda: fc.multi_similarity_loss(x, y, indices_tuple=pairs, backend="triton"),
        "lifted_cosine_pairs": lambda: fc.lifted_structure_loss(x, y, distance="cosine", indices_tuple=pairs,
                                                                backend="triton"),
        "siglip": lambda: fc.siglip_loss(x[:6], x[6:], backend="triton"),
        "siglip_learnable": lambda: siglip(x[:6], x[6:]),
        "siglip_labels": lambda: fc.siglip_loss(x, ref, labels=y, ref_labels=ref_y, logit_scale=scale,
                                                backend="triton"),
        "dcl": lambda: fc.dcl_loss(x, y, backend="triton"),
        "dcl_weighted_views": lambda: fc.dcl_loss(x, temperature=t, sigma=0.5, backend="triton"),
        "multi_similarity_ref": lambda: fc.multi_similarity_loss(x, y, ref_emb=ref, ref_labels=ref_y, **tri),
        "circle_ref_sum": lambda: fc.circle_loss(x, y, ref_emb=ref, ref_labels=ref_y, reduction="sum", **tri),
        "contrastive_mean_none": lambda: fc.contrastive_loss(x, y, average="mean", reduction="none", **tri),
        # a fused Multi-Similarity miner selection: its streaming bounds pass, then the loss's row bounds
        "multi_similarity_mined": lambda: mined(fc.MultiSimilarityLoss, "cosine"),
        "lifted_euclidean_mined": lambda: mined(fc.LiftedStructureLoss, "euclidean"),
        "lifted_cosine_mined_ref": lambda: mined(fc.LiftedStructureLoss, "cosine", with_ref=True),
        "generalized_lifted_mined": lambda: mined(fc.GeneralizedLiftedStructureLoss, "euclidean"),
    }
    for mode in fc.MINING_MODES:
        cases[f"triplet_{mode}"] = lambda mode=mode: fc.triplet_margin_loss(x, y, mining=mode, **tri)
    cases.update({
        "triplet_batch_hard_tfa": lambda: fc.triplet_margin_loss(x, y, mining="batch_hard", hard_fallback="tfa",
                                                                 **tri),
        "triplet_swap": lambda: fc.triplet_margin_loss(x, y, swap=True, **tri),
        "triplet_semihard_smooth": lambda: fc.triplet_margin_loss(x, y, mining="semihard", smooth=True, **tri),
        "triplet_batch_hard_swap": lambda: fc.triplet_margin_loss(x, y, mining="batch_hard", swap=True, **tri),
        "triplet_none": lambda: fc.triplet_margin_loss(x, y, reduction="none", **tri),
        "triplet_sum_mean": lambda: fc.triplet_margin_loss(x, y, reduction="sum", average="mean", **tri),
        "triplet_ref": lambda: fc.triplet_margin_loss(x, y, ref_emb=ref, ref_labels=ref_y, **tri),
        "triplet_ref_semihard_tfa": lambda: fc.triplet_margin_loss(x, y, ref_emb=ref, ref_labels=ref_y,
                                                                   mining="semihard_tfa", **tri),
        "triplet_cosine": lambda: fc.triplet_margin_loss(x, y, distance="cosine", mining="hard", **tri),
        "triplet_fp16": lambda: fc.triplet_margin_loss(half, y, mining="semihard", **tri),
        "triplet_bf16": lambda: fc.triplet_margin_loss(bf16, y, mining="batch_hard", **tri),
        "triplet_triplets": lambda: fc.triplet_margin_loss(x, indices_tuple=triplets, **tri),
        "triplet_triplets_swap_smooth": lambda: fc.triplet_margin_loss(x, indices_tuple=triplets, swap=True,
                                                                       smooth=True, **tri),
        "triplet_pairs": lambda: fc.triplet_margin_loss(x, indices_tuple=pairs, **tri),
    })
    return cases


# Forms that still read values on the host, and why.
_PAIRS_TO_TRIPLETS = ("pairs (a1, p, a2, n) become every positive pair with every negative pair of the same "
                      "anchor (pytorch-metric-learning's rule): how many triplets that is depends on the "
                      "indices (torch.where), as the pairs' own number did in the miner that made them")
NOT_SYNC_FREE = {
    "npair_none": "reduction='none' returns one value per selected pair, a shape the labels set: the pairs "
                  "are listed with .nonzero() (mean and sum use the fixed-size slots of softmax.npair_slots)",
    "triplet_pairs": _PAIRS_TO_TRIPLETS,
    "margin_pairs": _PAIRS_TO_TRIPLETS,
    # the loss itself reads nothing (lifted_cosine_mined_ref): the miner's bounds pass is PyTorch
    # chunks whose distance tiles find their near pairs with .nonzero() (metrics.pairwise)
    "lifted_euclidean_mined": "the Multi-Similarity bounds pass with a distance (PyTorch chunks: near pairs "
                              "found with .nonzero())",
    "generalized_lifted_mined": "the Multi-Similarity bounds pass with a distance (PyTorch chunks: near pairs "
                                "found with .nonzero())",
}
CASES = list(make_cases())
SYNC_FREE = [name for name in CASES if name not in NOT_SYNC_FREE]


def backward(loss):
    """loss.backward(), seen by an active counter. Tensor.backward and torch.autograd.backward
    are torch functions: a mode's handler runs them with the mode off, and with it the whole
    backward pass; the autograd engine's own entry point is not one."""
    torch.autograd.Variable._execution_engine.run_backward((loss,), (torch.ones_like(loss),), False, False, (),
                                                           True, True)


def run_case(name, device="cpu"):
    backward(make_cases(device)[name]().sum())


@pytest.mark.parametrize("name", SYNC_FREE)
def test_triton_call_path_reads_no_value(name, monkeypatch):
    monkeypatch.setattr(_validation, "_check_finite", "never")  # what "auto" does for CUDA tensors
    counter = CountSyncs()
    with counter:
        run_case(name)
    assert counter.where == [], counter.where


@pytest.mark.parametrize("name", sorted(NOT_SYNC_FREE))
def test_the_forms_left_out_still_sync(name, monkeypatch):
    """A form that no longer reads a value belongs in SYNC_FREE: this fails when one does."""
    monkeypatch.setattr(_validation, "_check_finite", "never")
    counter = CountSyncs()
    with counter:
        run_case(name)
    assert counter.where, f"{name} makes no host read any more: take it out of NOT_SYNC_FREE"


def test_the_counter_sees_a_sync():
    counter = CountSyncs()
    with counter:
        _validation.check_positive(torch.tensor(0.5), "temperature", allow_tensor=True)
    assert counter.where, "the CPU check reads the value: the counter must see it"


def test_the_counter_sees_a_sync_in_backward():
    """The backward pass runs with the counter on (`backward`): a value read in an autograd
    Function's backward, from a frame of fastcontrast's code, is seen."""
    from fastcontrast import _reduce
    code = {}
    exec(compile("def read(t):\n    return t.sum().item()\n", _reduce.__file__, "exec"), code)

    class ReadsInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            code["read"](grad)
            return grad * 2

    x = torch.ones(3, requires_grad=True)
    counter = CountSyncs()
    with counter:
        loss = ReadsInBackward.apply(x).sum()
        assert counter.where == []
        backward(loss)
    assert len(counter.where) == 1, counter.where


@pytest.mark.parametrize("call", [
    lambda x: x.nonzero(), lambda x: x[x > 0], lambda x: torch.where(x > 0), lambda x: torch.bincount(x.long()),
    lambda x: x.masked_select(x > 0), lambda x: torch.unique(x), lambda x: x.tolist(), lambda x: x.cpu(),
    lambda x: x.repeat_interleave(x.long().abs()), lambda x: torch.tensor(0.5, device=x.device)])
def test_the_counter_sees_value_sized_outputs(call, monkeypatch):
    """The counter sees a call from fastcontrast's code (a function of one of its modules
    runs the call) and not the same call from here."""
    from fastcontrast import _reduce
    x = torch.tensor([1.0, 0.0, 2.0])
    counter = CountSyncs()
    with counter:
        call(x)
        assert counter.where == []
        monkeypatch.setattr(_reduce, "_probe", lambda: call(x), raising=False)
        exec(compile("_probe()", _reduce.__file__, "exec"), vars(_reduce))
    assert len(counter.where) == 1, counter.where


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SYNC_FREE)
def test_cuda_sync_debug_mode(name):
    run_case(name, "cuda")  # compile and warm up outside the checked region
    torch.cuda.synchronize()
    cases = make_cases("cuda")  # the inputs are made (with their own syncs) outside the region too
    torch.cuda.set_sync_debug_mode("error")
    try:
        cases[name]().sum().backward()
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
