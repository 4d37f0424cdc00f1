"""fastcontrast.compat.tfa's triplet losses against float64 dense statements of TF Addons'
rules (fastcontrast.reference.triplet.tfa_*): values and gradients."""
import pytest
import torch

from fastcontrast.compat import tfa
from fastcontrast.reference.triplet import tfa_triplet_hard_loss, tfa_triplet_semihard_loss
from tests.conftest import assert_close

METRICS = ["L2", "squared-L2", "angular"]


def compare(fn, ref, y, x, dtype=torch.float64, **kw):
    e = x.detach().clone().to(dtype).requires_grad_()
    got = fn(y, e, **kw)
    got.backward()
    assert got.dtype == dtype
    r = x.detach().clone().requires_grad_()
    want = ref(y, r, **{("metric" if k == "distance_metric" else k): v for k, v in kw.items()})
    if want.requires_grad:
        want.backward()
    want_grad = r.grad if r.grad is not None else torch.zeros_like(r)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    assert_close(got, want, compute if dtype != torch.float16 else torch.float16)
    assert_close(e.grad, want_grad, dtype)
    return got


def batch(gen, b=15, d=5, classes=4):
    return torch.randn(b, d, generator=gen, dtype=torch.float64), torch.randint(0, classes, (b,), generator=gen)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_semihard(metric, margin, gen):
    x, y = batch(gen)
    y[3] = 9  # an anchor without positives
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y, x, margin=margin, distance_metric=metric)
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y[:, None], x, torch.float32,
            margin=margin, distance_metric=metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
def test_hard(metric, soft, gen):
    x, y = batch(gen)
    y[3] = 9  # no positive: d_ap = 0
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, margin=0.7, soft=soft, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, torch.float32, soft=soft, distance_metric=metric)


@pytest.mark.parametrize("metric", METRICS)
def test_one_class_and_duplicates(metric, gen):
    x, _ = batch(gen)
    x[4] = x[1]
    one = torch.zeros(15, dtype=torch.long)  # no negatives: TF Addons' row min / row max fallbacks
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, one, x, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, one, x, distance_metric=metric)
    y = torch.tensor([0, 1, 1, 2, 1, 0, 2, 3, 3, 0, 1, 2, 2, 0, 3])
    compare(tfa.triplet_semihard_loss, tfa_triplet_semihard_loss, y, x, distance_metric=metric)
    compare(tfa.triplet_hard_loss, tfa_triplet_hard_loss, y, x, distance_metric=metric)


def test_no_positive_pair_is_zero_not_nan(gen):
    x, _ = batch(gen)
    e = x.clone().requires_grad_()
    loss = tfa.triplet_semihard_loss(torch.arange(15), e)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(x))
    assert torch.isfinite(tfa.triplet_hard_loss(torch.arange(15), x))


def test_half_precision_computes_in_float32(gen):
    x, y = batch(gen)
    got = tfa.triplet_semihard_loss(y, x.half())
    assert got.dtype == torch.float16
    assert_close(got, tfa_triplet_semihard_loss(y, x.half().double()), torch.float16)


def test_modules_and_bad_input(gen):
    x, y = batch(gen)
    assert_close(tfa.TripletSemiHardLoss(margin=0.5)(y, x), tfa.triplet_semihard_loss(y, x, margin=0.5))
    assert_close(tfa.TripletHardLoss(soft=True)(y, x), tfa.triplet_hard_loss(y, x, soft=True))
    with pytest.raises(ValueError, match="distance_metric"):
        tfa.triplet_semihard_loss(y, x, distance_metric="cosine")
    with pytest.raises(TypeError, match="distance_metric"):
        tfa.triplet_hard_loss(y, x, distance_metric=lambda e: e @ e.T)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_hard_loss(y.float() + 0.5, x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_semihard_loss(y.float().masked_fill(y == y[0], float("nan")), x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_semihard_loss(y.float().masked_fill(y == y[0], float("inf")), x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_hard_loss(y.double() * 1e30, x)
    with pytest.raises(TypeError, match="y_true"):
        tfa.triplet_hard_loss(y.tolist(), x)
    with pytest.raises(TypeError, match="y_true"):
        tfa.triplet_hard_loss(y.to(torch.complex64), x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_hard_loss(y[None, :], x)
    with pytest.raises(ValueError, match="y_true"):
        tfa.triplet_semihard_loss(y[:-1], x)
    with pytest.raises(ValueError, match="y_pred"):
        tfa.triplet_semihard_loss(y, x.masked_fill(x > 1, float("inf")))
    with pytest.raises(TypeError, match="soft"):
        tfa.triplet_hard_loss(y, x, soft=1)


# ----------------------------------------------------------------------------- TF Addons' arithmetic

from tests.compat.tfa import _oracle as tf_math  # noqa: E402


def test_tfa_docstring_cases():
    y = torch.tensor([0, 0])
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert_close(tfa.triplet_semihard_loss(y, x), torch.tensor(2.4142137), torch.float32)
    assert_close(tfa.triplet_hard_loss(y, x), torch.tensor(1.0), torch.float32)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [(10, 6), (20, 6), (7, 3), (1, 4), (2, 1)])
def test_against_tf_arithmetic(metric, shape, gen):
    # TF Addons' tests: uniform [0, 1) embeddings, 4 classes; here float64 with gradients
    x = torch.rand(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (shape[0],), generator=gen)
    for fn, ref, kw in ((tfa.triplet_semihard_loss, tf_math.semihard, {}),
                        (tfa.triplet_hard_loss, tf_math.hard, {}),
                        (tfa.triplet_hard_loss, tf_math.hard, {"soft": True})):
        e = x.clone().requires_grad_()
        r = x.clone().requires_grad_()
        got, want = fn(y, e, distance_metric=metric, **kw), ref(y, r, metric=metric, **kw)
        if torch.isnan(want):  # TF Addons' 0/0 without positive pairs
            assert got.item() == 0.0
            continue
        assert_close(got, want)
        g1, = torch.autograd.grad(got, e)
        g2, = torch.autograd.grad(want, r)
        assert_close(g1, g2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_against_tf_arithmetic(dtype, gen):
    x = torch.rand(20, 6, generator=gen)
    y = torch.randint(0, 4, (20,), generator=gen)
    for metric in METRICS:
        xd = x.to(dtype)
        tol = torch.float32 if dtype == torch.float32 else torch.float16 if dtype == torch.float16 else dtype
        got = tfa.triplet_semihard_loss(y, xd, distance_metric=metric)
        assert got.dtype == dtype
        assert_close(got, tf_math.semihard(y, xd.double(), metric=metric), tol)
        got = tfa.triplet_hard_loss(y, xd, distance_metric=metric)
        assert_close(got, tf_math.hard(y, xd.double(), metric=metric), tol)


def test_float_and_column_labels(gen):
    x, y = batch(gen)
    want_s, want_h = tfa.triplet_semihard_loss(y, x), tfa.triplet_hard_loss(y, x, soft=True)
    for labels in (y.float(), y.double()[:, None], y.half()[:, None], y[:, None]):
        assert_close(tfa.triplet_semihard_loss(labels, x), want_s)
        assert_close(tfa.triplet_hard_loss(labels, x, soft=True), want_h)
        assert_close(tfa.TripletSemiHardLoss()(labels, x), want_s)
    b = y > 1
    assert_close(tfa.triplet_hard_loss(b, x), tfa.triplet_hard_loss(b.long(), x))


def zero_row_batch(gen, labels):
    x = torch.randn(len(labels), 5, generator=gen, dtype=torch.float64)
    return x, torch.tensor(labels)


ZERO_ROW_CASES = [
    # (labels, zero rows)
    ([0, 1, 0, 2, 1, 3, 0, 2, 1], [2]),           # zero row with positives and negatives
    ([0, 1, 0, 2, 1, 3, 0, 2, 1], [5]),           # zero row without a positive
    ([0, 1, 0, 2, 1, 3, 0, 2, 1], [0, 5, 8]),     # several, one of them a positive of another
    ([4, 4, 4, 4, 4, 4], [1]),                    # one class: no negative anywhere
    ([4, 4, 4, 4, 4, 4], [0, 3]),
    ([0, 1, 2], [0, 1, 2]),                       # every row zero
    ([7], [0]),
]


@pytest.mark.parametrize("labels,zeros", ZERO_ROW_CASES)
def test_angular_zero_rows_follow_tfa(labels, zeros, gen):
    x, y = zero_row_batch(gen, labels)
    x[zeros] = 0
    nonzero = torch.ones(len(labels), dtype=torch.bool)
    nonzero[zeros] = False
    for fn, split, first, kw in ((tfa.triplet_semihard_loss, tf_math.semihard, tf_math.semihard_first, {}),
                                 (tfa.triplet_hard_loss, tf_math.hard, tf_math.hard_first, {}),
                                 (tfa.triplet_hard_loss, tf_math.hard, tf_math.hard_first, {"soft": True}),
                                 (tfa.triplet_hard_loss, tf_math.hard, tf_math.hard_first, {"margin": 0.3})):
        e = x.clone().requires_grad_()
        got = fn(y, e, distance_metric="angular", **kw)
        want = split(y, x, metric="angular", **kw)
        if torch.isnan(want):
            assert got.item() == 0.0
            continue
        assert_close(got, want)
        # the zero rows' own distances are all exactly 1, so they tie: compare gradients with the
        # lowest-index statement of the same rules, and with TF's tie split on the other rows
        g, = torch.autograd.grad(got, e)
        r = x.clone().requires_grad_()
        g_first, = torch.autograd.grad(first(y, r, metric="angular", **kw), r)
        assert_close(g, g_first)
        r = x.clone().requires_grad_()
        g_split, = torch.autograd.grad(split(y, r, metric="angular", **kw), r)
        assert_close(g[nonzero], g_split[nonzero])


def test_angular_zero_row_issue_case(gen):
    # any batch with one zero row: TF Addons' angular distance of the zero row is 1 to every row
    x, y = batch(gen)
    x[6] = 0
    for dtype in (torch.float64, torch.float32):
        got = tfa.triplet_semihard_loss(y, x.to(dtype), distance_metric="angular")
        assert_close(got, tf_math.semihard(y, x, metric="angular"), dtype)


def orthogonal_batch(gen, k=4):
    """3k rows, each ±(3, 4)·scale on one of k disjoint coordinate pairs: rows on different pairs are
    exactly orthogonal (angular distance exactly 1), but their float32 unit vectors have squared
    norms that differ in the last bit."""
    rows, labels = [], []
    for i in range(3 * k):
        v = torch.zeros(2 * k)
        s = float(torch.rand((), generator=gen) * 10 + 0.1) * (1.0 if (i // k) % 2 == 0 else -1.0)
        v[2 * (i % k)], v[2 * (i % k) + 1] = 3 * s, 4 * s
        rows.append(v)
        labels.append(int(torch.randint(0, 3, (), generator=gen)))
    return torch.stack(rows), torch.tensor(labels)


def test_float32_decides_exact_orthogonal_ties_as_float64(gen):
    mismatches_of_sum_form = 0
    for _ in range(6):
        x, y = orthogonal_batch(gen)
        for fn, ref in ((tfa.triplet_semihard_loss, tf_math.semihard), (tfa.triplet_hard_loss, tf_math.hard)):
            want = ref(y, x.double(), metric="angular")
            assert_close(fn(y, x, distance_metric="angular"), want, torch.float32)
            assert_close(fn(y, x.double(), distance_metric="angular"), want)
        # the same distances as ½‖û − v̂‖² in float32 (what this layer used to compute) do not keep the ties
        from fastcontrast.metrics import normalize_rows
        from fastcontrast.triplet import triplet_margin_loss
        sum_form = triplet_margin_loss(normalize_rows(x) * 0.5 ** 0.5, y, margin=1.0, mining="semihard_tfa",
                                       distance="squared_euclidean", average="mean", normalize=None)
        mismatches_of_sum_form += not torch.isclose(sum_form.double(), tf_math.semihard(y, x.double(), metric="angular"),
                                                    rtol=1e-3)
    assert mismatches_of_sum_form > 0  # the batches do exercise float32 tie-breaking


def test_hinge_exactly_at_zero_has_zero_gradient():
    # anchor 0: d_ap = 1, semi-hard negative at d_an = 2, margin 1: the term is exactly 0.
    # TF Addons' maximum(·, 0) passes that term's gradient; fastcontrast gives it 0 (documented)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    e, r = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, tf = tfa.triplet_semihard_loss(y, e), tf_math.semihard(y, r)
    assert_close(got, tf)
    got.backward()
    tf.backward()
    # only anchor 1's term (d_ap = 1, d_an = 1, h = 1) contributes here: d(0.5·(1 + d_10 − d_12))
    assert_close(e.grad, torch.tensor([[-0.5, 0.0], [1.0, 0.0], [-0.5, 0.0]], dtype=torch.float64))
    assert not torch.allclose(r.grad, e.grad)  # TF Addons adds anchor 0's term at its kink


from tests.conftest import devices, triton_available  # noqa: E402


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
@pytest.mark.parametrize("device", devices())
def test_angular_on_the_kernels(device, monkeypatch, gen):
    # the same values as TF Addons' arithmetic, and the same gradients as the PyTorch path,
    # when the Triton kernels run the pass (in the interpreter on CPU)
    # Gradients are compared where the choice of negative is decided by exact ties (orthogonal
    # rows, each on its own coordinate pair: every distance exactly 1) or by clear gaps. In
    # orthogonal_batch three rows share each coordinate pair, and which of two near-0 distances
    # 1 ulp apart is the nearer one depends on how the dot product is rounded (numpy's matmul
    # in the interpreter, with or without FMA, against torch's GEMM): there only the value,
    # which does not depend on that choice, is compared.
    x, y = orthogonal_batch(gen, k=3)
    cases = [(x, y, False)]
    w, wy = orthogonal_batch(gen, k=9)
    cases.append((w[:9], wy[:9], True))  # rows 0..8 sit on coordinate pairs 0..8
    z, labels = zero_row_batch(gen, [0, 1, 0, 2, 1, 3, 0, 2, 1])
    z[[0, 5]] = 0
    cases.append((z.float(), labels, True))
    cases.append((z.float()[:6], torch.full((6,), 4), True))  # one class, zero row 0
    for emb, lab, compare_grads in cases:
        for fn, ref in ((tfa.triplet_semihard_loss, tf_math.semihard), (tfa.triplet_hard_loss, tf_math.hard)):
            out = {}
            for backend in ("torch", "triton"):
                monkeypatch.setenv("FASTCONTRAST_BACKEND", backend)
                e = emb.detach().to(device).clone().requires_grad_()
                loss = fn(lab.to(device), e, distance_metric="angular")
                loss.backward()
                out[backend] = (loss.detach().cpu(), e.grad.cpu())
            assert_close(out["triton"][0], ref(lab, emb.double(), metric="angular"), torch.float32)
            if compare_grads:
                assert_close(out["triton"][1], out["torch"][1], torch.float32)
