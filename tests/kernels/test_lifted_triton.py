"""LiftedStructureLoss on the Triton backend (the "glifted" kernels' per-row LSE over
negatives, kernels/lifted.py's per-positive-pair kernels; _lifted_triton.py) against the
PyTorch path in the interpreter: values and the gradients of both inputs, every kind, with
and without a reference set, ragged shapes over several tiles and D chunks, one class, all
distinct, coincident and near-duplicate rows (against float64), fp16 and bf16."""
import pytest
import torch

pytest.importorskip("triton")

import fastcontrast as fc  # noqa: E402
from fastcontrast.configs import SoftmaxConfig  # noqa: E402
from fastcontrast.kernels import lifted as kernels_lifted  # noqa: E402
from tests.kernels.test_pair_weighted import _run  # noqa: E402  (values and weighted gradients)
from tests.test_metrics import batch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DISTANCES = ("euclidean", "squared_euclidean", "cosine", "dot")


def _compare(x, y, ref, ry, weights, rtol=1e-4, dtype=None, **hyper):
    expected = _run(fc.LiftedStructureLoss(**hyper, backend="torch", reduction="none"), x, y, ref, ry, weights)
    on = [None if t is None else t.to(DEVICE) for t in (x, y, ref, ry, weights)]
    if dtype is not None:
        on = [t.to(dtype) if t is not None and t.is_floating_point() else t for t in on]
    got = _run(fc.LiftedStructureLoss(**hyper, backend="triton", reduction="none"), *on)
    for a, b in zip(got, expected):
        if b is not None:
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a.cpu(), b, rtol=rtol, atol=rtol * 0.1 * max(1.0, b.abs().max().item()))
    return expected


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("dist", DISTANCES)
def test_matches_torch_path(dist, with_ref, gen):
    scale = 0.5 if dist == "dot" else 1.0
    x = torch.randn(21, 10, generator=gen) * scale
    y = torch.randint(0, 4, (21,), generator=gen)
    ref = ry = None
    if with_ref:  # fewer references than anchors: a positive p ≥ B has no row of its own
        ref = torch.randn(18, 10, generator=gen) * scale
        ry = torch.randint(0, 4, (18,), generator=gen)
    weights = torch.rand(21, generator=gen)
    margins = dict(neg_margin=0.8, pos_margin=0.1) if dist in ("cosine", "dot") else dict(neg_margin=3.0)
    values, gx, _ = _compare(x, y, ref, ry, weights, distance=dist, **margins)
    assert (values > 0).sum() >= 5 and gx.abs().sum() > 0  # the hinge is active: the test can fail


@pytest.mark.parametrize("b,n,d", [(37, 45, 40), (40, 9, 17), (5, 33, 3)])
@pytest.mark.parametrize("dist", ["euclidean", "squared_euclidean"])
def test_ragged_shapes(b, n, d, dist, gen):
    # several 16-row tiles with ragged edges, D over two gradient chunks (32 wide) and D < 16;
    # references longer and shorter than the anchors (columns p ≥ B have no anchor row)
    x, ref = torch.randn(b, d, generator=gen), torch.randn(n, d, generator=gen)
    y, ry = torch.randint(0, 3, (b,), generator=gen), torch.randint(0, 3, (n,), generator=gen)
    weights = torch.rand(b, generator=gen)
    margin = (2.5 if dist == "euclidean" else 7.0) * d ** 0.5
    _compare(x, y, ref, ry, weights, distance=dist, neg_margin=margin)
    _compare(x, y, None, None, weights, distance=dist, neg_margin=margin)


def test_single_class_and_all_distinct(gen):
    x = torch.randn(19, 8, generator=gen)
    weights = torch.rand(19, generator=gen)
    for y in (torch.zeros(19, dtype=torch.long), torch.arange(19)):  # no negative / no positive: 0
        for dist in ("euclidean", "squared_euclidean"):
            values, gx, _ = _compare(x, y, None, None, weights, distance=dist, neg_margin=3.0)
            assert values.abs().max() == 0 and gx.abs().max() == 0
    # one anchor without negatives among others
    y = torch.randint(0, 3, (19,), generator=gen)
    ref, ry = torch.randn(5, 8, generator=gen), torch.zeros(5, dtype=torch.long)
    _compare(x, y, ref, ry, weights, neg_margin=3.0)


def test_one_class_has_no_negative_but_others_do(gen):
    # positive pairs whose union of negatives is empty (LSE₀ = 0) next to pairs that have one:
    # the references all carry label 0, anchors 0-4 too (no negative), the rest other labels
    x, ref = torch.randn(12, 6, generator=gen), torch.randn(9, 6, generator=gen)
    y = torch.tensor([0] * 5 + [1, 2] * 3 + [0])
    ry = torch.tensor([0] * 6 + [1, 2, 1])
    weights = torch.rand(12, generator=gen)
    values, gx, gr = _compare(x, y, ref, ry, weights, neg_margin=4.0, pos_margin=0.5)
    assert (values > 0).all() and gr.abs().sum() > 0


LABELS = torch.tensor([0, 0, 1, 1] + [2, 3] * 8)  # rows 0/1 and 2/3 near duplicates, positive pairs


@pytest.mark.parametrize("gap", [0.0, 1e-6, 1e-4])
@pytest.mark.parametrize("dist", ["euclidean", "squared_euclidean"])
def test_near_duplicates_and_coincident_rows_match_float64(dist, gap):
    # rows 1, 3 near 0, 2 (or copies of them: gap 0, where the Euclidean gradient is 0 by
    # convention); row 19 = row 0 with another label (a coincident negative pair), row 18 =
    # row 4 (a coincident positive pair)
    x = batch("random", 20, 6, 3.0, gap, torch.Generator().manual_seed(0))
    if gap == 0.0:
        x[1], x[3] = x[0], x[2]
    x[18] = x[4]
    margin = 20.0 if dist == "euclidean" else 150.0
    weights = torch.rand(20, generator=torch.Generator().manual_seed(1))
    out = {}
    for backend, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        e = x.to(device=DEVICE, dtype=dtype).clone().requires_grad_()
        loss = fc.LiftedStructureLoss(distance=dist, neg_margin=margin, reduction="none", backend=backend)
        values = loss(e, LABELS.to(DEVICE))
        (values * weights.to(DEVICE, dtype)).sum().backward()
        out[backend] = (values.detach().double().cpu(), e.grad.double().cpu())
    (v, g), (v_ref, g_ref) = out["triton"], out["torch"]
    assert (v_ref > 0).all()
    torch.testing.assert_close(v, v_ref, rtol=2e-5, atol=0)
    # relative to the largest row gradient: a row whose terms cancel has a tiny gradient
    err = float((g - g_ref).norm(dim=1).max() / g_ref.norm(dim=1).max())
    assert err < 2e-5, err


def test_coincident_positive_pair_has_zero_euclidean_gradient():
    # two identical rows of one class and one other row: d = 0 on the positive pair, whose
    # own gradient is 0 there (never NaN); only the negatives' part moves them
    x = torch.tensor([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5], [0.0, -1.0, 2.0]], device=DEVICE, requires_grad=True)
    y = torch.tensor([0, 0, 1], device=DEVICE)
    fc.LiftedStructureLoss(neg_margin=5.0, backend="triton")(x, y).backward()
    xt = x.detach().cpu().double().requires_grad_()
    fc.LiftedStructureLoss(neg_margin=5.0, backend="torch")(xt, y.cpu()).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.cpu().double(), xt.grad, rtol=1e-5, atol=1e-6)


def test_positive_pair_pass_alone(gen):
    # kernels/lifted.py forward and backward on their own, given L, against a dense float64
    # evaluation of v_i = Σ_p relu(logaddexp(L_i, L_p) + m_pos + d_ip)² / 2 with L constant
    x, ref = torch.randn(11, 5, generator=gen), torch.randn(14, 5, generator=gen)
    y, ry = torch.randint(0, 3, (11,), generator=gen), torch.randint(0, 3, (14,), generator=gen)
    lse = torch.randn(11, generator=gen)
    lse[3] = float("-inf")  # a row without negatives
    g = torch.rand(11, generator=gen)
    cfg = SoftmaxConfig(kind="euclidean", variant="lifted", self_offset=-1, shift_pos=0.3, shift_neg=-2.0)
    values, n_pos = kernels_lifted.forward(x, ref, y, ry, cfg, lse)
    grad_x, grad_ref, weight = kernels_lifted.backward(g, x, ref, y, ry, cfg, lse)

    xd, rd = x.double().requires_grad_(), ref.double().requires_grad_()
    ld = lse.double().requires_grad_()
    d = torch.cdist(xd, rd)
    pos = y[:, None] == ry[None, :]
    col = torch.cat([ld, torch.full((3,), float("-inf"), dtype=torch.float64)])
    union = torch.logaddexp(ld[:, None].expand(11, 14), col[None, :].expand(11, 14))
    eye = torch.eye(11, 14, dtype=torch.bool)
    union = torch.where(eye, ld[:, None].expand(11, 14), union)
    union = torch.where(torch.isneginf(union), torch.zeros_like(union), union)
    h = torch.where(pos, torch.relu(union + 0.3 + d), torch.zeros_like(d))
    want = (h * h).sum(1) / 2
    (want * g.double()).sum().backward()
    torch.testing.assert_close(values.double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(n_pos, pos.sum(1))
    torch.testing.assert_close(grad_x.double(), xd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ref.double(), rd.grad, rtol=1e-5, atol=1e-5)
    # W_x = ∂L/∂L_x (the chain rule's weight of row x's negatives)
    torch.testing.assert_close(weight.double(), torch.nan_to_num(ld.grad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dist", ["euclidean", "squared_euclidean", "cosine"])
def test_half_precision(dist, dtype, gen):
    # the kernels read 16-bit rows and accumulate in fp32; the PyTorch path on the same rows
    x, ref = torch.randn(19, 8, generator=gen).to(dtype), torch.randn(13, 8, generator=gen).to(dtype)
    y, ry = torch.randint(0, 3, (19,), generator=gen), torch.randint(0, 3, (13,), generator=gen)
    weights = torch.rand(19, generator=gen)
    margin = dict(neg_margin=0.8, pos_margin=0.1) if dist == "cosine" else dict(neg_margin=3.0)
    rtol = 2e-2 if dtype == torch.float16 else 5e-2
    for r, rl in ((None, None), (ref, ry)):
        values, _, _ = _compare(x, y, r, rl, weights, rtol=rtol, distance=dist, **margin)
        assert (values > 0).sum() >= 5


def test_ops_pass_opcheck(gen):
    """Schema, fake kernels and functionalization of both registered ops."""
    x, r = torch.randn(20, 16, generator=gen).to(DEVICE), torch.randn(17, 16, generator=gen).to(DEVICE)
    y = torch.randint(0, 3, (20,), generator=gen).to(DEVICE, torch.int32)
    ry = torch.randint(0, 3, (17,), generator=gen).to(DEVICE, torch.int32)
    unit = torch.tensor(0.5, device=DEVICE)
    lse = torch.randn(20, generator=gen).to(DEVICE)
    grad = torch.rand(20, generator=gen).to(DEVICE)
    no_bounds = torch.empty((0,), device=DEVICE)
    bounds = torch.randn(20, 2, generator=gen).to(DEVICE)
    for b, row_bounds in ((no_bounds, False), (bounds, True)):
        scalars = (b, 2, True, 0.3, 0.1, row_bounds, -1, "ieee", 1e-6)
        torch.library.opcheck(torch.ops.fastcontrast.lifted_fwd.default,
                              (x, r, y, ry, unit, lse, *scalars, 16, 16, 16, 4, 2))
        torch.library.opcheck(torch.ops.fastcontrast.lifted_bwd.default,
                              (grad, x, r, y, ry, unit, lse, *scalars, 16, 16, 16, 32, 4, 2))


SM90_BUILD = r"""
import torch
from fastcontrast.kernels import lifted as k
from tests.kernels.sm90 import build_all

builds = []
for dtype, ty in ((torch.bfloat16, "*bf16"), (torch.float32, "*fp32")):
    b = k.default_blocks(128, dtype, torch.device("cuda"))
    ptrs = {"q_ptr": ty, "r_ptr": ty, "q_lab_ptr": "*i32", "r_lab_ptr": "*i32", "n_pos_ptr": "*i64"}
    options = dict(num_warps=b.num_warps, num_stages=b.num_stages)
    for row_bounds in (False, True):
        common = dict(D=128, KIND=2, NEGATE=True, PRECISION="ieee", ROW_BOUNDS=row_bounds, BLOCK_D=b.block_d)
        bwd = dict(common, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_DO=b.block_do)
        builds += [(k._lifted_fwd_kernel, ptrs, dict(common, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n), options),
                   (k._lifted_bwd_q_kernel, ptrs, bwd, options), (k._lifted_bwd_r_kernel, ptrs, bwd, options)]
build_all(builds, floats=("near_tol", "shift_pos", "bound_slack"))
"""


def test_kernels_build_for_sm90_without_a_gpu():
    """The three kernels with the GPU tile sizes, bfloat16 and float32 inputs, without and with
    row bounds, through Triton's CUDA pipeline for an H100 target (tests/kernels/sm90.py)."""
    from tests.kernels import sm90
    assert "compiled 12" in sm90.run_script(SM90_BUILD)
