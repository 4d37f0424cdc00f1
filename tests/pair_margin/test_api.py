"""contrastive_loss / ContrastiveLoss: reductions, terms()/reduce(), explicit pairs, bad input."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast.reference import pair_margin as ref
from tests.conftest import assert_close


def _data(gen, b=12, d=7, classes=3):
    return (torch.randn(b, d, generator=gen, dtype=torch.float64),
            torch.randint(0, classes, (b,), generator=gen))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("average", ["avg_nonzero", "mean"])
def test_reductions(reduction, average, gen):
    x, y = _data(gen)
    r, rl = torch.randn(5, 7, generator=gen, dtype=torch.float64), torch.randint(0, 3, (5,), generator=gen)
    for kw in ({}, {"ref_emb": r, "ref_labels": rl}):
        got = fc.contrastive_loss(x, y, pos_margin=3.0, neg_margin=4.0, power=2, reduction=reduction,
                                  average=average, normalize=None, **kw)
        want = ref.contrastive(x, y, 3.0, 4.0, 2, "euclidean", None, kw.get("ref_emb"), kw.get("ref_labels"),
                               reduction, average)
        assert got.shape == want.shape
        assert_close(got, want)


def test_avg_nonzero_differs_from_mean(gen):
    x, y = _data(gen)
    a = fc.contrastive_loss(x, y, pos_margin=3.0, neg_margin=4.0, normalize=None)
    b = fc.contrastive_loss(x, y, pos_margin=3.0, neg_margin=4.0, average="mean", normalize=None)
    assert a.item() > b.item() > 0


def test_terms_and_reduce(gen):
    x, y = _data(gen)
    loss = fc.ContrastiveLoss(pos_margin=3.0, neg_margin=4.0, normalize=None)
    t = loss.terms(x, y)
    assert isinstance(t, fc.LossTerms)
    assert t.values.shape == t.counts.shape == t.nonzero.shape == (12, 2)
    assert t.counts.dtype == torch.int64
    same = (y[:, None] == y[None, :]).sum(1) - 1
    assert torch.equal(t.counts[:, 0], same) and torch.equal(t.counts[:, 1], 12 - 1 - same)
    assert_close(loss.reduce(t), loss(x, y))
    # a reference set equal to the batch with self_offset 0 is the batch itself
    t2 = loss.terms(x, y, x.clone(), y.clone(), self_offset=0)
    assert torch.equal(t2.counts, t.counts)
    assert_close(t2.values, t.values)
    # and self_offset -1 keeps the self pairs (distance 0: an inactive positive term)
    t3 = loss.terms(x, y, x.clone(), y.clone(), self_offset=-1)
    assert torch.equal(t3.counts[:, 0], t.counts[:, 0] + 1)
    # forward with ref_emb has no self exclusion
    assert_close(loss(x, y, ref_emb=x.clone(), ref_labels=y), loss.reduce(t3))


def test_distributed_style_split(gen):
    """Two halves of the anchors against the whole batch, with self_offset, add up to the whole."""
    x, y = _data(gen, b=10)
    loss = fc.ContrastiveLoss(pos_margin=3.0, neg_margin=4.0, normalize=None)
    whole = loss.terms(x, y)
    a = loss.terms(x[:4], y[:4], x, y, self_offset=0)
    b = loss.terms(x[4:], y[4:], x, y, self_offset=4)
    assert torch.equal(torch.cat([a.counts, b.counts]), whole.counts)
    assert_close(torch.cat([a.values, b.values]), whole.values)


def test_zero_loss_is_attached_with_zero_gradient(gen):
    x, _ = _data(gen)
    x = (x * 100).requires_grad_()
    y = torch.arange(12)  # no positive pairs; negatives far beyond the margin
    loss = fc.contrastive_loss(x, y, normalize=None)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def _all_pairs(y):
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    a1, p = torch.where(same & ~eye)
    a2, n = torch.where(~same)
    return a1, p, a2, n


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "dot", "cosine"])
def test_indices_tuple_pairs_and_triplets(distance, gen):
    x, y = _data(gen)
    pm, nm = {"euclidean": (3.0, 4.0), "squared_euclidean": (9.0, 16.0), "dot": (1.0, -1.0),
              "cosine": (0.5, 0.0)}[distance]
    kw = dict(pos_margin=pm, neg_margin=nm, distance=distance, normalize=None)
    pairs = _all_pairs(y)
    xs = x.clone().requires_grad_()
    got = fc.contrastive_loss(xs, y, indices_tuple=pairs, **kw)
    g1, = torch.autograd.grad(got, xs)
    xs2 = x.clone().requires_grad_()
    full = fc.contrastive_loss(xs2, y, **kw)
    g2, = torch.autograd.grad(full, xs2)
    assert_close(got, full)
    assert_close(g1, g2)
    # triplets with repeats, without labels
    a = torch.tensor([0, 0, 3, 5, 5, 5])
    p = torch.tensor([1, 1, 4, 6, 7, 8])
    n = torch.tensor([2, 2, 9, 10, 11, 0])
    xs = x.clone().requires_grad_()
    got = fc.contrastive_loss(xs, None, indices_tuple=(a, p, n), **kw)
    xr = x.clone().requires_grad_()
    want = ref.pairs(xr, (a, p, n), pm, nm, 1, distance)
    assert_close(got, want)
    assert_close(torch.autograd.grad(got, xs)[0], torch.autograd.grad(want, xr)[0])


def test_indices_tuple_with_ref_set_and_lazy_selection(gen):
    x, y = _data(gen)
    r = torch.randn(6, 7, generator=gen, dtype=torch.float64)

    class Selection:
        def materialize(self):
            return torch.tensor([0, 1, 2]), torch.tensor([5, 4, 3]), torch.tensor([11, 10, 9]), torch.tensor([0, 1, 2])

    got = fc.contrastive_loss(x, y, indices_tuple=Selection(), ref_emb=r, pos_margin=2.0, neg_margin=5.0, power=2, normalize=None)
    want = ref.pairs(x, Selection().materialize(), 2.0, 5.0, 2, "euclidean", ref_emb=r)
    assert_close(got, want)
    none = fc.contrastive_loss(x, y, indices_tuple=Selection(), ref_emb=r, reduction="none", normalize=None)
    assert none.shape == (12,)


def test_empty_indices_give_zero(gen):
    x, y = _data(gen)
    x.requires_grad_()
    e = torch.zeros(0, dtype=torch.int64)
    loss = fc.contrastive_loss(x, y, indices_tuple=(e, e, e), normalize=None)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_public_namespace():
    assert fc.contrastive_loss is fc.pair_margin.contrastive_loss
    assert issubclass(fc.ContrastiveLoss, torch.nn.Module)
    assert "pos_margin=0.0" in repr(fc.ContrastiveLoss(normalize=None))


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(embeddings=[[1.0]]), TypeError, "embeddings"),
    (dict(embeddings=torch.ones(4)), ValueError, "embeddings"),
    (dict(embeddings=torch.full((4, 3), float("nan"))), ValueError, "embeddings"),
    (dict(embeddings=torch.zeros(0, 3)), ValueError, "embeddings"),
    (dict(labels=torch.zeros(4)), TypeError, "labels"),
    (dict(labels=torch.zeros(3, dtype=torch.int64)), ValueError, "labels"),
    (dict(labels=None), ValueError, "labels"),
    (dict(ref_emb=torch.ones(2, 5)), ValueError, "ref_emb"),
    (dict(ref_emb=torch.ones(2, 3)), ValueError, "ref_labels"),
    (dict(ref_labels=torch.zeros(2, dtype=torch.int64)), ValueError, "ref_emb"),
    (dict(pos_margin=float("nan")), ValueError, "pos_margin"),
    (dict(neg_margin="1"), TypeError, "neg_margin"),
    (dict(power=3), ValueError, "power"),
    (dict(power=True), TypeError, "power"),
    (dict(distance="manhattan"), ValueError, "distance"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(average="median"), ValueError, "average"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(indices_tuple=(torch.tensor([0]), torch.tensor([9]), torch.tensor([1]))), ValueError, "indices_tuple"),
    (dict(indices_tuple=(torch.tensor([0]), torch.tensor([1]))), TypeError, "indices_tuple"),
    (dict(indices_tuple=(torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2]))), TypeError, "indices_tuple"),
    (dict(indices_tuple=(torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2]))), ValueError, "indices_tuple"),
])
def test_bad_input(kwargs, exc, word):
    args = dict(embeddings=torch.randn(4, 3), labels=torch.tensor([0, 0, 1, 1]))
    args.update(kwargs)
    emb, labels = args.pop("embeddings"), args.pop("labels")
    with pytest.raises(exc, match=word):
        fc.contrastive_loss(emb, labels, **args)


def test_constructor_validates():
    with pytest.raises(ValueError, match="power"):
        fc.ContrastiveLoss(power=0, normalize=None)
    with pytest.raises(ValueError, match="normalize"):
        fc.ContrastiveLoss(distance="cosine", normalize=False)


def test_compile_training_step_torch_backend(gen):
    """A compiled step (aot_eager: no C compiler needed) with the loss on the PyTorch path."""
    torch._dynamo.reset()
    model = torch.nn.Linear(7, 5).double()
    x, y = _data(gen)

    def step(inp):
        return fc.contrastive_loss(model(inp), y, pos_margin=0.5, neg_margin=2.0, backend="torch", normalize=None)

    eager = step(x)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(step, backend="aot_eager")(x)
    comp_grads = torch.autograd.grad(compiled, list(model.parameters()))
    assert_close(compiled, eager)
    for a, b in zip(comp_grads, eager_grads):
        assert_close(a, b)


def test_backend_choice(gen, monkeypatch):
    x, y = _data(gen)
    monkeypatch.setenv("FASTCONTRAST_BACKEND", "torch")
    a = fc.contrastive_loss(x, y, pos_margin=3.0, neg_margin=4.0, normalize=None)
    monkeypatch.setenv("FASTCONTRAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="FASTCONTRAST_BACKEND"):
        fc.contrastive_loss(x, y, normalize=None)
    monkeypatch.delenv("FASTCONTRAST_BACKEND")
    # float64 on "auto" always stays on the PyTorch path (the kernels accumulate in fp32)
    b = fc.contrastive_loss(x, y, pos_margin=3.0, neg_margin=4.0, backend="auto", normalize=None)
    assert torch.equal(a, b)


def test_hadsell_form_is_tfa_over_all_pairs(gen):
    """power=2, pos_margin=0: the per-pair terms are TF Addons' contrastive_loss of the pair
    distances; averaging over all pairs is Σ values / Σ counts of the terms."""
    from fastcontrast.compat import tfa

    x, y = _data(gen, b=10)
    loss = fc.ContrastiveLoss(pos_margin=0.0, neg_margin=3.5, power=2, normalize=None)
    t = loss.terms(x, y)
    off = ~torch.eye(10, dtype=torch.bool)
    d = torch.cdist(x, x)[off]
    similar = (y[:, None] == y[None, :])[off].long()
    tfa_mean = tfa.contrastive_loss(similar, d, margin=3.5).mean()
    assert_close(t.values.sum() / t.counts.sum(), tfa_mean)
    assert_close(fc.contrastive_loss(x, y, neg_margin=3.5, power=2, average="mean", normalize=None), ref.hadsell(x, y, 3.5))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("power", [1, 2])
def test_term_bounds_keep_only_the_terms_inside(backend, power, gen):
    """terms(..., term_bounds=((pl, ph), (nl, nh))) against a dense float64 enumeration of
    every pair's term: sums and counts of the terms strictly inside each interval, and the
    gradient of those sums only."""
    x, y = _data(gen, b=15)
    x = 0.25 * x  # distances around 1: every kind of term below
    bounds = ((-1.0, 0.2), (0.1, None))
    dtype = torch.float64 if backend == "torch" else torch.float32
    e = x.detach().clone().to(dtype).requires_grad_()
    loss = fc.ContrastiveLoss(pos_margin=0.9, neg_margin=1.5, power=power, normalize=None, backend=backend)
    t = loss.terms(e, y, term_bounds=bounds)
    (t.values[:, 0].sum() + 2 * t.values[:, 1].sum()).backward()

    xd = x.detach().clone().requires_grad_()
    d = torch.cdist(xd, xd)
    same = y[:, None] == y[None, :]
    eye = torch.eye(15, dtype=torch.bool)
    term_pos = (d - 0.9).clamp_min(0) ** power
    term_neg = (1.5 - d).clamp_min(0) ** power
    keep_pos = same & ~eye & (term_pos > -1.0) & (term_pos < 0.2)
    keep_neg = ~same & (term_neg > 0.1)
    want_pos = torch.where(keep_pos, term_pos, 0.0).sum(1)
    want_neg = torch.where(keep_neg, term_neg, 0.0).sum(1)
    (want_pos.sum() + 2 * want_neg.sum()).backward()
    pairs = same & ~eye
    assert (keep_pos & (term_pos == 0)).any() and (pairs & ~keep_pos).any()  # zeros kept, large ones not
    assert (keep_neg & (term_neg > 0)).any() and (~same & ~keep_neg).any()
    assert_close(t.values[:, 0], want_pos.to(dtype))
    assert_close(t.values[:, 1], want_neg.to(dtype))
    assert torch.equal(t.nonzero[:, 0], keep_pos.sum(1)) and torch.equal(t.nonzero[:, 1], keep_neg.sum(1))
    assert_close(e.grad, xd.grad.to(dtype))


@pytest.mark.parametrize("bad, error", [(((0, 1),), TypeError), (((0, "a"), (0, 1)), TypeError),
                                        (((float("nan"), 1), (0, 1)), TypeError)])
def test_bad_term_bounds_are_named(bad, error, gen):
    x, y = _data(gen)
    with pytest.raises(error, match="term_bounds"):
        fc.ContrastiveLoss().terms(x, y, term_bounds=bad)
