"""The PyTorch path of the similarity-softmax family against the dense reference."""
import pytest
import torch

from fastcontrast import metrics
from fastcontrast._torch import softmax as torch_softmax
from fastcontrast.reference import softmax as ref
from fastcontrast.softmax import softmax_values

from tests.conftest import assert_close

DISTANCES = ("dot", "cosine", "squared_euclidean", "euclidean")
VARIANTS = ("supcon", "ntxent")


def run(x, y, labels, ref_labels, distance, variant, temperature, self_offset):
    """values of the torch path on raw inputs (y None: the batch is its own reference set)."""
    m = metrics.resolve_metric(distance)
    q = metrics.prepare(x, m)
    r = q if y is None else metrics.prepare(y, m)
    values, n_pos = softmax_values(q, r, labels, labels if ref_labels is None else ref_labels,
                                   kind=m.kind, variant=variant, self_offset=self_offset,
                                   temperature=temperature, backend="torch")
    return values, n_pos


def expected(x, y, labels, ref_labels, distance, variant, temperature, self_offset):
    sim = ref.similarity(x, x if y is None else y, distance)
    return ref.softmax_values(sim, labels, labels if ref_labels is None else ref_labels, variant,
                              temperature, self_offset)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_grads_match_reference(distance, variant, dtype, gen):
    x = torch.randn(13, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (13,), generator=gen)
    xa = x.detach().clone().to(dtype).requires_grad_()
    xb = x.detach().clone().requires_grad_()
    values, n_pos = run(xa, None, labels, None, distance, variant, 0.3, 0)
    want = expected(xb, None, labels, None, distance, variant, 0.3, 0)
    assert_close(values, want, dtype)
    same = labels[:, None] == labels[None, :]
    assert torch.equal(n_pos, same.sum(1) - 1)
    w = torch.randn(13, generator=gen, dtype=torch.float64)
    (values * w.to(values.dtype)).sum().backward()
    (want * w).sum().backward()
    assert_close(xa.grad, xb.grad, dtype)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_with_temperature(distance, variant, gen):
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 0])
    ref_labels = torch.tensor([1, 0, 2, 0, 4, 1])

    def f(x, y, t):
        return run(x, y, labels, ref_labels, distance, variant, t, -1)[0]

    assert torch.autograd.gradcheck(f, (x, y, t))

    def g(x, t):  # the batch as its own reference set: two gradient paths into x
        return run(x, None, labels, None, distance, variant, t, 0)[0]

    assert torch.autograd.gradcheck(g, (x, t))


@pytest.mark.parametrize("variant", VARIANTS)
def test_chunking_does_not_change_anything(variant, gen, monkeypatch):
    x = torch.randn(23, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (23,), generator=gen)

    def once():
        values, _ = run(x, None, labels, None, "euclidean", variant, t, 0)
        gx, gt = torch.autograd.grad((values * torch.arange(23.0, dtype=values.dtype)).sum(), (x, t))
        return values.detach(), gx, gt

    whole = once()
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 23 * 2)  # 2 rows per chunk
    chunked = once()
    monkeypatch.setattr(torch_softmax, "CHUNK_BUDGET", 1)  # 1 row per chunk
    rows = once()
    for a, b, c in zip(whole, chunked, rows):
        assert_close(b, a, torch.float64)
        assert_close(c, a, torch.float64)


def test_self_offset_excludes_the_shifted_pair(gen):
    # queries are rows 3..7 of the reference set: self_offset = 3
    r = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    r_labels = torch.randint(0, 3, (10,), generator=gen)
    for variant in VARIANTS:
        values, n_pos = run(r[3:8], r, r_labels[3:8], r_labels, "cosine", variant, 0.5, 3)
        whole, _ = run(r, None, r_labels, None, "cosine", variant, 0.5, 0)
        assert_close(values, whole[3:8], torch.float64)
        assert_close(values, expected(r[3:8], r, r_labels[3:8], r_labels, "cosine", variant, 0.5, 3),
                     torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["single_class", "all_distinct", "some_alone", "duplicates"])
def test_edge_cases(variant, case, gen):
    b = 8
    x = torch.randn(b, 6, generator=gen, dtype=torch.float64)
    labels = {"single_class": torch.zeros(b, dtype=torch.long),
              "all_distinct": torch.arange(b),
              "some_alone": torch.tensor([0, 0, 1, 2, 2, 2, 3, 4]),
              "duplicates": torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])}[case]
    if case == "duplicates":
        x[1] = x[0]
        x[6] = x[0]
        x[3] = x[2]
    x.requires_grad_()
    for distance in DISTANCES:
        values, n_pos = run(x, None, labels, None, distance, variant, 0.1, 0)
        want = expected(x, None, labels, None, distance, variant, 0.1, 0)
        assert_close(values, want, torch.float64)
        gx, = torch.autograd.grad(values.sum(), x)
        assert torch.isfinite(gx).all() and torch.isfinite(values).all()
        alone = n_pos == 0
        assert (values[alone] == 0).all()
        if case == "all_distinct":
            assert (values == 0).all() and (gx == 0).all()
        if case == "single_class" and variant == "ntxent":  # no negatives anywhere
            assert (values == 0).all() and (gx == 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_set_larger_and_smaller(variant, gen):
    for n in (3, 17):
        x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
        y = torch.randn(n, 5, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 3, (6,), generator=gen)
        ref_labels = torch.randint(0, 3, (n,), generator=gen)
        values, n_pos = run(x, y, labels, ref_labels, "squared_euclidean", variant, 0.7, -1)
        assert_close(values, expected(x, y, labels, ref_labels, "squared_euclidean", variant, 0.7, -1),
                     torch.float64)
        assert torch.equal(n_pos, (labels[:, None] == ref_labels[None, :]).sum(1))


def test_extreme_logits_stay_finite(gen):
    x = torch.randn(9, 4, generator=gen, dtype=torch.float32) * 30
    labels = torch.randint(0, 3, (9,), generator=gen)
    x.requires_grad_()
    for variant in VARIANTS:
        for distance in ("dot", "squared_euclidean"):
            values, _ = run(x, None, labels, None, distance, variant, 1e-3, 0)
            gx, = torch.autograd.grad(values.sum(), x)
            assert torch.isfinite(values).all() and torch.isfinite(gx).all()


def test_half_precision_accumulates_in_float32(gen):
    x = torch.randn(10, 8, generator=gen)
    labels = torch.randint(0, 3, (10,), generator=gen)
    xh = x.half().requires_grad_()
    values, _ = run(xh, None, labels, None, "cosine", "supcon", 0.1, 0)
    assert values.dtype == torch.float32
    want = expected(x.double(), None, labels, None, "cosine", "supcon", 0.1, 0)
    assert_close(values, want, torch.float16)
    values.sum().backward()
    assert xh.grad.dtype == torch.float16 and torch.isfinite(xh.grad).all()


@pytest.mark.parametrize("distance", DISTANCES)
def test_positive_offset_matches_the_labels(distance, gen, monkeypatch):
    """positive_offset (query i's only positive is reference i + offset: InfoNCE, N-pair)
    gives what the equivalent labels give: values, counts and every gradient, in one chunk
    and in many. With offset 4, queries 5 and 6 have no positive among the 9 references."""
    m = metrics.resolve_metric(distance)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, generator=gen, dtype=torch.float64)

    def once(labels, positive_offset):
        values, n_pos = softmax_values(metrics.prepare(x, m), metrics.prepare(y, m), labels,
                                       torch.arange(9), kind=m.kind, variant="supcon", self_offset=-1,
                                       temperature=t, backend="torch", positive_offset=positive_offset)
        return (values, n_pos, *torch.autograd.grad((values * w).sum(), (x, y, t)))

    for offset in (0, 4):
        labels = torch.arange(7) + offset
        want = once(labels, -1)
        assert torch.equal(want[1], (labels < 9).long())
        with monkeypatch.context() as patch:
            for budget in (None, 9 * 2):  # whole, then 2 rows per chunk
                if budget:
                    patch.setattr(torch_softmax, "CHUNK_BUDGET", budget)
                got = once(labels, offset)
                assert torch.equal(got[1], want[1])
                for a, b in zip(got[:1] + got[2:], want[:1] + want[2:]):
                    assert_close(a, b, torch.float64)
