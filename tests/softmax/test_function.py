"""SoftmaxFunction: the no-reference case, torch.compile, backend choice by dtype, and the
symmetric (both directions) path."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast.configs import SoftmaxConfig
from fastcontrast.softmax import SoftmaxFunction
from tests.conftest import assert_close, triton_available

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    not triton_available(), reason="triton does not import"))]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the kernels in the interpreter


def data(gen, b=10, d=7, classes=3, dtype=torch.float32):
    x = torch.randn(b, d, generator=gen, dtype=torch.float64).to(dtype)
    return x, torch.randint(0, classes, (b,), generator=gen)


# ------------------------------------------------------------------ the batch as its own reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_reference_is_the_batch_itself(backend, gen):
    """r = None / r_labels = None stands for r = q / r_labels = q_labels; q's gradient is the
    sum of both roles."""
    x, y = data(gen)
    x, y = x.to(DEVICE), y.to(DEVICE)
    t = torch.tensor(0.3, device=DEVICE)
    for variant in ("supcon", "ntxent"):
        cfg = SoftmaxConfig(kind="dot", variant=variant)
        a = x.clone().requires_grad_()
        values, n_pos = SoftmaxFunction.apply(a, None, y, None, t, cfg, backend)
        values.sum().backward()
        b = x.clone().requires_grad_()
        b_ref = b.clone()  # same numbers, a separate tensor: the Function sees two inputs
        want, want_n = SoftmaxFunction.apply(b, b_ref, y, y.clone(), t, cfg, backend)
        want.sum().backward()
        assert_close(values, want, torch.float32)
        assert torch.equal(n_pos, want_n)
        assert_close(a.grad, b.grad, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_training_step_has_no_graph_break(backend, gen):
    """fullgraph=True fails on any graph break (a duplicate tensor input to the Function, an
    untraceable import, data-dependent shapes). aot_eager needs no C compiler."""
    torch._dynamo.reset()
    model = torch.nn.Linear(7, 6).to(DEVICE)
    x, y = data(gen, b=10)
    x, y = x.to(DEVICE), y.to(DEVICE)

    def step(inp):
        z = model(inp)
        return (fc.supcon_loss(z, y, temperature=0.2, backend=backend)
                + fc.nt_xent_loss(z, y, temperature=0.3, backend=backend)
                + fc.nt_xent_loss(z, None, form="simclr", backend=backend)
                + fc.info_nce_loss(z[:5], z[5:], symmetric=True, backend=backend))

    results = []
    for fn in (step, torch.compile(step, backend="aot_eager", fullgraph=True)):
        loss = fn(x)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((loss.detach(), *grads))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- backend by dtype


CALLS = {
    "supcon": lambda x, y, **kw: fc.supcon_loss(x, y, **kw),
    "nt_xent": lambda x, y, **kw: fc.nt_xent_loss(x, y, **kw),
    "npair": lambda x, y, **kw: fc.npair_loss(x, y, **kw),
    "info_nce": lambda x, y, **kw: fc.info_nce_loss(x[:5], x[5:], symmetric=True, **kw),
}


@pytest.mark.parametrize("call", CALLS)
def test_float64_on_auto_takes_the_pytorch_path(call, gen, monkeypatch):
    """Where "auto" means the kernels (CUDA; simulated here), float64 still goes to the
    PyTorch path, which keeps it float64 (the kernels refuse it)."""
    import fastcontrast.softmax as softmax_module
    x, y = data(gen, dtype=torch.float64)
    want = CALLS[call](x, y, backend="torch")
    from fastcontrast import backend as backend_module
    monkeypatch.setattr(backend_module, "triton_import_error", lambda: None)
    monkeypatch.setattr(softmax_module, "resolve_backend",  # as if the tensors were on a GPU
                        lambda backend, device, dtype=None: backend_module.resolve_backend(
                            backend, torch.device("cuda"), dtype))
    got = CALLS[call](x, y, backend="auto")
    assert got.dtype == torch.float64
    assert torch.equal(got, want)


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
@pytest.mark.parametrize("call", CALLS)
def test_float64_on_triton_is_a_type_error_before_any_computation(call, gen, monkeypatch):
    from fastcontrast import metrics
    x, y = data(gen, dtype=torch.float64)

    def no_computation(*args, **kwargs):
        raise AssertionError("computation started before the dtype check")

    monkeypatch.setattr(metrics, "prepare", no_computation)
    with pytest.raises(TypeError, match="float64"):
        CALLS[call](x.to(DEVICE), y.to(DEVICE), backend="triton")


# ---------------------------------------------------------------------- symmetric InfoNCE / CLIP


def symmetric_step(query, keys, t, backend, distance, labels):
    q = query.clone().requires_grad_()
    k = keys.clone().requires_grad_()
    t = t.clone().requires_grad_()
    loss = fc.InfoNCELoss(temperature=t, symmetric=True, distance=distance, backend=backend)
    value = loss(q, k) if labels is None else loss(q, k, labels, labels.flip(0))
    value.backward()
    return value.detach(), q.grad, k.grad, t.grad


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
@pytest.mark.parametrize("distance, with_labels", [("cosine", False), ("squared_euclidean", True),
                                                    ("dot", False)])
def test_symmetric_triton_matches_torch(distance, with_labels, gen):
    query = (0.5 * torch.randn(7, 5, generator=gen)).to(DEVICE)
    keys = (0.5 * torch.randn(7, 5, generator=gen)).to(DEVICE)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 0], device=DEVICE) if with_labels else None
    t = torch.tensor(0.4, device=DEVICE)
    want = symmetric_step(query, keys, t, "torch", distance, labels)
    got = symmetric_step(query, keys, t, "triton", distance, labels)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32)


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
def test_symmetric_triton_takes_one_backward_pass(gen, monkeypatch):
    """On the Triton backend both directions come from forward_symmetric and ONE
    backward_symmetric call (the plain per-direction launchers are not used)."""
    from fastcontrast.kernels import softmax as kernels_softmax
    calls = []
    for name in ("forward", "backward", "forward_symmetric", "backward_symmetric"):
        def spy(*args, _name=name, _fn=getattr(kernels_softmax, name), **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)
        monkeypatch.setattr(kernels_softmax, name, spy)
    query, keys = torch.randn(6, 4, generator=gen).to(DEVICE), torch.randn(6, 4, generator=gen).to(DEVICE)
    query.requires_grad_()
    fc.info_nce_loss(query, keys, symmetric=True, backend="triton").backward()
    # forward_symmetric runs the kernel module's own forward once per direction
    assert calls.count("forward_symmetric") == 1 and calls.count("backward_symmetric") == 1
    assert "backward" not in calls


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
def test_symmetric_terms_of_the_batch_against_itself(gen):
    """terms() without ref_emb: the batch is its own key set (r = q in the Function)."""
    x = torch.randn(6, 4, generator=gen).to(DEVICE)
    labels = torch.tensor([0, 1, 2, 0, 1, 2], device=DEVICE)
    out = {}
    for backend in ("torch", "triton"):
        xb = x.clone().requires_grad_()
        loss = fc.InfoNCELoss(temperature=0.3, symmetric=True, backend=backend)
        terms = loss.terms(xb, labels, None, labels.roll(1))
        value = loss.reduce(terms)
        value.backward()
        out[backend] = (terms.values.detach(), value.detach(), xb.grad)
    for a, b in zip(out["triton"], out["torch"]):
        assert_close(a, b, torch.float32)


# ----------------------------------------------------------------- N-pair's fixed-size slots


@pytest.mark.parametrize("labels", [
    [0, 1, 0, 2, 1, 3, 0, 2, 5, 5, 4],  # classes of 3, 2, 2, 2, 1, 1 rows (B odd)
    [7, 7, 7, 7, 7, 7],                 # one class: one pair
    [0, 1, 2, 3, 4],                    # all distinct: no pair
    [3],                                # one row
    [2, 2, 0, 0, 1, 1, 4, 4]])          # B/2 pairs: every slot taken
def test_npair_slots_are_npair_indices_padded(labels):
    from fastcontrast.softmax import npair_indices, npair_slots
    y = torch.tensor(labels)
    anchors, positives, valid = npair_slots(y)
    want_a, want_p = npair_indices(y)
    k = want_a.shape[0]
    assert anchors.shape == positives.shape == valid.shape == (max(len(labels) // 2, 1),)
    assert valid.tolist() == [True] * k + [False] * (valid.shape[0] - k)
    assert torch.equal(anchors[:k], want_a) and torch.equal(positives[:k], want_p)


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
@pytest.mark.parametrize("distance,normalize,dtype", [("dot", True, torch.float32), ("euclidean", False, torch.float32),
                                                      ("cosine", None, torch.bfloat16)])
@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 3, 0, 2, 5, 5, 4], [0, 1, 2, 3], [4, 4, 4]])
def test_npair_triton_slots_equal_the_listed_pairs(distance, normalize, dtype, labels, gen):
    """mean/sum on the Triton path run on the fixed-size slots (no host sync): the same numbers
    and gradients as the per-pair values of reduction="none" (the listed pairs), and as the
    PyTorch path."""
    y = torch.tensor(labels, device=DEVICE)
    x = torch.randn(len(labels), 9, generator=gen).to(device=DEVICE, dtype=dtype)
    kw = dict(l2_reg=0.05, distance=distance, normalize=normalize, backend="triton")
    for reduction in ("mean", "sum"):
        a, b, c = (x.clone().requires_grad_() for _ in range(3))
        got = fc.npair_loss(a, y, reduction=reduction, **kw)
        got.backward()
        per_pair = fc.npair_loss(b, y, reduction="none", **kw)
        want = per_pair.sum() if reduction == "sum" else per_pair.mean() if per_pair.numel() else per_pair.sum()
        want.backward()
        assert torch.equal(got, want) or torch.allclose(got, want, rtol=1e-6, atol=1e-7)
        assert torch.equal(a.grad, b.grad)
        on_torch = fc.npair_loss(c, y, reduction=reduction, **{**kw, "backend": "torch"})
        on_torch.backward()
        tol = torch.float32 if dtype == torch.float32 else dtype
        assert_close(got, on_torch, tol)
        assert_close(a.grad, c.grad, tol)
