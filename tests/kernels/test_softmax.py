"""Similarity-softmax kernels (kernels/softmax.py) against a float64 dense computation.

Without CUDA the kernels run in the Triton interpreter (tests/conftest.py), with 16-wide tiles (forward D steps up to 64, so D ≤ 64 takes the one-step product)
and 32-wide gradient D chunks, so the shapes below span several tiles with ragged edges.
The dense computation is SoftmaxConfig's formulas written out on a full B×N logit matrix:

    supcon  v_i = LSE_{j valid} l_ij − mean_{p∈P_i} l_ip   (0 when P_i is empty)
    ntxent  v_i = Σ_{p∈P_i} softplus(LSE_{n∈Neg_i} l_in − l_ip)
"""
import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from fastcontrast.configs import SoftmaxConfig  # noqa: E402
from fastcontrast.kernels import softmax as kernel  # noqa: E402
from tests.kernels import sm90  # noqa: E402

# relative to the largest magnitude of the expected tensor: (rtol, atol / max|expected|)
TOL = {torch.float32: (1e-4, 1e-5), torch.float16: (2e-2, 5e-3), torch.bfloat16: (5e-2, 2e-2)}
BIG_NEG = -1e30  # stands for −inf in float64 without NaN gradients on empty rows
# Where the kernels run: the interpreter takes CPU tensors; with CUDA present (and so no
# interpreter, see tests/conftest.py) the compiled kernels need CUDA tensors.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


def dense(q, r, q_labels, r_labels, kind, variant, self_offset, tau):
    """Values of SoftmaxConfig's formulas, differentiable in q, r and tau (float64)."""
    if kind == "dot":
        s = q @ r.T
    else:
        sq = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
        if kind == "euclidean":  # zero-safe sqrt: value and gradient 0 at d = 0
            sq = torch.where(sq > 0, sq.clamp_min(1e-300).sqrt(), torch.zeros_like(sq))
        s = -sq
    logits = s / tau
    rows = torch.arange(q.shape[0])[:, None]
    cols = torch.arange(r.shape[0])[None, :]
    valid = torch.ones_like(logits, dtype=torch.bool)
    if self_offset >= 0:
        valid = cols != rows + self_offset
    same = q_labels[:, None] == r_labels[None, :]
    pos, neg = valid & same, valid & ~same
    n_pos = pos.sum(1)
    if variant == "supcon":
        lse = logits.masked_fill(~valid, BIG_NEG).logsumexp(1)
        pos_mean = (logits * pos).sum(1) / n_pos.clamp_min(1)
        values = torch.where(n_pos > 0, lse - pos_mean, torch.zeros_like(lse))
    else:
        lse_neg = logits.masked_fill(~neg, BIG_NEG).logsumexp(1)
        values = (F.softplus(lse_neg[:, None] - logits) * pos).sum(1)
    return values, n_pos


def make_case(B, N, D, labels, self_offset, dtype, seed=0):
    """Inputs of moderate scale (logits of order 1..10). N None: the reference set is q itself."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, D, generator=g) / D ** 0.5 * 1.5).to(dtype)
    if labels == "single":
        ql = torch.zeros(B, dtype=torch.int64)
    elif labels == "distinct":
        ql = torch.arange(B)
    elif labels == "views":  # SimCLR: rows i and i + B/2 are two views of one sample
        ql = torch.arange(B) % (B // 2)
    elif labels == "classes":  # ten classes in random order (NT-Xent with class labels)
        ql = torch.randint(0, 10, (B,), generator=g)
    else:
        ql = torch.randint(0, 4, (B,), generator=g)
        ql[0] = 99  # an anchor without positives
    if N is None:
        if labels == "mixed":
            q[5] = q[3]  # a duplicate pair: distance exactly 0
        return q, q, ql, ql
    r = (torch.randn(N, D, generator=g) / D ** 0.5 * 1.5).to(dtype)
    rl = torch.randint(0, 4, (N,), generator=g)
    if labels != "mixed":
        rl = torch.cat([ql, ql])[:N] if N <= 2 * B else rl
    else:
        r[4] = q[2]  # an anchor–reference duplicate
    if self_offset > 0:  # rows self_offset.. of r are the anchors themselves
        r[self_offset:self_offset + B] = q[: N - self_offset]
        rl[self_offset:self_offset + B] = ql[: N - self_offset]
    return q, r, ql, rl


def check(variant, kind, B, N, D, self_offset, labels="mixed", dtype=torch.float32, tau=0.3,
          precision="ieee", against_torch_path=False, device=DEVICE, tol=None, blocks=None):
    """Run forward and backward on `device`, compare with the float64 dense computation on CPU;
    tol = (rtol, atol as a fraction of max|expected|), by default TOL[dtype]."""
    q, r, ql, rl = make_case(B, N, D, labels, self_offset, dtype)
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=self_offset, precision=precision)
    temperature = torch.tensor(tau)
    grad_values = torch.randn(B, generator=torch.Generator().manual_seed(7)).abs() + 0.5

    on_device = [t.to(device) for t in (q, r, ql, rl, temperature, grad_values)]
    if N is None:
        on_device[1], on_device[3] = on_device[0], on_device[2]  # keep "r is q" on the device too
    dq, dr, dql, drl, dtau, dgrad = on_device
    values, n_pos, saved = kernel.forward(dq, dr, dql, drl, cfg, dtau, blocks)
    grads = kernel.backward(dgrad, dq, dr, dql, drl, cfg, dtau, saved, True, blocks)
    values, n_pos = values.cpu(), n_pos.cpu()
    grad_q, grad_r, grad_tau = (t.cpu() for t in grads)
    assert values.dtype == torch.float32 and n_pos.dtype == torch.int64
    assert grad_q.dtype == dtype and grad_r.dtype == dtype and grad_tau.shape == ()
    for t in (values, grad_q, grad_r, grad_tau):
        assert torch.isfinite(t).all()

    q64 = q.double().requires_grad_()
    r64 = r.double().clone().requires_grad_()  # a separate leaf even when r is q: grads compared apart
    tau64 = temperature.double().requires_grad_()
    want_values, want_n_pos = dense(q64, r64, ql, rl, kind, variant, self_offset, tau64)
    (want_values * grad_values.double()).sum().backward()

    rtol, scale = tol or TOL[dtype]
    for name, got, want in (("values", values, want_values), ("grad_q", grad_q, q64.grad),
                            ("grad_r", grad_r, r64.grad), ("grad_temperature", grad_tau, tau64.grad)):
        want = want.detach()
        atol = scale * max(want.abs().max().item(), 1e-3)
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    assert torch.equal(n_pos, want_n_pos)

    if against_torch_path:  # the PyTorch path implements the same seam
        torch_path = pytest.importorskip("fastcontrast._torch.softmax")
        t_values, t_n_pos, t_saved = torch_path.forward(q, r, ql, rl, cfg, temperature)
        t_grads = torch_path.backward(grad_values, q, r, ql, rl, cfg, temperature, t_saved, True)
        torch.testing.assert_close(values, t_values.float(), rtol=rtol, atol=1e-5)
        assert torch.equal(n_pos, t_n_pos)
        for got, want in zip((grad_q, grad_r, grad_tau), t_grads):
            torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=1e-5 + rtol * want.abs().max().item())
    return values, n_pos, grad_q, grad_r


# variant, kind, B, N (None = the batch itself), D, self_offset
MIXED = [
    ("supcon", "dot", 37, None, 37, 0),
    ("supcon", "sqeuclidean", 21, 45, 20, 5),
    ("supcon", "euclidean", 19, 33, 70, -1),
    ("ntxent", "dot", 23, 40, 70, -1),
    ("ntxent", "sqeuclidean", 37, None, 20, 0),
    ("ntxent", "euclidean", 17, 50, 37, 3),
]


@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", MIXED, ids=lambda v: str(v))
def test_matches_dense(variant, kind, B, N, D, self_offset):
    check(variant, kind, B, N, D, self_offset)


@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", [
    ("supcon", "dot", 37, 50, 64, 6),      # D = the forward's D step (no column mask), self band inside N
    ("ntxent", "dot", 35, None, 64, 0),
    ("supcon", "euclidean", 33, 40, 64, 20),  # the self band runs past N: no self pair for the last rows
], ids=lambda v: str(v))
def test_one_step_forward_and_masked_tiles(variant, kind, B, N, D, self_offset):
    # the forward's one-step tile product (D ≤ its D step: the anchors' rows loaded once), the
    # padded last tile and the self pairs (the column bias and the self compare of the forward)
    assert kernel.default_blocks(D, torch.float32, torch.device(DEVICE)).fwd_d >= D or DEVICE == "cuda"
    check(variant, kind, B, N, D, self_offset)


@pytest.mark.parametrize("fwd_m,fwd_n", [(32, 16), (16, 32)])
@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", [
    ("supcon", "dot", 70, None, 20, 0),
    ("supcon", "dot", 45, 90, 20, 7),        # the self band misaligned with the tiles
    ("ntxent", "dot", 70, None, 20, 0),
    ("ntxent", "dot", 45, 90, 20, 7),
    ("supcon", "sqeuclidean", 45, None, 20, 0),
], ids=lambda v: str(v))
def test_interior_and_edge_tiles(variant, kind, B, N, D, self_offset, fwd_m, fwd_n):
    # anchor blocks taller and shorter than the reference tiles: the forward's interior loop
    # skips each block's self-pair tiles (up to cdiv(fwd_m − 1, fwd_n) + 1 of them, then the
    # ragged last tile), which the edge steps take masked
    blocks = kernel.Blocks(fwd_m=fwd_m, fwd_n=fwd_n, fwd_d=32, bwd_m=16, bwd_n=16, bwd_d=16, block_do=32,
                           num_warps=4)
    check(variant, kind, B, N, D, self_offset, blocks=blocks)


@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", MIXED, ids=lambda v: str(v))
def test_one_pass_and_chunked_backward(variant, kind, B, N, D, self_offset):
    # the one-pass backward (each tile once, grad_q added in program order) with whole rows in
    # registers (block_do ≥ D) and in 16-wide D chunks, and the two per-chunk kernels: each
    # against the dense computation and against each other; the one-pass result bitwise
    # reproducible
    def blocks(block_do, one_pass=True):
        return kernel.Blocks(fwd_m=16, fwd_n=16, fwd_d=16, bwd_m=16, bwd_n=16, bwd_d=16, block_do=block_do,
                             num_warps=4, one_pass=one_pass)

    whole = check(variant, kind, B, N, D, self_offset, blocks=blocks(128))
    chunked = check(variant, kind, B, N, D, self_offset, blocks=blocks(16))
    two_pass = check(variant, kind, B, N, D, self_offset, blocks=blocks(16, one_pass=False))
    again = check(variant, kind, B, N, D, self_offset, blocks=blocks(128))
    assert all(torch.equal(a, b) for a, b in zip(whole, again))
    for other in (chunked, two_pass):
        for a, b in zip(whole[2:], other[2:]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(b.abs().max().item(), 1e-3))


@pytest.mark.parametrize("variant,kind,B,N,D,self_offset", [MIXED[1], MIXED[5]], ids=lambda v: str(v))
def test_matches_torch_path(variant, kind, B, N, D, self_offset):
    check(variant, kind, B, N, D, self_offset, against_torch_path=True)


@pytest.mark.parametrize("variant,kind", [("supcon", "dot"), ("ntxent", "euclidean")])
def test_single_class(variant, kind):
    values, n_pos, grad_q, grad_r = check(variant, kind, 20, None, 16, 0, labels="single")
    assert (n_pos == 19).all()
    if variant == "ntxent":  # no negatives anywhere: every value and gradient is an exact 0
        assert (values == 0).all() and (grad_q == 0).all() and (grad_r == 0).all()


@pytest.mark.parametrize("variant,kind", [("supcon", "euclidean"), ("ntxent", "sqeuclidean")])
def test_all_distinct_labels(variant, kind):
    values, n_pos, grad_q, grad_r = check(variant, kind, 20, None, 16, 0, labels="distinct")
    assert (n_pos == 0).all() and (values == 0).all() and (grad_q == 0).all() and (grad_r == 0).all()


@pytest.mark.parametrize("dtype,kind,N,self_offset", [
    (torch.float32, "dot", None, 0), (torch.float16, "sqeuclidean", 70, 9), (torch.bfloat16, "euclidean", 60, -1)])
def test_ntxent_class_labels(dtype, kind, N, self_offset):
    # the positive pass over label-sorted rows: anchor blocks spanning several labels, label
    # ranges starting and ending inside reference tiles, self pairs scattered in sorted order
    check("ntxent", kind, 53, N, 20, self_offset, labels="classes", dtype=dtype)


def test_ntxent_masked_refs_with_self_pairs():
    q, r, ql, rl = make_case(37, None, 12, "classes", 0, torch.float32, seed=5)
    drop = torch.zeros(37, dtype=torch.bool)
    drop[[1, 8, 20, 36]] = True
    cfg = SoftmaxConfig(kind="dot", variant="ntxent", self_offset=0, masked_refs=True)
    q, ql, drop, tau = on_device(q, ql, drop, torch.tensor(0.2))
    values, n_pos, _ = kernel.forward(q, q, ql, torch.where(drop, -1, ql), cfg, tau)
    q64 = q.cpu().double()
    logits = q64 @ q64[~drop.cpu()].T / 0.2
    cols = torch.arange(37)[~drop.cpu()]
    same = ql.cpu()[:, None] == ql.cpu()[~drop.cpu()][None, :]
    valid = cols[None, :] != torch.arange(37)[:, None]
    lse_neg = logits.masked_fill(~(valid & ~same), BIG_NEG).logsumexp(1)
    want = (F.softplus(lse_neg[:, None] - logits) * (valid & same)).sum(1)
    torch.testing.assert_close(values.cpu().double(), want, rtol=1e-4, atol=1e-5)
    assert torch.equal(n_pos.cpu(), (valid & same).sum(1))


def test_simclr_views():
    _, n_pos, _, _ = check("ntxent", "dot", 26, None, 24, 0, labels="views", tau=0.1)
    assert (n_pos == 1).all()


@pytest.mark.parametrize("dtype,variant,kind", [(torch.float16, "supcon", "dot"),
                                                (torch.bfloat16, "ntxent", "euclidean")])
def test_half_precision(dtype, variant, kind):
    check(variant, kind, 21, 30, 40, -1, dtype=dtype)


def test_large_logits_stay_finite():
    # unnormalized inputs and a small temperature: logits in the hundreds
    g = torch.Generator().manual_seed(3)
    q = torch.randn(18, 24, generator=g) * 3
    ql = torch.randint(0, 3, (18,), generator=g)
    dq, dql, tau, ones = on_device(q, ql, torch.tensor(0.05), torch.ones(18))
    for variant in ("supcon", "ntxent"):
        cfg = SoftmaxConfig(kind="dot", variant=variant)
        values, _, saved = kernel.forward(dq, dq, dql, dql, cfg, tau)
        grads = kernel.backward(ones, dq, dq, dql, dql, cfg, tau, saved, True)
        want, _ = dense(q.double(), q.double(), ql, ql, "dot", variant, 0, torch.tensor(0.05).double())
        torch.testing.assert_close(values.cpu().double(), want, rtol=1e-5, atol=1e-3)
        assert all(torch.isfinite(t).all() for t in grads)


def test_deterministic_and_no_temperature_grad():
    q, r, ql, rl = on_device(*make_case(21, 45, 20, "mixed", 5, torch.float32))
    cfg = SoftmaxConfig(kind="euclidean", variant="ntxent", self_offset=5)
    tau, g = on_device(torch.tensor(0.2), torch.ones(21))
    _, _, saved = kernel.forward(q, r, ql, rl, cfg, tau)
    first = kernel.backward(g, q, r, ql, rl, cfg, tau, saved, False)
    second = kernel.backward(g, q, r, ql, rl, cfg, tau, saved, True)
    assert first[2] is None
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("variant,kind", [("supcon", "dot"), ("supcon", "euclidean"), ("ntxent", "sqeuclidean"),
                                          ("dcl", "dot")])
def test_masked_reference_columns_are_absent(variant, kind, one_pass):
    """masked_refs: a reference with a negative label is left out of every set — the same
    values and gradients as the kernels on the other references alone, and a zero gradient
    for the masked rows (N-pair's fixed-size column set). Masked columns sit in the forward's
    interior tiles (0, 5, 16, 17) and in its ragged last tile; both backward paths."""
    q, r, ql, rl = make_case(19, 37, 12, "mixed", -1, torch.float32, seed=3)
    drop = torch.zeros(37, dtype=torch.bool)
    drop[[0, 5, 16, 17, 30, 36]] = True  # in several tiles, the first and the last column among them
    g = torch.rand(19, generator=torch.Generator().manual_seed(4))
    tau = torch.tensor(0.3)
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=-1)
    q, r, ql, rl, g, tau, drop = on_device(q, r, ql, rl, g, tau, drop)
    masked = dict(cfg=SoftmaxConfig(kind=kind, variant=variant, self_offset=-1, masked_refs=True))
    blocks = kernel.Blocks(fwd_m=16, fwd_n=16, fwd_d=16, bwd_m=16, bwd_n=16, bwd_d=16, block_do=32, num_warps=4,
                           one_pass=one_pass)
    values, n_pos, saved = kernel.forward(q, r, ql, torch.where(drop, -1, rl), masked["cfg"], tau, blocks)
    grad_q, grad_r, grad_t = kernel.backward(g, q, r, ql, torch.where(drop, -1, rl), masked["cfg"], tau, saved, True,
                                             blocks)
    keep = ~drop
    want_v, want_n, want_saved = kernel.forward(q, r[keep], ql, rl[keep], cfg, tau, blocks)
    want_q, want_r, want_t = kernel.backward(g, q, r[keep], ql, rl[keep], cfg, tau, want_saved, True, blocks)
    for got, want in ((values, want_v), (grad_q, want_q), (grad_r[keep], want_r), (grad_t, want_t)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(n_pos, want_n)
    assert torch.equal(grad_r[drop], torch.zeros_like(grad_r[drop]))


def test_registered_ops_and_bad_inputs():
    assert hasattr(torch.ops.fastcontrast, "softmax_fwd") and hasattr(torch.ops.fastcontrast, "softmax_bwd")
    q, labels = on_device(torch.randn(4, 8, dtype=torch.float64), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="float64"):
        kernel.forward(q, q, labels, labels, SoftmaxConfig(), torch.tensor(0.1))
    with pytest.raises(ValueError, match="variant"):
        kernel.forward(q.float(), q.float(), labels, labels, SoftmaxConfig(variant="npair"), torch.tensor(0.1))


@pytest.mark.parametrize("variant,kind,B,N,labels,self_offset", [
    ("supcon", "dot", 20, 20, "pairs", -1),        # InfoNCE/CLIP: labels = pair index
    ("ntxent", "euclidean", 19, 27, "mixed", -1),
    ("supcon", "sqeuclidean", 21, None, "mixed", 0),
], ids=lambda v: str(v))
def test_symmetric_matches_dense(variant, kind, B, N, labels, self_offset):
    # both directions, Σ_i g_i v_i(q→r) + Σ_j g'_j v_j(r→q), in one backward pass
    if labels == "pairs":
        g = torch.Generator().manual_seed(4)
        q, r = torch.randn(B, 24, generator=g) * 0.3, torch.randn(N, 24, generator=g) * 0.3
        ql = rl = torch.arange(B)
    else:
        q, r, ql, rl = make_case(B, N, 24, labels, self_offset, torch.float32)
    cfg = SoftmaxConfig(kind=kind, variant=variant, self_offset=self_offset)
    tau = torch.tensor(0.25)
    g_q = torch.rand(B, generator=torch.Generator().manual_seed(1)) + 0.5
    g_r = torch.rand(r.shape[0], generator=torch.Generator().manual_seed(2)) + 0.5
    dq, dr, dql, drl, dtau, dg_q, dg_r = on_device(q, r, ql, rl, tau, g_q, g_r)
    v_q, n_q, v_r, n_r, saved = kernel.forward_symmetric(dq, dr, dql, drl, cfg, dtau)
    grads = kernel.backward_symmetric(dg_q, dg_r, dq, dr, dql, drl, cfg, dtau, saved, True)
    v_q, n_q, v_r, n_r = (t.cpu() for t in (v_q, n_q, v_r, n_r))
    grad_q, grad_r, grad_tau = (t.cpu() for t in grads)

    q64, r64 = q.double().requires_grad_(), r.double().clone().requires_grad_()
    tau64 = tau.double().requires_grad_()
    want_q, want_n_q = dense(q64, r64, ql, rl, kind, variant, self_offset, tau64)
    want_r, want_n_r = dense(r64, q64, rl, ql, kind, variant, self_offset, tau64)
    ((want_q * g_q.double()).sum() + (want_r * g_r.double()).sum()).backward()
    for got, want in ((v_q, want_q), (v_r, want_r), (grad_q, q64.grad), (grad_r, r64.grad), (grad_tau, tau64.grad)):
        want = want.detach()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * max(want.abs().max().item(), 1e-3))
    assert torch.equal(n_q, want_n_q) and torch.equal(n_r, want_n_r)
    with pytest.raises(ValueError, match="self_offset"):
        kernel.forward_symmetric(dq, dr, dql, drl, SoftmaxConfig(kind=kind, variant=variant, self_offset=2), dtau)


def test_ops_pass_opcheck():
    # schema, fake (meta) kernels and autograd/functionalization registration of both ops
    q, labels, tau, ones = on_device(torch.randn(20, 16), torch.randint(0, 3, (20,)), torch.tensor(0.3),
                                     torch.ones(20))
    no_bounds = tau.new_empty((0,))
    fwd_args = (q, q, labels, labels, tau, tau, no_bounds, 0, 0, 0, "ieee", 1e-6, False, False, 16, 16, 16, 4, 2)
    torch.library.opcheck(torch.ops.fastcontrast.softmax_fwd.default, fwd_args)
    _, _, lse, aux = torch.ops.fastcontrast.softmax_fwd(*fwd_args)
    bwd_args = (ones, ones, q, q, labels, labels, tau, tau, lse, aux, lse, aux, no_bounds, 0, 0, 0, "ieee", 1e-6,
                False, True, False, False, False, 16, 16, 16, 32, 4, 2)
    for one_pass in (True, False):
        torch.library.opcheck(torch.ops.fastcontrast.softmax_bwd.default, (*bwd_args, one_pass))


SM90_BUILD = r"""
import torch
from fastcontrast.kernels import softmax as k
from tests.kernels.sm90 import build_all

b = k.default_blocks(128, torch.bfloat16, torch.device("cuda"))
ptrs = {"q_ptr": "*bf16", "r_ptr": "*bf16", "grad_q_ptr": "*bf16", "grad_r_ptr": "*bf16",
        "q_lab_ptr": "*i32", "r_lab_ptr": "*i32", "r_count_ptr": "*i32", "label_start_ptr": "*i32",
        "order_ptr": "*i32", "n_pos_ptr": "*i64"}
options = dict(num_warps=b.num_warps, num_stages=b.num_stages)
common = dict(D=128, KIND=2, VARIANT=1, PRECISION="ieee")
bwd = dict(common, SYMMETRIC=True, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_D=b.bwd_d, BLOCK_DO=b.block_do,
           ROW_BOUNDS=False, MASKED_REFS=False)
# the pair-weighted variant with row bounds (a fused Multi-Similarity selection)
ms = dict(D=128, KIND=0, VARIANT=4, PRECISION="ieee", ROW_BOUNDS=True, MASKED_REFS=True)
ms_bwd = dict(ms, SYMMETRIC=False, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_D=b.bwd_d, BLOCK_DO=b.block_do)
build_all([(k._softmax_fwd_kernel, ptrs, dict(common, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, BLOCK_D=b.fwd_d,
                                              MASKED_REFS=False), options),
           (k._softmax_bwd_q_kernel, ptrs, dict(bwd, TAU_GRAD=True, BIAS_GRAD=False), options),
           (k._softmax_bwd_r_kernel, ptrs, bwd, options),
           (k._softmax_bwd_kernel, dict(ptrs, turn_ptr="*i32"), dict(bwd, TAU_GRAD=True, BIAS_GRAD=False), options),
           # the dot-kind supcon forward reads the per-label reference sums; with masked-out columns
           (k._softmax_fwd_kernel, ptrs, dict(common, KIND=0, VARIANT=0, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n,
                                              BLOCK_D=b.fwd_d, MASKED_REFS=True), options),
           (k._label_sums_kernel, ptrs, dict(BLOCK_R=16, BLOCK_D=128), options),
           (k._softmax_weighted_fwd_kernel, ptrs, dict(ms, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, BLOCK_D=b.fwd_d),
            options),
           (k._softmax_bwd_q_kernel, ptrs, dict(ms_bwd, TAU_GRAD=False, BIAS_GRAD=False), options),
           (k._softmax_bwd_r_kernel, ptrs, ms_bwd, options),
           (k._softmax_bwd_kernel, dict(ptrs, turn_ptr="*i32"), dict(ms_bwd, TAU_GRAD=False, BIAS_GRAD=False),
            options)])
"""


def test_kernels_build_for_sm90_without_a_gpu():
    # The interpreter skips GPU-only checks (dot shapes, layouts, types); compiling for an H100
    # target catches them on CPU (tests/kernels/sm90.py).
    assert "compiled 10" in sm90.run_script(SM90_BUILD)


class _SelfSoftmaxLoss(torch.autograd.Function):
    """The smallest Function over the seam for the no-reference case (r is q). The shared
    tensor is passed once: dynamo refuses an autograd.Function given one tensor twice."""

    @staticmethod
    def forward(ctx, q, labels, temperature, cfg):
        values, _, saved = kernel.forward(q, q, labels, labels, cfg, temperature)
        ctx.save_for_backward(q, labels, temperature, *saved)
        ctx.cfg = cfg
        return values

    @staticmethod
    def backward(ctx, grad_values):
        q, labels, temperature, *saved = ctx.saved_tensors
        grad_q, grad_r, grad_tau = kernel.backward(grad_values, q, q, labels, labels, ctx.cfg, temperature,
                                                   tuple(saved), ctx.needs_input_grad[2])
        return grad_q + grad_r, None, grad_tau, None


def test_compiled_loss_aot_eager():
    # Under the interpreter the ops are opaque custom ops with fake kernels: torch.compile traces
    # the loss (forward and the backward graph) in one graph around them; aot_eager needs no
    # C++ compiler. The eager and compiled steps must agree. (On CUDA: the triton_op path.)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(5)
    x, labels = on_device(torch.randn(20, 12, generator=g), torch.randint(0, 4, (20,), generator=g))
    cfg = SoftmaxConfig(kind="dot", variant="supcon")

    def loss_fn(w, log_tau):
        z = F.normalize(x @ w, dim=1)
        return _SelfSoftmaxLoss.apply(z, labels, log_tau.exp(), cfg).mean()

    w0 = torch.randn(12, 16, generator=g).to(DEVICE)
    results = []
    for fn in (loss_fn, torch.compile(loss_fn, backend="aot_eager", fullgraph=True)):
        w = w0.clone().requires_grad_()
        log_tau = torch.tensor(-1.0, device=DEVICE, requires_grad=True)
        loss = fn(w, log_tau)
        loss.backward()
        results.append((loss.detach(), w.grad, log_tau.grad))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert results[0][2] != 0
