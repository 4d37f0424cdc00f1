"""Pair-margin Triton kernels against the PyTorch path and the reference: in the interpreter
on CPU, or on CUDA tensors when a GPU is present.

Small shapes on purpose: the interpreter runs every program in Python. B, N, D are ragged
against the interpreter's 16-row / 16-column tiles and 32-wide gradient chunks.
"""
import pytest
import torch

triton = pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402
from fastcontrast._torch import pair_margin as torch_path  # noqa: E402
from fastcontrast.configs import PairMarginConfig  # noqa: E402
from fastcontrast.kernels import _host  # noqa: E402
from fastcontrast.kernels import pair_margin as kernel  # noqa: E402
from fastcontrast.pair_margin import PairMarginFunction  # noqa: E402
from fastcontrast.reference import pair_margin as ref  # noqa: E402
from tests.conftest import assert_close  # noqa: E402
from tests.kernels import sm90  # noqa: E402

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or _host.TRACEABLE is False),
                                reason="needs CUDA or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

MARGINS = {"euclidean": (4.0, 5.0), "squared_euclidean": (16.0, 25.0), "dot": (1.0, -1.0), "cosine": (0.3, -0.1)}


def _data(seed, b=21, n=18, d=37, classes=3):
    g = torch.Generator().manual_seed(seed)
    data = (torch.randn(b, d, generator=g), torch.randint(0, classes, (b,), generator=g),
            torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g))
    return tuple(t.to(DEVICE) for t in data)


def _run(backend, x, y, r, rl, distance, power, dtype=torch.float32, self_offset=None, margins=None):
    """(values, counts, nonzero, grad_x, grad_r) of Σ w·values on one backend."""
    pm, nm = margins or MARGINS[distance]
    loss = fc.ContrastiveLoss(pos_margin=pm, neg_margin=nm, power=power, distance=distance, backend=backend, normalize=None)
    xs = x.detach().to(dtype).clone().requires_grad_()
    rs = None if r is None else r.detach().to(dtype).clone().requires_grad_()
    if self_offset is None:
        self_offset = 0 if r is None else -1
    t = loss.terms(xs, y, rs, rl, self_offset=self_offset)
    w = torch.randn(x.shape[0], 2, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    grads = torch.autograd.grad((t.values * w).sum(), [xs] + ([] if r is None else [rs]))
    return (t.values.detach(), t.counts, t.nonzero) + tuple(grads)


def _assert_same(a, b, dtype=torch.float32):
    for k, (u, v) in enumerate(zip(a, b)):
        if u.is_floating_point():
            scale = max(1.0, float(v.abs().max()))
            assert_close(u, v, dtype, atol=TOL_ABS[dtype] * scale, msg=f"output {k}")
        else:
            assert torch.equal(u, v), f"output {k}"


TOL_ABS = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.mark.parametrize("distance, power, with_ref", [
    ("euclidean", 1, False), ("euclidean", 2, True), ("squared_euclidean", 1, True),
    ("squared_euclidean", 2, False), ("dot", 2, True), ("cosine", 1, False),
])
def test_kernel_matches_torch_path_and_reference(distance, power, with_ref):
    x, y, r, rl = _data(1)
    if not with_ref:
        r, rl = None, None
    got = _run("triton", x, y, r, rl, distance, power)
    want = _run("torch", x, y, r, rl, distance, power)
    _assert_same(got, want)
    pm, nm = MARGINS[distance]
    v, c, nz = ref.per_anchor(x.double().cpu(), y.cpu(), pm, nm, power, distance, None,
                              None if r is None else r.double().cpu(), None if rl is None else rl.cpu())
    assert torch.equal(got[1].cpu(), c) and torch.equal(got[2].cpu(), nz)
    assert_close(got[0], v, torch.float32, atol=2e-5 * float(v.abs().max()))


def test_duplicates_and_distributed_offset():
    x, y, r, rl = _data(2, b=19, n=23, d=20)
    r[:19] = x            # the references start with the anchors themselves
    rl[:19] = y
    r[20] = x[3]          # and hold one more copy of anchor 3 with another label
    rl[20] = y[3] + 1
    x[7] = x[3]           # a duplicate inside the batch
    for self_offset in (0, 2):
        got = _run("triton", x, y, r, rl, "euclidean", 1, self_offset=self_offset, margins=(0.0, 5.0))
        want = _run("torch", x, y, r, rl, "euclidean", 1, self_offset=self_offset, margins=(0.0, 5.0))
        _assert_same(got, want)
        assert all(torch.isfinite(g).all() for g in got[3:])
    # self_offset 0 on references that start with the batch: same as no reference set
    got_self = _run("triton", x, y, None, None, "euclidean", 1, margins=(0.0, 5.0))
    got_off = _run("triton", x, y, x.clone(), y.clone(), "euclidean", 1, self_offset=0, margins=(0.0, 5.0))
    for k in range(3):
        assert torch.equal(got_off[k], got_self[k])
    assert_close(got_off[3] + got_off[4], got_self[3], torch.float32)


@pytest.mark.parametrize("labels", ["single_class", "all_distinct"])
def test_label_edge_cases(labels):
    x, _, _, _ = _data(3, b=17, d=9)
    y = (torch.zeros(17, dtype=torch.int64) if labels == "single_class" else torch.arange(17)).to(DEVICE)
    got = _run("triton", x, y, None, None, "euclidean", 2)
    want = _run("torch", x, y, None, None, "euclidean", 2)
    _assert_same(got, want)
    empty = 1 if labels == "single_class" else 0
    assert int(got[1][:, empty].sum()) == 0 and float(got[0][:, empty].abs().sum()) == 0.0


def test_mostly_inactive_hinges():
    """Tight margins: most tiles have no active hinge and skip their gradient product."""
    x, y, r, rl = _data(9, b=40, n=35, d=9)
    got = _run("triton", x, y, r, rl, "euclidean", 1, margins=(6.0, 2.5))
    want = _run("torch", x, y, r, rl, "euclidean", 1, margins=(6.0, 2.5))
    _assert_same(got, want)
    assert 0 < int(got[2].sum()) < 0.1 * int(got[1].sum())
    nothing = _run("triton", x, y, r, rl, "euclidean", 2, margins=(100.0, -1.0))
    assert int(nothing[2].sum()) == 0
    assert all(float(t.abs().max()) == 0.0 for t in (nothing[0],) + nothing[3:])


@pytest.mark.parametrize("dtype, distance", [(torch.float16, "euclidean"), (torch.bfloat16, "dot")])
def test_half_precision_inputs(dtype, distance):
    x, y, r, rl = _data(4, b=20, n=17, d=24)
    got = _run("triton", x, y, r, rl, distance, 1, dtype=dtype)
    want = _run("torch", x, y, r, rl, distance, 1, dtype=dtype)
    assert got[3].dtype == dtype and got[4].dtype == dtype
    assert got[0].dtype == torch.float32
    _assert_same(got, want, dtype)


def test_loss_value_and_determinism():
    x, y, r, rl = _data(5, b=18, n=18, d=33)
    first = _run("triton", x, y, None, None, "cosine", 2)
    second = _run("triton", x, y, None, None, "cosine", 2)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    xs = x.clone().requires_grad_()
    got = fc.contrastive_loss(xs, y, pos_margin=0.3, neg_margin=-0.1, distance="cosine", backend="triton", normalize=None)
    want = ref.contrastive(x.double().cpu(), y.cpu(), 0.3, -0.1, 1, "cosine")
    assert_close(got, want, torch.float32)


def test_seam_arguments():
    x, y, _, _ = _data(6, b=5, d=4)
    with pytest.raises(TypeError, match="float64"):
        kernel.forward(x.double(), x.double(), y, y, PairMarginConfig())
    with pytest.raises(ValueError, match="precision"):
        kernel.forward(x, x, y, y, PairMarginConfig(precision="fp8"))
    with pytest.raises(ValueError, match="kind"):
        kernel.forward(x, x, y, y, PairMarginConfig(kind="cosine"))
    # tf32 is a GPU setting (10-bit mantissa products); the interpreter computes in fp32
    a = kernel.forward(x, x, y, y, PairMarginConfig(precision="tf32"))
    b = torch_path.forward(x, x, y, y, PairMarginConfig())
    tol = 5e-3 if DEVICE == "cuda" else None
    assert_close(a[0], b[0], torch.float32, rtol=tol, atol=tol)


def test_compiled_training_step_fullgraph():
    """The Function and its registered ops trace into one graph (aot_eager: no C compiler)."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(8)
    model = torch.nn.Linear(9, 6)
    model = model.to(DEVICE)
    x, y = torch.randn(20, 9, generator=g).to(DEVICE), torch.randint(0, 3, (20,), generator=g).to(DEVICE)
    cfg = PairMarginConfig(pos_margin=0.2, neg_margin=2.0)

    def step(inp):
        v, c, nz = PairMarginFunction.apply(model(inp), None, y, None, cfg, "triton")
        return v.sum() / nz.sum().clamp_min(1)

    eager = step(x)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(x)
    comp_grads = torch.autograd.grad(compiled, list(model.parameters()))
    assert_close(compiled, eager, torch.float32)
    for a, b in zip(comp_grads, eager_grads):
        assert_close(a, b, torch.float32)


def test_ops_pass_opcheck():
    """Schema, fake kernels and functionalization of both registered ops."""
    x, y, r, rl = _data(10, b=20, n=17, d=16)
    unit = torch.tensor(0.5, device=DEVICE)
    keep = [0.0, float("inf"), -float("inf"), 0.7]  # positives unfiltered, negatives filtered
    no_shift = torch.empty(0, device=DEVICE)
    fwd_args = (x, r, y, rl, unit, no_shift, no_shift, 2, False, 1, 0.1, 1.5, -1, "ieee", 1e-6, keep, False, 0.0,
                False, 16, 16, 16, 4, 2)
    torch.library.opcheck(torch.ops.fastcontrast.pair_margin_fwd.default, fwd_args)
    grad = torch.ones(20, 2, device=DEVICE)
    bwd_args = (grad, x, r, y, rl, unit, no_shift, no_shift, 0, True, 2, -0.5, 0.2, -1, "ieee", 1e-6, keep, False,
                0.0, False, 16, 16, 16, 32, 4, 2)
    torch.library.opcheck(torch.ops.fastcontrast.pair_margin_bwd.default, bwd_args)
    shift = torch.linspace(-0.2, 0.3, 20, device=DEVICE)  # MarginLoss's per-anchor β
    torch.library.opcheck(torch.ops.fastcontrast.pair_margin_fwd.default,
                          (x, r, y, rl, unit, shift, no_shift, 2, False, 1, 0.1, 1.5, -1, "ieee", 1e-6, keep, True,
                           0.0, False, 16, 16, 16, 4, 2))
    bounds = torch.stack([torch.linspace(0.2, 1.2, 20), torch.linspace(1.4, 0.3, 20)], 1).to(DEVICE)
    torch.library.opcheck(torch.ops.fastcontrast.pair_margin_fwd.default,  # a fused miner selection
                          (x, r, y, rl, unit, no_shift, bounds, 2, False, 1, 0.1, 1.5, -1, "ieee", 1e-6, keep,
                           False, 0.1, True, 16, 16, 16, 4, 2))


SM90_BUILD = r"""
import torch
from fastcontrast.kernels import pair_margin as k
from tests.kernels.sm90 import build_all

builds = []
for dtype, ty in ((torch.bfloat16, "*bf16"), (torch.float32, "*fp32")):
    b = k.default_blocks(128, dtype, torch.device("cuda"))
    ptrs = {"q_ptr": ty, "r_ptr": ty, "grad_q_ptr": ty, "grad_r_ptr": ty, "q_lab_ptr": "*i32",
            "r_lab_ptr": "*i32", "counts_ptr": "*i64", "nonzero_ptr": "*i64", "unit_ptr": "*fp32"}
    options = dict(num_warps=b.num_warps, num_stages=b.num_stages)
    common = dict(D=128, KIND=2, NEGATE=False, POWER=2, FILTERED=False, PRECISION="ieee", HAS_SHIFT=False,
                  BLOCK_D=b.block_d, ROW_BOUNDS=False)
    bwd = dict(common, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_DO=b.block_do)
    builds += [(k._pair_margin_bwd_r_kernel, ptrs, bwd, options)]  # the transposed tl.dot
    if dtype == torch.bfloat16:
        builds += [(k._pair_margin_fwd_kernel, ptrs, dict(common, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n), options),
                   (k._pair_margin_bwd_q_kernel, ptrs, bwd, options)]
        # with row bounds (a fused miner selection), similarity form
        bounded = dict(common, NEGATE=True, KIND=0, POWER=1, ROW_BOUNDS=True)
        bounded_bwd = dict(bounded, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_DO=b.block_do)
        builds += [(k._pair_margin_fwd_kernel, ptrs, dict(bounded, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n), options),
                   (k._pair_margin_bwd_q_kernel, ptrs, bounded_bwd, options),
                   (k._pair_margin_bwd_r_kernel, ptrs, bounded_bwd, options)]
build_all(builds, floats=("near_tol", "pos_margin", "neg_margin", "pos_low", "pos_high", "neg_low", "neg_high",
                          "bound_slack"))
"""


def test_kernels_build_for_sm90_without_a_gpu():
    """The three kernels with the GPU tile sizes (bfloat16 inputs; float32 too for the grad_r
    kernel) through Triton's CUDA pipeline for an H100 target (tests/kernels/sm90.py)."""
    assert "compiled 7" in sm90.run_script(SM90_BUILD)
