"""fastcontrast.compat.pml.losses.ContrastiveLoss against pytorch-metric-learning itself."""
import pytest
import torch

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402

from fastcontrast.compat.pml import distances, losses  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

# (fastcontrast distance, PML distance, pos_margin, neg_margin)
CASES = {
    "default": (None, None, 0.0, 1.0),
    "lp_margins": (distances.LpDistance(), pml_distances.LpDistance(), 0.3, 1.2),
    "lp_unnormalized": (distances.LpDistance(normalize_embeddings=False),
                        pml_distances.LpDistance(normalize_embeddings=False), 3.0, 5.0),
    "lp_squared": (distances.LpDistance(power=2), pml_distances.LpDistance(power=2), 0.2, 1.5),
    "cosine": (distances.CosineSimilarity(), pml_distances.CosineSimilarity(), 0.8, 0.1),
    "dot": (distances.DotProductSimilarity(normalize_embeddings=False),
            pml_distances.DotProductSimilarity(normalize_embeddings=False), 2.0, -1.0),
}


def _pair(case):
    ours_d, theirs_d, pm, nm = CASES[case]
    ours = losses.ContrastiveLoss(pm, nm, distance=ours_d) if ours_d else losses.ContrastiveLoss()
    theirs = pml_losses.ContrastiveLoss(pm, nm, distance=theirs_d) if theirs_d else pml_losses.ContrastiveLoss()
    return ours, theirs


def _compare(ours, theirs, dtype, x, *args, ref=None, **kwargs):
    xa = x.detach().to(dtype).clone().requires_grad_()
    xb = x.detach().to(dtype).clone().requires_grad_()
    inputs_a, inputs_b = [xa], [xb]
    if ref is not None:
        ra = ref.detach().to(dtype).clone().requires_grad_()
        rb = ref.detach().to(dtype).clone().requires_grad_()
        kwargs_a, kwargs_b = dict(kwargs, ref_emb=ra), dict(kwargs, ref_emb=rb)
        inputs_a.append(ra)
        inputs_b.append(rb)
    else:
        kwargs_a = kwargs_b = kwargs
    a = ours(xa, *args, **kwargs_a)
    b = theirs(xb, *args, **kwargs_b)
    assert a.dtype == b.dtype
    assert_close(a, b, dtype)
    ga = torch.autograd.grad(a, inputs_a, allow_unused=True)
    gb = torch.autograd.grad(b, inputs_b, allow_unused=True)
    for u, v in zip(ga, gb):
        u = torch.zeros_like(inputs_a[0]) if u is None else u
        v = torch.zeros_like(inputs_a[0]) if v is None else v
        assert_close(u, v, dtype)
    return a


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients(case, dtype, gen):
    x = torch.randn(23, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (23,), generator=gen)
    ours, theirs = _pair(case)
    loss = _compare(ours, theirs, dtype, x, y)
    assert loss.item() > 0


@pytest.mark.parametrize("case", ["default", "cosine", "lp_squared"])
def test_ref_emb(case, gen):
    x = torch.randn(11, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    r = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    rl = torch.randint(0, 3, (7,), generator=gen)
    ours, theirs = _pair(case)
    _compare(ours, theirs, torch.float64, x, y, ref=r, ref_labels=rl)
    # ref_labels being the labels object itself: PML drops the diagonal pairs
    r2 = torch.randn(11, 6, generator=gen, dtype=torch.float64)
    _compare(ours, theirs, torch.float64, x, y, ref=r2, ref_labels=y)
    _compare(ours, theirs, torch.float64, x, y, ref=r2, ref_labels=y.clone())


@pytest.mark.parametrize("case", ["default", "cosine"])
def test_indices_tuple(case, gen):
    x = torch.randn(14, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (14,), generator=gen)
    ours, theirs = _pair(case)
    triplets = pml_miners.TripletMarginMiner(margin=0.5)(x, y)
    assert len(triplets[0]) > 3
    _compare(ours, theirs, torch.float64, x, y, indices_tuple=triplets)
    pairs = pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=0.9)(x, y)
    _compare(ours, theirs, torch.float64, x, y, indices_tuple=pairs)
    _compare(ours, theirs, torch.float64, x, None, indices_tuple=triplets)


def test_early_exit_quirk(gen):
    """PML returns 0 when there is at most one positive and one negative pair."""
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    ours, theirs = _pair("default")
    one = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([0]))
    assert _compare(ours, theirs, torch.float64, x, y, indices_tuple=one).item() == 0.0
    # one query against one reference of another label: a single negative pair
    _compare(ours, theirs, torch.float64, x[:1], y[:1], ref=x[2:3], ref_labels=y[2:3])


def test_mean_reducer(gen):
    x = torch.randn(15, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (15,), generator=gen)
    ours = losses.ContrastiveLoss(0.2, 0.8, reducer=pml_reducers.MeanReducer())
    theirs = pml_losses.ContrastiveLoss(0.2, 0.8, reducer=pml_reducers.MeanReducer())
    _compare(ours, theirs, torch.float64, x, y)


@pytest.mark.parametrize("labels", ["single_class", "all_distinct", "duplicates"])
def test_edge_batches(labels, gen):
    x = torch.randn(12, 6, generator=gen, dtype=torch.float64)  # ≤ 25 rows: cdist is exact
    if labels == "single_class":
        y = torch.zeros(12, dtype=torch.int64)
    elif labels == "all_distinct":
        y = torch.arange(12)
    else:
        y = torch.randint(0, 3, (12,), generator=gen)
        x[5] = x[2]
        y[5] = y[2]
        x[9] = x[2]
        y[9] = y[2] + 1
    for case in ("default", "lp_unnormalized", "cosine"):
        ours, theirs = _pair(case)
        _compare(ours, theirs, torch.float64, x, y)
        _compare(ours, theirs, torch.float32, x, y)


def test_accepts_pml_distance_objects_and_keeps_attributes(gen):
    x = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    ours = losses.ContrastiveLoss(0.9, 0.2, distance=pml_distances.CosineSimilarity())
    theirs = pml_losses.ContrastiveLoss(0.9, 0.2, distance=pml_distances.CosineSimilarity())
    _compare(ours, theirs, torch.float64, x, y)
    assert ours.pos_margin == 0.9 and ours.neg_margin == 0.2


def test_terms_and_reduce_match_forward(gen):
    x = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    loss = losses.ContrastiveLoss(0.1, 0.9)
    assert_close(loss.reduce(loss.terms(x, y)), loss(x, y))


def test_bad_arguments(gen):
    with pytest.raises(TypeError, match="distance"):
        losses.ContrastiveLoss(distance="euclidean")
    with pytest.raises(TypeError, match="reducer"):
        losses.ContrastiveLoss(reducer="avg_nonzero")
    with pytest.raises(TypeError, match="embedding_regularizer"):
        losses.ContrastiveLoss(embedding_regularizer=object())
    with pytest.raises(ValueError, match="labels"):
        losses.ContrastiveLoss()(torch.randn(4, 3))
