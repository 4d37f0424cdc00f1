"""Functional API and Modules of the similarity-softmax family."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast._reduce import LossTerms
from fastcontrast.reference import softmax as ref
from tests.conftest import assert_close, triton_available

F64 = torch.float64


def data(gen, b=12, d=6, classes=4):
    x = torch.randn(b, d, generator=gen, dtype=F64)
    return x, torch.randint(0, classes, (b,), generator=gen)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("distance", ["cosine", "dot", "euclidean"])
def test_nt_xent_pair_form_is_pml_ntxent(distance, gen):
    x, y = data(gen)
    got = fc.nt_xent_loss(x, y, temperature=0.3, distance=distance)
    assert_close(got, ref.pml_ntxent(x, y, 0.3, distance), F64)


def test_supcon_is_mean_over_anchors_with_positives(gen):
    x, y = data(gen)
    y[0] = 99  # an anchor without positives
    values = fc.supcon_loss(x, y, reduction="none")
    assert values[0] == 0
    want = ref.softmax_values(ref.similarity(x, x), y, y, "supcon", 0.1)
    assert_close(values, want, F64)
    assert_close(fc.supcon_loss(x, y), want[1:].mean(), F64)
    assert_close(fc.supcon_loss(x, y, reduction="sum"), want.sum(), F64)


def test_labels_none_means_two_views(gen):
    x, _ = data(gen, b=10)
    views = torch.arange(10) % 5
    assert_close(fc.nt_xent_loss(x), fc.nt_xent_loss(x, views), F64)
    assert_close(fc.supcon_loss(x), fc.supcon_loss(x, views), F64)
    with pytest.raises(ValueError, match="even"):
        fc.nt_xent_loss(x[:9])


def test_simclr_form_is_the_paper_and_supcontrast(gen):
    x, _ = data(gen, b=10)
    got = fc.nt_xent_loss(x, temperature=0.5, form="simclr")
    assert_close(got, ref.simclr_ntxent(x, 0.5), F64)
    feats = torch.nn.functional.normalize(torch.stack([x[:5], x[5:]], 1), dim=2)
    assert_close(got, ref.supcontrast(feats, temperature=0.5, base_temperature=0.5), F64)
    # with two views and unique samples, the pair form equals the paper form
    assert_close(fc.nt_xent_loss(x, temperature=0.5), got, F64)


def test_npair_is_sohn_with_l2(gen):
    a = torch.randn(5, 7, generator=gen, dtype=F64)
    p = torch.randn(5, 7, generator=gen, dtype=F64)
    emb = torch.cat([a, p])
    labels = torch.arange(10) % 5
    assert_close(fc.npair_loss(emb, labels, l2_reg=0.002, normalize=None), ref.sohn_npair(a, p, 0.002), F64)
    assert_close(fc.npair_loss(emb, labels, normalize=None), ref.sohn_npair(a, p), F64)
    assert fc.npair_loss(emb, labels, l2_reg=0.002, reduction="none", normalize=None).shape == (5,)


def test_npair_picks_the_first_pair_per_label(gen):
    x, y = data(gen, b=13, classes=5)
    y[3] = 42  # a label with a single member gives no pair
    assert_close(fc.npair_loss(x, y, normalize=True), ref.pml_npairs(x, y), F64)


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce(symmetric, gen):
    q = torch.randn(6, 5, generator=gen, dtype=F64)
    k = torch.randn(6 if symmetric else 9, 5, generator=gen, dtype=F64)
    got = fc.info_nce_loss(q, k, temperature=0.2, symmetric=symmetric)
    assert_close(got, ref.info_nce(q, k, 0.2, symmetric), F64)
    none = fc.info_nce_loss(q, k, temperature=0.2, symmetric=symmetric, reduction="none")
    assert none.shape == (6,)
    assert_close(none.mean(), got, F64)


def test_ref_emb_has_no_self_exclusion(gen):
    x, y = data(gen, b=7)
    r, ry = data(gen, b=11)
    got = fc.supcon_loss(x, y, ref_emb=r, ref_labels=ry, reduction="none")
    want = ref.softmax_values(ref.similarity(x, r), y, ry, "supcon", 0.1, self_offset=-1)
    assert_close(got, want, F64)
    got = fc.nt_xent_loss(x, y, ref_emb=r, ref_labels=ry)
    assert_close(got, ref.pml_ntxent(x, y, 0.07, ref_emb=r, ref_labels=ry), F64)


# ------------------------------------------------------------------------ temperature


@pytest.mark.parametrize("fn", ["supcon", "ntxent", "info_nce"])
def test_tensor_temperature_gets_a_gradient(fn, gen):
    x, y = data(gen)
    t = torch.tensor(0.3, dtype=F64, requires_grad=True)

    def loss(t):
        if fn == "supcon":
            return fc.supcon_loss(x, y, temperature=t)
        if fn == "ntxent":
            return fc.nt_xent_loss(x, y, temperature=t)
        return fc.info_nce_loss(x[:6], x[6:], temperature=t, symmetric=True)

    assert torch.autograd.gradcheck(loss, (t,))
    assert_close(loss(t), loss(0.3), F64)


def test_module_temperature_parameter_learns(gen):
    x, y = data(gen)
    loss = fc.SupConLoss(temperature=torch.nn.Parameter(torch.tensor(0.5, dtype=F64)))
    assert [n for n, _ in loss.named_parameters()] == ["temperature"]
    loss(x, y).backward()
    assert loss.temperature.grad is not None and loss.temperature.grad != 0


# ------------------------------------------------------------------- terms / reduce


def test_terms_and_reduce_are_the_functional_form(gen):
    x, y = data(gen)
    for module, fn in [(fc.SupConLoss(temperature=0.2), lambda: fc.supcon_loss(x, y, temperature=0.2)),
                       (fc.NTXentLoss(temperature=0.2), lambda: fc.nt_xent_loss(x, y, temperature=0.2)),
                       (fc.NTXentLoss(temperature=0.2, form="simclr"),
                        lambda: fc.nt_xent_loss(x, y, temperature=0.2, form="simclr")),
                       (fc.NPairLoss(l2_reg=0.1, normalize=None), lambda: fc.npair_loss(x, y, l2_reg=0.1, normalize=None))]:
        terms = module.terms(x, y, None, None)
        assert isinstance(terms, LossTerms)
        assert_close(module.reduce(terms), fn(), F64)
        assert_close(module(x, y), fn(), F64)


def test_terms_split_over_ranks_add_up(gen):
    """Two halves of the batch against the whole batch (self_offset = row offset) reduce,
    with global denominators, to the whole-batch loss."""
    x, y = data(gen, b=14)
    for module in (fc.SupConLoss(temperature=0.2), fc.NTXentLoss(temperature=0.2), fc.NTXentLoss(temperature=0.2, form="simclr")):
        whole = module(x, y)
        parts = [module.terms(x[s], y[s], x, y, self_offset=s.start) for s in (slice(0, 6), slice(6, 14))]
        counts = sum(p.counts.sum() for p in parts)
        total = sum(module.reduce(p, denominators=[counts]) for p in parts)
        assert_close(total, whole, F64)


def test_info_nce_terms_with_offset(gen):
    q = torch.randn(8, 4, generator=gen, dtype=F64)
    k = torch.randn(8, 4, generator=gen, dtype=F64)
    module = fc.InfoNCELoss(temperature=0.3)
    part = module.terms(q[4:], None, k, None, self_offset=4)
    assert_close(part.values, module.terms(q, None, k, None).values[4:], F64)


# --------------------------------------------------------------------- indices_tuple


def pml_pairs(y):
    same = y[:, None] == y[None, :]
    pos = same.clone()
    pos.fill_diagonal_(False)
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = (~same).nonzero(as_tuple=True)
    return a1, p, a2, n


def test_indices_tuple_all_pairs_equals_labels(gen):
    x, y = data(gen)
    tup = pml_pairs(y)
    assert_close(fc.nt_xent_loss(x, indices_tuple=tup), fc.nt_xent_loss(x, y), F64)
    assert_close(fc.supcon_loss(x, indices_tuple=tup), fc.supcon_loss(x, y), F64)
    assert_close(fc.nt_xent_loss(x, y, distance="euclidean", indices_tuple=tup),
                 fc.nt_xent_loss(x, y, distance="euclidean"), F64)


def test_indices_tuple_with_ref_emb_needs_no_labels(gen):
    x, y = data(gen, b=6)
    r, ry = data(gen, b=9)
    same = y[:, None] == ry[None, :]
    a1, p = same.nonzero(as_tuple=True)
    a2, n = (~same).nonzero(as_tuple=True)
    got = fc.nt_xent_loss(x, indices_tuple=(a1, p, a2, n), ref_emb=r)
    assert_close(got, fc.nt_xent_loss(x, y, ref_emb=r, ref_labels=ry), F64)
    got = fc.supcon_loss(x, indices_tuple=(a1, p, a2, n), ref_emb=r)
    assert_close(got, fc.supcon_loss(x, y, ref_emb=r, ref_labels=ry), F64)


def test_indices_tuple_lazy_selection(gen):
    x, y = data(gen)

    class Lazy:
        def materialize(self):
            return pml_pairs(y)

    assert_close(fc.nt_xent_loss(x, y, indices_tuple=Lazy()), fc.nt_xent_loss(x, y), F64)


def test_indices_tuple_gradcheck(gen):
    x, y = data(gen, b=8)
    a1, p, a2, n = pml_pairs(y)
    keep = torch.arange(a1.numel()) % 2 == 0
    tup = (a1[keep], p[keep], a2, n)
    x.requires_grad_()
    for distance in ("cosine", "squared_euclidean"):
        assert torch.autograd.gradcheck(
            lambda x: fc.nt_xent_loss(x, indices_tuple=tup, distance=distance, temperature=0.5), (x,))
        assert torch.autograd.gradcheck(
            lambda x: fc.supcon_loss(x, indices_tuple=tup, distance=distance, temperature=0.5), (x,))


def test_indices_tuple_is_checked(gen):
    x, y = data(gen)
    with pytest.raises(TypeError, match="indices_tuple"):
        fc.nt_xent_loss(x, y, indices_tuple=(torch.tensor([0]),))
    with pytest.raises(ValueError, match="indices_tuple"):
        fc.nt_xent_loss(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([99])))
    with pytest.raises(ValueError, match="indices_tuple"):
        fc.supcon_loss(x, y, indices_tuple=(torch.tensor([0, 0]), torch.tensor([1, 1]),
                                            torch.tensor([0]), torch.tensor([1])))


# -------------------------------------------------------------------------- edge cases


def test_nothing_to_average_gives_attached_zero(gen):
    x, _ = data(gen, b=6)
    x.requires_grad_()
    for loss in (fc.supcon_loss(x, torch.arange(6)), fc.nt_xent_loss(x, torch.arange(6)),
                 fc.nt_xent_loss(x, torch.zeros(6, dtype=torch.long)),
                 fc.npair_loss(x, torch.arange(6), normalize=None)):
        assert loss.item() == 0
        g, = torch.autograd.grad(loss, x)
        assert (g == 0).all()


def test_single_row(gen):
    x, _ = data(gen, b=1)
    x.requires_grad_()
    loss = fc.supcon_loss(x, torch.tensor([0]))
    assert loss.item() == 0
    loss.backward()


# -------------------------------------------------------------------------- validation


@pytest.mark.parametrize("call, exc, word", [
    (lambda x, y: fc.supcon_loss(x, y, temperature=0.0), ValueError, "temperature"),
    (lambda x, y: fc.nt_xent_loss(x, y, temperature=-1.0), ValueError, "temperature"),
    (lambda x, y: fc.nt_xent_loss(x, y, temperature=torch.tensor(-0.1)), ValueError, "temperature"),
    (lambda x, y: fc.supcon_loss(x, y, temperature="0.1"), TypeError, "temperature"),
    (lambda x, y: fc.supcon_loss(x, y.float()), TypeError, "labels"),
    (lambda x, y: fc.supcon_loss(x, y[:-1]), ValueError, "labels"),
    (lambda x, y: fc.supcon_loss(x[0], y), ValueError, "embeddings"),
    (lambda x, y: fc.supcon_loss(x[:0], y[:0]), ValueError, "embeddings"),
    (lambda x, y: fc.supcon_loss(x * float("nan"), y), ValueError, "embeddings"),
    (lambda x, y: fc.supcon_loss(x, y, distance="manhattan"), ValueError, "distance"),
    (lambda x, y: fc.supcon_loss(x, y, reduction="avg"), ValueError, "reduction"),
    (lambda x, y: fc.supcon_loss(x, y, backend="cuda"), ValueError, "backend"),
    (lambda x, y: fc.nt_xent_loss(x, y, form="paper"), ValueError, "form"),
    (lambda x, y: fc.nt_xent_loss(x, y, ref_emb=x), ValueError, "ref_"),
    (lambda x, y: fc.nt_xent_loss(x, y, ref_emb=x[:, :3], ref_labels=y), ValueError, "ref_emb"),
    (lambda x, y: fc.nt_xent_loss(x, None, ref_emb=x, ref_labels=y), ValueError, "labels"),
    (lambda x, y: fc.npair_loss(x, y, l2_reg=-1.0, normalize=None), ValueError, "l2_reg"),
    (lambda x, y: fc.npair_loss(x, None, normalize=None), ValueError, "labels"),
    (lambda x, y: fc.info_nce_loss(x, x[:3]), ValueError, "keys"),
    (lambda x, y: fc.info_nce_loss(x, x[:, :2]), ValueError, "keys"),
    (lambda x, y: fc.info_nce_loss(x, torch.cat([x, x]), symmetric=True), ValueError, "symmetric"),
    (lambda x, y: fc.info_nce_loss(x, x, symmetric=1), TypeError, "symmetric"),
])
def test_bad_input_names_the_argument(call, exc, word, gen):
    x, y = data(gen)
    with pytest.raises(exc, match=word):
        call(x, y)


# ------------------------------------------------------------------------------ backends


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
@pytest.mark.parametrize("variant_call", ["supcon", "ntxent"])
def test_triton_backend_matches_torch(variant_call, gen):
    """The Function dispatches to the kernels (interpreter on CPU) with the same results."""
    pytest.importorskip("fastcontrast.kernels.softmax")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the interpreter (conftest)
    x, y = data(gen, b=9, d=5)
    x, y = x.float().to(device), y.to(device)
    t = torch.tensor(0.3, requires_grad=True, device=device)
    fn = fc.supcon_loss if variant_call == "supcon" else fc.nt_xent_loss
    out = {}
    for backend in ("torch", "triton"):
        xb = x.clone().requires_grad_()
        t.grad = None
        loss = fn(xb, y, temperature=t, backend=backend)
        loss.backward()
        out[backend] = (loss.detach(), xb.grad, t.grad.clone())
    for a, b in zip(out["torch"], out["triton"]):
        assert_close(b, a, torch.float32)
