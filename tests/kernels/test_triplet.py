"""Triplet kernels (kernels/triplet.py) under the interpreter, against a float64 dense
B×N×N statement of configs.TripletConfig written here, and against the PyTorch path and the
package's dense reference when those are importable.

Each case runs forward + backward once and checks values, counts, nonzero, both gradients
and (batch_hard) the selected indices. Shapes are small and odd: the interpreter costs about
0.3 ms per Triton op per program. Also here: the public loss on both backends, a
torch.compile'd training step (aot_eager) and a compile of every kernel for sm_90.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

triton = pytest.importorskip("triton")

from fastcontrast.configs import TripletConfig  # noqa: E402
from fastcontrast.kernels import triplet as kt  # noqa: E402
from tests.conftest import TOL, assert_close  # noqa: E402
from tests.kernels import sm90  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------
# float64 dense statement of TripletConfig
# ------------------------------------------------------------------------------------------
def dense_distance(x, y, kind):
    if kind == "dot":
        return x @ y.T
    if x.shape[0] * y.shape[0] * x.shape[1] <= 1 << 22:
        sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    else:  # large GPU-test shapes (integer data: the expansion is exact in float64)
        sq = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    if kind == "sqeuclidean":
        return sq
    nz = sq > 0
    return torch.where(nz, torch.where(nz, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def dense_triplet(q, r, ql, rl, cfg):
    """-> (values, counts, nonzero, p_idx, n_idx); indices only for batch_hard."""
    d = dense_distance(q, r, cfg.kind)
    d_rr = dense_distance(r, r, cfg.kind) if cfg.swap else None
    if cfg.negate:
        d = -d
        d_rr = None if d_rr is None else -d_rr
    B, N = d.shape
    same = ql[:, None] == rl[None, :]
    not_self = torch.ones_like(same)
    if cfg.self_offset >= 0:
        not_self = torch.arange(N)[None, :] != (torch.arange(B) + cfg.self_offset)[:, None]
    pos, neg = same & not_self, ~same
    m, mm = cfg.margin, cfg.miner_margin
    zero = torch.zeros((), dtype=d.dtype)
    term = F.softplus if cfg.smooth else F.relu
    if cfg.mining == "batch_hard":
        has_p, has_n = pos.any(1), neg.any(1)
        p_idx = torch.where(pos, d, -torch.inf).argmax(1)            # first maximum: lowest index
        n_idx = torch.where(neg, d, torch.inf).argmin(1)
        if cfg.hard_fallback == "tfa":
            valid = torch.ones_like(has_p)
            n_idx = torch.where(has_n, n_idx, d.argmax(1))
        else:
            valid = has_p & has_n
        d_ap = torch.where(has_p, d.gather(1, p_idx[:, None])[:, 0], zero)
        d_an = d.gather(1, n_idx[:, None])[:, 0]
        if cfg.swap:
            d_an = torch.where(has_p, torch.minimum(d_an, d_rr[p_idx, n_idx]), d_an)
        t = torch.where(valid, term(d_ap - d_an + m), zero)
        return (t, valid.long(), (valid & (t > 0)).long(),
                torch.where(valid & has_p, p_idx, -1), torch.where(valid, n_idx, -1))
    x, z = d[:, :, None], d[:, None, :]
    if cfg.mining == "semihard_tfa":
        above = neg[:, None, :] & (z > x)
        nearest = torch.where(above, z, torch.inf).argmin(2)                # lowest index on ties
        farthest = torch.where(neg, d, -torch.inf).argmax(1)[:, None].expand(B, N)
        n_idx = torch.where(above.any(2), nearest, farthest)
        d_an = d.gather(1, n_idx)
        if cfg.swap:
            d_an = torch.minimum(d_an, d_rr[torch.arange(N)[None, :].expand(B, N), n_idx])
        d_an = torch.where(neg.any(1)[:, None], d_an, zero)
        t = torch.where(pos, term(d - d_an + m), zero)
        return t.sum(1), pos.sum(1), (pos & (t > 0)).sum(1), None, None
    gap = z - x
    kept = {"batch_all": torch.ones_like(gap, dtype=torch.bool), "all": gap <= mm,
            "hard": (gap <= mm) & (gap <= 0), "semihard": (gap > 0) & (gap <= mm), "easy": gap > mm}[cfg.mining]
    kept = kept & pos[:, :, None] & neg[:, None, :]
    e = torch.minimum(z, d_rr[None]) if cfg.swap else z
    t = torch.where(kept, term(x - e + m), zero)
    return t.sum((1, 2)), kept.sum((1, 2)), (kept & (t > 0)).sum((1, 2)), None, None


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def make_data(B, D, N=None, classes=3, style="randn", self_offset=0, seed=0):
    """(q, r, q_labels, r_labels, same): same=True means r is q (self pairs at offset 0).
    style "dup": duplicate rows (zero distances, within and across labels);
    "int": small integer entries (many exactly tied distances)."""
    g = torch.Generator().manual_seed(seed)
    if style in ("int", "wide-int"):
        span = 2 if style == "int" else 8
        draw = lambda n: torch.randint(-span, span + 1, (n, D), generator=g).float()  # noqa: E731
    else:
        draw = lambda n: torch.randn(n, D, generator=g)  # noqa: E731
    if N is None:
        q = draw(B)
        ql = torch.randint(0, classes, (B,), generator=g)
        if style == "dup":
            q[5] = q[2]
            ql[5] = ql[2]
            q[7] = q[1]
            ql[7] = (ql[1] + 1) % max(classes, 2)
        return q, q, ql, ql, True
    r = draw(N)
    rl = torch.randint(0, classes, (N,), generator=g)
    if self_offset >= 0:  # the queries are rows self_offset.. of the references
        q, ql = r[self_offset:self_offset + B].clone(), rl[self_offset:self_offset + B].clone()
    else:
        q, ql = draw(B), torch.randint(0, classes, (B,), generator=g)
    if style == "dup":
        q[1] = r[4]
    return q, r, ql, rl, False


def run_kernels(q, r, ql, rl, cfg, same, grad, dtype=torch.float32, unit_grad=False):
    qk = q.to(DEVICE, dtype)
    rk = qk if same else r.to(DEVICE, dtype)
    qlk, rlk = ql.to(DEVICE), (ql if same else rl).to(DEVICE)
    values, counts, nonzero, saved = kt.forward(qk, rk, qlk, rlk, cfg, unit_grad=unit_grad)
    gq, gr = kt.backward(grad.to(DEVICE), qk, rk, qlk, rlk, cfg, saved)
    assert gq.dtype == dtype and gr.dtype == dtype
    assert values.dtype == torch.float32 and counts.dtype == torch.int64 and nonzero.dtype == torch.int64
    return values, counts, nonzero, saved, gq, gr


def run_dense(q, r, ql, rl, cfg, same, grad):
    qd = q.double().requires_grad_()
    rd = qd if same else r.double().requires_grad_()
    out = dense_triplet(qd, rd, ql, ql if same else rl, cfg)
    (out[0] * grad.double()).sum().backward()
    return out, qd.grad, (None if same else rd.grad)


def check(q, r, ql, rl, cfg, same, dtype=torch.float32, seed=0, tol=None):
    grad = torch.rand(q.shape[0], generator=torch.Generator().manual_seed(seed + 7)) + 0.5
    if dtype != torch.float32:  # the reference sees exactly the rounded inputs
        q, r = q.to(dtype).double(), r.to(dtype).double()
    values, counts, nonzero, saved, gq, gr = run_kernels(q, r, ql, rl, cfg, same, grad, dtype)
    (v_ref, c_ref, nz_ref, p_ref, n_ref), gq_ref, gr_ref = run_dense(q, r, ql, rl, cfg, same, grad)
    rtol, atol = tol or TOL[dtype]
    assert torch.equal(counts.cpu(), c_ref), (counts, c_ref)
    assert torch.equal(nonzero.cpu(), nz_ref), (nonzero, nz_ref)
    assert_close(values, v_ref, rtol=rtol, atol=atol * max(1.0, float(v_ref.detach().abs().max())), msg="values")
    grads = [(gq.float() + gr.float(), gq_ref)] if same else [(gq, gq_ref), (gr, gr_ref)]
    for got, want in grads:
        assert_close(got, want, rtol=rtol, atol=atol * max(1.0, float(want.abs().max())), msg="gradient")
    if cfg.mining == "batch_hard":
        assert torch.equal(saved[0].cpu(), p_ref) and torch.equal(saved[1].cpu(), n_ref)
    return values, gq, gr


# ------------------------------------------------------------------------------------------
# the matrix: every mining mode × a couple of kinds, swap, smooth, ties, duplicates, N ≠ B
# ------------------------------------------------------------------------------------------
CASES = [
    # id, config fields, make_data arguments
    ("batch_all-euclid-dup", dict(mining="batch_all", margin=0.4), dict(B=16, D=7, style="dup")),
    ("batch_all-dot-negate-ref", dict(mining="batch_all", kind="dot", negate=True, margin=0.3, self_offset=-1),
     dict(B=9, D=5, N=14, self_offset=-1)),
    ("all-sqeuclid-offset", dict(mining="all", kind="sqeuclidean", margin=1.0, miner_margin=1.5, self_offset=3),
     dict(B=10, D=9, N=17, self_offset=3)),
    ("hard-euclid-int-ties", dict(mining="hard", margin=0.5, miner_margin=0.2), dict(B=15, D=3, style="int")),
    ("hard-dot-negate", dict(mining="hard", kind="dot", negate=True, margin=0.5, miner_margin=1.0),
     dict(B=13, D=11)),
    ("semihard-euclid-dup", dict(mining="semihard", margin=0.4, miner_margin=0.8), dict(B=16, D=7, style="dup")),
    ("semihard-sqeuclid-int-ties", dict(mining="semihard", kind="sqeuclidean", margin=1.0, miner_margin=2.0),
     dict(B=14, D=3, style="int")),
    ("easy-euclid-ref", dict(mining="easy", margin=0.6, miner_margin=0.3, self_offset=-1),
     dict(B=8, D=6, N=13, self_offset=-1)),
    ("easy-dot-negate", dict(mining="easy", kind="dot", negate=True, margin=0.5, miner_margin=0.5),
     dict(B=12, D=5)),
    ("tfa-euclid-int-ties", dict(mining="semihard_tfa", margin=0.7), dict(B=15, D=3, style="int")),
    ("tfa-dot-negate-offset", dict(mining="semihard_tfa", kind="dot", negate=True, margin=0.5, self_offset=2),
     dict(B=9, D=7, N=13, self_offset=2)),
    ("tfa-sqeuclid-smooth", dict(mining="semihard_tfa", kind="sqeuclidean", smooth=True, margin=1.0),
     dict(B=13, D=5, style="dup")),
    ("tfa-swap-euclid-dup-ref", dict(mining="semihard_tfa", swap=True, margin=0.6, self_offset=-1),
     dict(B=9, D=5, N=12, style="dup", self_offset=-1)),
    ("tfa-swap-smooth-sqeuclid-int-ties", dict(mining="semihard_tfa", kind="sqeuclidean", swap=True, smooth=True,
                                               margin=2.0), dict(B=12, D=3, style="int")),
    ("batch_hard-drop-euclid-int-ties", dict(mining="batch_hard", margin=0.5), dict(B=17, D=3, style="int")),
    ("batch_hard-tfa-sqeuclid-ref", dict(mining="batch_hard", kind="sqeuclidean", hard_fallback="tfa", margin=1.0,
                                         self_offset=-1), dict(B=11, D=5, N=7, classes=4, self_offset=-1)),
    ("batch_hard-swap-smooth-dot", dict(mining="batch_hard", kind="dot", negate=True, swap=True, smooth=True),
     dict(B=14, D=9)),
    ("batch_hard-tfa-swap-euclid-dup", dict(mining="batch_hard", hard_fallback="tfa", swap=True, margin=0.3),
     dict(B=12, D=5, classes=4, style="dup")),
    ("smooth-batch_all-sqeuclid", dict(mining="batch_all", kind="sqeuclidean", smooth=True, margin=0.5),
     dict(B=12, D=5)),
    ("smooth-semihard-euclid-ref", dict(mining="semihard", smooth=True, margin=0.3, miner_margin=0.6,
                                        self_offset=-1), dict(B=8, D=7, N=11, self_offset=-1)),
    ("swap-batch_all-euclid-dup", dict(mining="batch_all", swap=True, margin=0.4), dict(B=12, D=5, style="dup")),
    ("swap-smooth-all-dot-offset", dict(mining="all", kind="dot", negate=True, swap=True, smooth=True, margin=0.2,
                                        miner_margin=0.5, self_offset=1), dict(B=7, D=6, N=10, self_offset=1)),
    ("swap-hard-sqeuclid-int-ties", dict(mining="hard", kind="sqeuclidean", swap=True, margin=2.0,
                                         miner_margin=1.0), dict(B=10, D=3, style="int")),
]


@pytest.mark.parametrize("fields,data", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_dense(fields, data):
    cfg = TripletConfig(**fields)
    q, r, ql, rl, same = make_data(**data)
    check(q, r, ql, rl, cfg, same)


@pytest.mark.parametrize("mining", ["batch_all", "semihard_tfa", "batch_hard"])
def test_single_class_and_all_distinct(mining):
    """One label (no negatives) and all labels distinct (no positives): anchors without
    positives or negatives, in one batch each."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(9, 5, generator=g)
    for labels in (torch.zeros(9, dtype=torch.long), torch.arange(9)):
        for fallback in (("drop", "tfa") if mining == "batch_hard" else ("drop",)):
            cfg = TripletConfig(mining=mining, margin=0.5, hard_fallback=fallback)
            check(q, q, labels, labels, cfg, True)


def test_multiple_chunks_and_tiles(monkeypatch):
    """Chunks of 3 anchors (ragged last chunk), N = 80 (several distance tiles and
    scan blocks, a ragged last one), D = 70 (several BLOCK_D steps)."""
    monkeypatch.setattr(kt, "CHUNK_ELEMENTS", 3 * 80)
    monkeypatch.setattr(kt, "MIN_CHUNK_ROWS", 1)
    # integer data and squared distances: every distance and comparison is exact in fp32, so
    # thousands of triplets cannot flip across a filter boundary by rounding
    q, r, ql, rl, same = make_data(B=10, D=70, N=80, classes=2, style="wide-int", self_offset=-1)
    for mining in ("semihard", "semihard_tfa", "batch_hard"):
        cfg = TripletConfig(mining=mining, kind="sqeuclidean", margin=150.0, miner_margin=200.0, self_offset=-1)
        check(q, r, ql, rl, cfg, same)
    q, r, ql, rl, same = make_data(B=4, D=20, N=40, classes=2, style="wide-int", self_offset=-1)
    check(q, r, ql, rl, TripletConfig(mining="all", kind="sqeuclidean", swap=True, smooth=True, margin=10.0,
                                      miner_margin=40.0, self_offset=-1), same)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    q, r, ql, rl, same = make_data(B=12, D=9, style="dup")
    check(q, r, ql, rl, TripletConfig(mining="batch_all", margin=0.5), same, dtype=dtype)


def test_deterministic_and_precision_keyword():
    q, r, ql, rl, same = make_data(B=13, D=5)
    cfg = TripletConfig(mining="semihard_tfa", margin=0.5, precision="tf32")
    grad = torch.ones(13)
    first = run_kernels(q, r, ql, rl, cfg, same, grad)
    second = run_kernels(q, r, ql, rl, cfg, same, grad)
    for a, b in zip(first[:3] + first[4:], second[:3] + second[4:]):
        assert torch.equal(a, b)


def test_bad_configs_are_refused():
    q = torch.randn(4, 3)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(TypeError, match="float64"):
        kt.forward(q.double(), q.double(), labels, labels, TripletConfig())
    with pytest.raises(ValueError, match="mining"):
        kt.forward(q, q, labels, labels, TripletConfig(mining="hardest"))
    with pytest.raises(ValueError, match="hard_fallback"):
        kt.forward(q, q, labels, labels, TripletConfig(mining="batch_hard", hard_fallback="zero"))


# ------------------------------------------------------------------------------------------
# the other implementations of the same seam, when present
# ------------------------------------------------------------------------------------------
SEAM_CASES = [
    dict(mining="semihard", margin=0.4, miner_margin=0.8),
    dict(mining="semihard_tfa", kind="sqeuclidean", margin=1.0),
    dict(mining="semihard_tfa", swap=True, margin=0.5),
    dict(mining="batch_hard", kind="dot", negate=True, swap=True, hard_fallback="tfa"),
    dict(mining="all", swap=True, smooth=True, margin=0.3, miner_margin=0.5),
]


def _kernels_match_torch_path(cfg, seed, grad_seed):
    """The kernels against the PyTorch path on a batch with duplicates (B = 14, D = 6), with a
    per-anchor upstream gradient: equal counts and nonzero, close values and gradients.
    Returns (q, r, q_labels, r_labels, counts, values, nonzero) of the kernels."""
    torch_path = pytest.importorskip("fastcontrast._torch.triplet")
    q, r, ql, rl, same = make_data(B=14, D=6, style="dup", seed=seed)
    grad = torch.rand(14, generator=torch.Generator().manual_seed(grad_seed)) + 0.5
    values, counts, nonzero, saved, gq, gr = run_kernels(q, r, ql, rl, cfg, same, grad)
    t_values, t_counts, t_nonzero, t_saved = torch_path.forward(q, r, ql, rl, cfg)
    t_gq, t_gr = torch_path.backward(grad, q, r, ql, rl, cfg, t_saved)
    assert torch.equal(counts.cpu(), t_counts) and torch.equal(nonzero.cpu(), t_nonzero)
    assert_close(values, t_values, torch.float32)
    assert_close(gq.float() + gr.float(), t_gq + t_gr, torch.float32)
    return q, r, ql, rl, counts, values, nonzero


@pytest.mark.parametrize("fields", SEAM_CASES, ids=[f"{c['mining']}{'-swap' if c.get('swap') else ''}" for c in SEAM_CASES])
def test_matches_torch_path_and_reference(fields):
    reference = pytest.importorskip("fastcontrast.reference.triplet")
    cfg = TripletConfig(**fields)
    q, r, ql, rl, counts, values, _ = _kernels_match_torch_path(cfg, seed=5, grad_seed=1)
    ref = reference.triplet_terms(q.double(), r.double(), ql, rl, cfg)
    assert_close(values, ref[0], torch.float32)
    assert torch.equal(counts.cpu(), ref[1].to(torch.int64))


KEEP_CASES = [(0.1, math.inf), (-math.inf, 0.2), (-1.0, math.inf), (-0.5, 0.25), (0.05, 0.25), (5.0, math.inf),
              (-math.inf, 0.0)]
KEEP_MODES = [dict(mining="batch_all", margin=0.3), dict(mining="semihard", margin=0.3, miner_margin=0.5),
              dict(mining="easy", kind="dot", negate=True, margin=0.3, miner_margin=0.1),
              dict(mining="hard", margin=0.3, miner_margin=0.2), dict(mining="batch_hard", margin=0.3),
              dict(mining="all", smooth=True, margin=0.3, miner_margin=0.4),
              dict(mining="batch_all", swap=True, margin=0.3)]


@pytest.mark.parametrize("keep", KEEP_CASES, ids=[f"{lo}_{hi}" for lo, hi in KEEP_CASES])
@pytest.mark.parametrize("fields", KEEP_MODES, ids=[f"{c['mining']}{'-smooth' if c.get('smooth') else ''}"
                                                    f"{'-swap' if c.get('swap') else ''}" for c in KEEP_MODES])
def test_term_keep_matches_torch_path(fields, keep):
    """cfg.term_keep (ThresholdReducer): the kernels' windows against the PyTorch path, with a
    per-anchor upstream gradient (the backward's own pass, not the unit-gradient shortcut)."""
    cfg = TripletConfig(**fields, term_keep=keep)
    _, _, _, _, _, values, nonzero = _kernels_match_torch_path(cfg, seed=7, grad_seed=2)
    if keep == (5.0, math.inf) or keep == (-math.inf, 0.0):
        assert int(nonzero.sum()) == 0 and float(values.abs().sum()) == 0.0


BLOCKED_CASES = [
    dict(mining="semihard", margin=0.4, miner_margin=0.8),
    dict(mining="batch_all", margin=0.3),
    dict(mining="hard", margin=0.3, miner_margin=0.2, term_keep=(0.05, 0.25)),
    dict(mining="easy", kind="dot", negate=True, margin=0.3, miner_margin=0.1),
    dict(mining="all", smooth=True, margin=0.3, miner_margin=0.4),
    dict(mining="batch_all", swap=True, margin=0.3),
    dict(mining="semihard_tfa", margin=0.5),
    dict(mining="semihard_tfa", swap=True, smooth=True, margin=0.5),
]


@pytest.mark.parametrize("fields", BLOCKED_CASES, ids=[
    f"{c['mining']}{'-smooth' if c.get('smooth') else ''}{'-swap' if c.get('swap') else ''}"
    f"{'-keep' if 'term_keep' in c else ''}" for c in BLOCKED_CASES])
def test_column_blocks_and_chunks_match_torch_path(monkeypatch, fields):
    """Several programs per anchor (blocks of 16 columns / sorted positives, a ragged last
    one: N = 40, about 20 positives per anchor) and several chunks (7 anchors, a ragged last
    one): values, counts, nonzero and gradients as the PyTorch path, bitwise equal on a rerun."""
    torch_path = pytest.importorskip("fastcontrast._torch.triplet")
    for name, value in (("CHUNK_ELEMENTS", 7 * 40), ("MIN_CHUNK_ROWS", 1), ("SEARCH_BLOCK", 16),
                        ("SCAN_BLOCK", 16), ("WINDOW_COLS", 16), ("POSITIVE_COLS", 16)):
        monkeypatch.setattr(kt, name, value)
    assert kt._chunk_rows(40, 40, kt.CHUNK_ELEMENTS) == 7 and kt._row_blocks(40, kt.WINDOW_COLS) == 3
    cfg = TripletConfig(**fields)
    q, r, ql, rl, same = make_data(B=40, D=6, classes=2, style="dup", seed=11)
    grad = torch.rand(40, generator=torch.Generator().manual_seed(4)) + 0.5
    first = run_kernels(q, r, ql, rl, cfg, same, grad)
    values, counts, nonzero, _, gq, gr = first
    t_values, t_counts, t_nonzero, t_saved = torch_path.forward(q, r, ql, rl, cfg)
    t_gq, t_gr = torch_path.backward(grad, q, r, ql, rl, cfg, t_saved)
    assert torch.equal(counts.cpu(), t_counts) and torch.equal(nonzero.cpu(), t_nonzero)
    assert int(counts.sum()) > 0
    assert_close(values, t_values, torch.float32)
    assert_close(gq.float() + gr.float(), t_gq + t_gr, torch.float32)
    second = run_kernels(q, r, ql, rl, cfg, same, grad)
    for a, b in zip(first[:3] + first[4:], second[:3] + second[4:]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("nonneg", [True, False], ids=["int32-keys", "int64-keys"])
def test_merged_sort_is_both_sorts_side_by_side(nonneg):
    """kernels/triplet._merged_sort: one sort gives, per row, exactly the sorted negatives and
    then the sorted positives (value for value, ±0, subnormals, +inf padding included), as
    the two separate row sorts would; a row with no negative or no positive included."""
    gen = torch.Generator().manual_seed(11)
    c, n = 7, 53
    d = torch.randn(c, n, generator=gen) * torch.logspace(-42, 3, n)[torch.randperm(n, generator=gen)]
    d[:, :5] = torch.tensor([0.0, -0.0, 1e-45, 2e-45, 3.0])
    d[:, 5:8] = d[:, 8:11]                                     # ties
    if nonneg:
        d = d.abs()
        d[:, 1] = -0.0                                         # sqrt(-0.0) is -0.0
    side = torch.randint(0, 3, (c, n), generator=gen)         # 0 negative, 1 positive, 2 neither
    side[0] = 1
    side[1] = 0
    neg_key = torch.where(side == 0, d, torch.inf)
    pos_key = torch.where(side == 1, d, torch.inf)
    both = kt._merged_sort(neg_key, pos_key, nonneg)
    neg_sorted, pos_sorted = neg_key.sort(1)[0], pos_key.sort(1)[0]
    for i in range(c):
        k, p = int((side[i] == 0).sum()), int((side[i] == 1).sum())
        assert torch.equal(both[i, :k], neg_sorted[i, :k]), i
        assert torch.equal(both[i, k:k + p], pos_sorted[i, :p]), i
        assert torch.isinf(both[i, k + p:]).all(), i
        if not nonneg:
            assert torch.equal(torch.signbit(both[i, :k]), torch.signbit(neg_sorted[i, :k])), i


ORDER_CASES = [dict(mining="semihard", margin=0.4, miner_margin=0.8), dict(mining="batch_all", margin=0.3)]


@pytest.mark.parametrize("fields", ORDER_CASES, ids=[c["mining"] for c in ORDER_CASES])
def test_label_orders_give_the_same_results(monkeypatch, fields):
    """The sorted path groups references by label (kernels/triplet._grouping): one class with
    90% of the batch, two classes of size 1 (lonely anchors), duplicate rows, in sorted,
    reversed, interleaved and random row orders give the same per-row results as the PyTorch
    path (counts exact, ties between a positive and a negative distance included), with blocks
    of 16 grouped slots (positive ranges split across programs)."""
    torch_path = pytest.importorskip("fastcontrast._torch.triplet")
    for name, value in (("SEARCH_BLOCK", 16), ("WINDOW_COLS", 16)):
        monkeypatch.setattr(kt, name, value)
    cfg = TripletConfig(**fields)
    B = 20
    # quarter-integer coordinates: every distance is exact before its square root, so equal
    # distances stay equal wherever a pair sits in a tile (the interpreter's tl.dot is numpy's
    # float32 matmul, whose rounding can depend on the position in the tile on some CPUs)
    q = torch.randint(-4, 5, (B, 5), generator=torch.Generator().manual_seed(3)).float() / 4
    q[4], q[9] = q[1], q[18]
    labels = torch.zeros(B, dtype=torch.int64)
    labels[18:] = torch.tensor([1, 2])
    grad = torch.rand(B, generator=torch.Generator().manual_seed(5)) + 0.5
    t_values, t_counts, t_nonzero, t_saved = torch_path.forward(q, q, labels, labels, cfg)
    t_gq, t_gr = torch_path.backward(grad, q, q, labels, labels, cfg, t_saved)
    orders = {"sorted": torch.arange(B), "reversed": torch.arange(B).flip(0),
              "interleaved": torch.cat([torch.arange(0, B, 2), torch.arange(1, B, 2)]),
              "random": torch.randperm(B, generator=torch.Generator().manual_seed(8))}
    for name, perm in orders.items():
        values, counts, nonzero, _, gq, gr = run_kernels(q[perm], q[perm], labels[perm], labels[perm], cfg, True,
                                                         grad[perm])
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(B)
        assert torch.equal(counts.cpu()[inv], t_counts) and torch.equal(nonzero.cpu()[inv], t_nonzero), name
        assert int(counts.sum()) > 0
        assert_close(values[inv.to(values.device)], t_values, torch.float32)
        assert_close((gq.float() + gr.float())[inv.to(gq.device)], t_gq + t_gr, torch.float32)


@pytest.mark.parametrize("kwargs", [dict(mining="semihard", distance="cosine"),
                                    dict(mining="semihard_tfa", margin=1.0, swap=True),
                                    dict(mining="batch_hard", hard_fallback="tfa", distance="squared_euclidean")],
                         ids=["semihard-cosine", "tfa-swap", "batch_hard-tfa"])
def test_public_loss_same_on_both_backends(kwargs):
    """fc.triplet_margin_loss through the autograd Function: backend="triton" (these kernels)
    gives the same loss and gradients as backend="torch", with and without a reference set."""
    api = pytest.importorskip("fastcontrast.triplet")
    q, r, ql, rl, _ = make_data(B=12, D=5, N=9, self_offset=-1, seed=2)
    for ref in (None, r):
        results = []
        for backend in ("torch", "triton"):
            x = q.clone().requires_grad_()
            loss = api.triplet_margin_loss(x, ql, ref_emb=ref, ref_labels=None if ref is None else rl,
                                           backend=backend, **kwargs)
            loss.backward()
            results.append((loss.detach(), x.grad))
        assert float(results[0][0]) > 0 and float(results[0][1].abs().sum()) > 0
        assert_close(results[1][0], results[0][0], torch.float32)
        assert_close(results[1][1], results[0][1], torch.float32)


UNIT_CASES = [dict(mining="semihard", reduction="mean", average="avg_nonzero"),
              dict(mining="batch_all", reduction="mean", average="mean", distance="cosine"),
              dict(mining="all", reduction="sum", miner_margin=0.3)]


@pytest.mark.parametrize("kwargs", UNIT_CASES, ids=[f"{c['mining']}-{c['reduction']}" for c in UNIT_CASES])
def test_mean_and_sum_finish_the_gradient_in_the_forward_pass(monkeypatch, kwargs):
    """reduction "mean"/"sum" on the Triton path: the forward computes the unit gradients and
    backward only scales them (the chunked backward never runs); the gradients equal those of
    the same loss built from terms() (no promise, the full backward), with and without a
    reference set. reduction="none" under non-uniform upstream weights keeps the full backward."""
    import fastcontrast as fc

    q, r, ql, rl, _ = make_data(B=13, D=6, N=10, classes=3, self_offset=-1, seed=5)
    for ref, ref_labels in ((None, None), (r, rl)):
        loss_fn = fc.TripletMarginLoss(margin=0.2, backend="triton", **kwargs)
        expected_x = q.clone().requires_grad_()
        terms = loss_fn.terms(expected_x, ql, ref, ref_labels, -1 if ref is not None else 0)
        expected = loss_fn.reduce(terms)
        expected.backward()
        assert float(expected_x.grad.abs().sum()) > 0

        x = q.clone().requires_grad_()
        loss = loss_fn(x, ql, ref_emb=ref, ref_labels=ref_labels)
        with monkeypatch.context() as m:
            m.setattr(kt, "_chunked_bwd", lambda *a, **k: pytest.fail("the chunked backward ran"))
            (3.0 * loss).backward()
        assert_close(loss.detach(), expected.detach(), torch.float32)
        assert_close(x.grad, 3.0 * expected_x.grad, torch.float32)

    weights = torch.linspace(0.5, 2.0, q.shape[0])
    grads = []
    for backend in ("torch", "triton"):
        x = q.clone().requires_grad_()
        per_anchor = fc.TripletMarginLoss(margin=0.2, backend=backend, **{**kwargs, "reduction": "none"})(x, ql)
        (per_anchor * weights).sum().backward()
        grads.append(x.grad)
    assert float(grads[0].abs().sum()) > 0
    assert_close(grads[1], grads[0], torch.float32)


# ------------------------------------------------------------------------------------------
# torch.compile of a training step (opaque custom ops under the interpreter)
# ------------------------------------------------------------------------------------------
class _Loss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, labels, cfg):
        values, counts, nonzero, saved = kt.forward(x, x, labels, labels, cfg)
        ctx.save_for_backward(x, labels, *saved)
        ctx.cfg = cfg
        return values.sum() / nonzero.sum().clamp_min(1)

    @staticmethod
    def backward(ctx, grad):
        x, labels, *saved = ctx.saved_tensors
        nonzero = kt.forward(x, x, labels, labels, ctx.cfg)[2]
        g = (grad / nonzero.sum().clamp_min(1)).expand(x.shape[0]).contiguous()
        gq, gr = kt.backward(g, x, x, labels, labels, ctx.cfg, tuple(saved))
        return gq + gr, None, None


def test_torch_compile_training_step():
    """The registered ops trace under torch.compile (aot_eager on CPU: the interpreter's
    kernels are opaque ops; inductor on CUDA is in test_triplet_gpu.py)."""
    cfg = TripletConfig(mining="semihard", margin=0.5)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    x, labels = torch.randn(10, 6), torch.randint(0, 3, (10,))

    def step():
        model.zero_grad()
        loss = _Loss.apply(model(x), labels, cfg)
        loss.backward()
        return loss.detach(), model.weight.grad.clone()

    eager = step()
    compiled = torch.compile(step, backend="aot_eager")()
    assert torch.equal(eager[0], compiled[0])
    torch.testing.assert_close(eager[1], compiled[1])
    assert eager[1].abs().sum() > 0


SORTED_KINDS = {"euclidean": dict(kind="euclidean"), "sqeuclidean": dict(kind="sqeuclidean"),
                "dot": dict(kind="dot"), "similarity": dict(kind="dot", negate=True)}


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])   # no shrinking: each example is seconds in the interpreter
@given(B=st.integers(8, 16), D=st.integers(1, 6), classes=st.integers(1, 5),
       style=st.sampled_from(["randn", "dup", "int", "wide-int"]),
       mining=st.sampled_from(["batch_all", "all", "hard", "semihard", "easy"]),
       kind=st.sampled_from(sorted(SORTED_KINDS)), margin=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
       miner_margin=st.sampled_from([0.0, 0.1, 0.5, 2.0]),
       keep=st.sampled_from([(0.0, math.inf), (0.1, math.inf), (-1.0, 0.25), (0.05, 0.25)]),
       small_blocks=st.booleans(), with_refs=st.booleans(), seed=st.integers(0, 2**16))
def test_random_sorted_path_configs_match_torch_path(B, D, classes, style, mining, kind, margin, miner_margin,
                                                      keep, small_blocks, with_refs, seed):
    """Random combinations of the sorted path's axes (mode, distance, margins, ThresholdReducer
    window, a reference set or not, blocks of 16 lanes and chunks of 5 rows or the defaults,
    ties and duplicates): counts, values and both gradients equal the PyTorch path's, for a
    per-anchor upstream gradient and for the unit gradients of the forward (mean/sum)."""
    torch_path = pytest.importorskip("fastcontrast._torch.triplet")
    with pytest.MonkeyPatch.context() as mp:
        if small_blocks:
            for name, value in (("CHUNK_ELEMENTS", 5 * 30), ("MIN_CHUNK_ROWS", 1), ("SEARCH_BLOCK", 16),
                                ("WINDOW_COLS", 16)):
                mp.setattr(kt, name, value)
        cfg = TripletConfig(**SORTED_KINDS[kind], mining=mining, margin=margin, miner_margin=miner_margin,
                            term_keep=keep, self_offset=-1 if with_refs else 0)
        if with_refs:
            q, r, ql, rl, same = make_data(B=B, D=D, N=B + 5, classes=classes, style=style, self_offset=-1, seed=seed)
        else:
            q, r, ql, rl, same = make_data(B=B, D=D, classes=classes, style=style, seed=seed)
        for grad, unit in ((torch.rand(B, generator=torch.Generator().manual_seed(seed)) + 0.5, False),
                           (torch.full((B,), 1.7), True)):
            values, counts, nonzero, _, gq, gr = run_kernels(q, r, ql, rl, cfg, same, grad, unit_grad=unit)
            t_values, t_counts, t_nonzero, t_saved = torch_path.forward(q, r, ql, rl, cfg)
            t_gq, t_gr = torch_path.backward(grad, q, r, ql, rl, cfg, t_saved)
            assert torch.equal(counts.cpu(), t_counts) and torch.equal(nonzero.cpu(), t_nonzero)
            assert_close(values, t_values, torch.float32)
            if same:
                assert_close(gq.float() + gr.float(), t_gq + t_gr, torch.float32)
            else:
                assert_close(gq.float(), t_gq, torch.float32)
                assert_close(gr.float(), t_gr, torch.float32)


# ------------------------------------------------------------------------------------------
# compiled for a GPU target without a GPU: what the interpreter does not check
# ------------------------------------------------------------------------------------------
_SM90_COMPILE = r"""
from fastcontrast.kernels import triplet as kt
from tests.kernels.sm90 import build_all

F32, F16, I64, I32, F64 = "*fp32", "*fp16", "*i64", "*i32", "*fp64"
TILE = dict(q_ptr=F16, r_ptr=F16, q_sq_ptr=F32, r_sq_ptr=F32, q_lab_ptr=I64, r_lab_ptr=I64)
ROW = dict(r_ptr=F16, r_sq_ptr=F32, neg_key_ptr=F32, pos_sorted_ptr=F32, pos_idx_ptr=I64, n_pos_ptr=I32,
           grad_ptr=F32)
KERNELS = [  # (kernel, pointer arguments, constexprs); other arguments are i32 / fp32 scalars
    (kt._distance_rows_kernel, dict(TILE, neg_key_ptr=F32, pos_key_ptr=F32),
     dict(KIND=2, NEGATE=False, PRECISION="ieee", BLOCK_M=64, BLOCK_N=64, BLOCK_D=32)),
    (kt._window_forward_kernel, dict(both_sorted_ptr=F32, prefix_ptr=F64, n_neg_ptr=I32, n_pos_ptr=I32,
                                     values_ptr=F64, counts_ptr=I64, nonzero_ptr=I64),
     dict(MODE=3, KEEP=19, LOG_N=17, BLOCK=128, COLS=4096)),
    (kt._window_weights_kernel, dict(pos_key_ptr=F32, neg_key_ptr=F32, pos_sorted_ptr=F32, neg_sorted_ptr=F32,
                                     n_pos_ptr=I32, n_neg_ptr=I32, r_perm_ptr=I32, start_ptr=I32, end_ptr=I32,
                                     grad_ptr=F32, coef_ptr=F32),
     dict(MODE=2, KEEP=19, KIND=2, NEGATE=False, LOG_N=17, BLOCK=128)),
    (kt._scan_rows_kernel, dict(ROW, values_ptr=F64, counts_ptr=I64, nonzero_ptr=I64, coef_ptr=F32),
     dict(MODE=3, SMOOTH=True, SWAP=True, BACKWARD=True, KEEP=16, KIND=2, NEGATE=False, PRECISION="ieee",
          BLOCK_P=32, BLOCK_N=32, BLOCK_D=32, COLS=256)),
    (kt._scan_negatives_kernel, dict(ROW, coef_ptr=F32),
     dict(MODE=1, SMOOTH=False, SWAP=True, KEEP=0, KIND=0, NEGATE=True, PRECISION="ieee", BLOCK_P=32, BLOCK_N=32,
          BLOCK_D=32)),
    (kt._swap_pair_grad_kernel, dict(r_ptr=F16, r_sq_ptr=F32, pos_key_ptr=F32, neg_key_ptr=F32, grad_ptr=F32,
                                     out_ptr=F32),
     dict(SIDE=1, MODE=3, SMOOTH=True, KEEP=16, KIND=2, NEGATE=False, PRECISION="ieee", BLOCK_X=32, BLOCK_Y=32,
          BLOCK_D=32, BLOCK_DO=64)),
    (kt._tfa_rows_kernel, dict(r_ptr=F16, r_sq_ptr=F32, pos_sorted_ptr=F32, pos_idx_ptr=I64, neg_sorted_ptr=F32,
                               neg_idx_ptr=I64, n_pos_ptr=I32, n_neg_ptr=I32, grad_ptr=F32, values_ptr=F64,
                               counts_ptr=I64, nonzero_ptr=I64, choice_ptr=F32, slope_ptr=F32,
                               an_slope_ptr=F32, pn_coef_ptr=F32, pn_n_ptr=I64),
     dict(SMOOTH=False, SWAP=True, BACKWARD=True, KIND=2, NEGATE=False, PRECISION="ieee", LOG_N=17, BLOCK=32,
          BLOCK_D=32, COLS=256)),
    (kt._tfa_weights_kernel, dict(pos_sorted_ptr=F32, pos_idx_ptr=I64, neg_sorted_ptr=F32, neg_idx_ptr=I64,
                                  n_pos_ptr=I32, n_neg_ptr=I32, choice_ptr=F32, slope_ptr=F32,
                                  slope_prefix_ptr=F64, coef_ptr=F32),
     dict(KIND=2, NEGATE=False, LOG_N=17, BLOCK=128)),
    (kt._batch_hard_kernel, dict(TILE, p_val_ptr=F32, p_idx_ptr=I64, n_val_ptr=F32, n_idx_ptr=I64,
                                 f_val_ptr=F32, f_idx_ptr=I64),
     dict(KIND=1, NEGATE=False, PRECISION="ieee", BLOCK_M=64, BLOCK_N=64, BLOCK_D=32)),
    (kt._pair_distance_kernel, dict(x_ptr=F16, y_ptr=F16, x_sq_ptr=F32, y_sq_ptr=F32, idx_x_ptr=I64,
                                    idx_y_ptr=I64, out_ptr=F32),
     dict(KIND=2, NEGATE=False, PRECISION="ieee", BLOCK=16, BLOCK_D=32)),
    (kt._segment_grad_kernel, dict(target_ptr=F16, src_ptr=F16, seg_start_ptr=I64, src_idx_ptr=I64,
                                   coef_ptr=F32, out_ptr=F32), dict(KIND=1, BLOCK_D=64)),
]
build_all([(kernel, pointers, constexprs, None) for kernel, pointers, constexprs in KERNELS],
          floats=("near_tol", "margin", "mm", "c_keep_hi", "c_keep_lo", "keep_low", "keep_high"))
"""


def test_kernels_compile_for_sm90():
    """Every kernel goes through Triton's full CUDA pipeline (TTIR → PTX → cubin with the
    bundled ptxas) for an H100 target: GPU-only rules (constexpr globals, loop-carried
    types, tl.dot shapes) are checked without a GPU. One variant per kernel (the fullest)."""
    assert "compiled 11" in sm90.run_script(_SM90_COMPILE)
