"""Property-based: every loss family × distance on random shapes, label patterns (one class,
all distinct, one dominant class, classes of size 1) and magnitudes (1e-20 … 1e19, zero rows,
near duplicates), float32 against float64 on the same values: always finite, and equal to
float32 accuracy where the loss is smooth in its inputs (the softmax family; the hinge and
mining losses may flip a decision at a kink between precisions, so only their finiteness and
their float64 agreement on exactly representable ties are asserted). Fixed example budget and
seed: deterministic in CI."""
import torch
from hypothesis import given, settings, strategies as st

import fastcontrast as fc

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True)
SMOOTH = {
    "supcon-cosine": lambda x, y: fc.supcon_loss(x, y, temperature=0.3),
    "supcon-euclidean": lambda x, y: fc.supcon_loss(x, y, distance="euclidean", normalize=True),
    "ntxent-cosine": lambda x, y: fc.nt_xent_loss(x, y, temperature=0.5),
    "npair-normalized": lambda x, y: fc.npair_loss(x, y, normalize=True),
}
KINKED = {
    "contrastive-euclidean": lambda x, y: fc.contrastive_loss(x, y, normalize=None),
    "contrastive-sq-normalized": lambda x, y: fc.contrastive_loss(x, y, distance="squared_euclidean",
                                                                   normalize=True, power=2),
    "triplet-semihard": lambda x, y: fc.triplet_margin_loss(x, y, mining="semihard", normalize=True),
    "triplet-batch-all-dot": lambda x, y: fc.triplet_margin_loss(x, y, mining="batch_all", distance="dot", normalize=None),
    "triplet-batch-hard": lambda x, y: fc.triplet_margin_loss(x, y, mining="batch_hard", normalize=None),
    "triplet-semihard-tfa": lambda x, y: fc.triplet_margin_loss(x, y, mining="semihard_tfa", margin=1.0, normalize=None),
}


def labels(pattern: str, b: int, gen) -> torch.Tensor:
    if pattern == "one_class":
        return torch.zeros(b, dtype=torch.long)
    if pattern == "all_distinct":
        return torch.arange(b)
    if pattern == "dominant":
        y = torch.zeros(b, dtype=torch.long)
        y[: max(1, b // 10)] = torch.arange(1, max(1, b // 10) + 1)
        return y
    return torch.randint(0, 3, (b,), generator=gen)


def rows(b, d, exponent, special, gen):
    x = torch.randn(b, d, generator=gen, dtype=torch.float64) * 10.0 ** exponent
    if special == "zero_row":
        x[0] = 0
    elif special == "near_duplicate" and b > 1:  # 1e-4·‖x‖ away in a random direction (not a rescaling,
        step = torch.randn(d, generator=gen, dtype=torch.float64)  # which normalization would undo)
        x[1] = x[0] + 1e-4 * x[0].norm() * step / step.norm()
    elif special == "duplicate":
        x[1] = x[0]
    return x.float()  # float32 values; float64 of them is the exact reference


def value_and_grad(fn, x, y):
    x = x.clone().requires_grad_()
    loss = fn(x, y)
    loss.backward()
    return loss.detach(), x.grad


CASES = dict(b=st.integers(2, 14), d=st.integers(1, 9),
             pattern=st.sampled_from(["random", "one_class", "all_distinct", "dominant"]),
             exponent=st.sampled_from([-20, -3, 0, 3, 19]),
             special=st.sampled_from(["none", "zero_row", "near_duplicate", "duplicate"]),
             seed=st.integers(0, 2**16))


@PROPERTY
@given(name=st.sampled_from(sorted(SMOOTH)), **CASES)
def test_smooth_losses_match_float64(name, b, d, pattern, exponent, special, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = rows(b, d, exponent, special, gen), labels(pattern, b, gen)
    v, g = value_and_grad(SMOOTH[name], x, y)
    v64, g64 = value_and_grad(SMOOTH[name], x.double(), y)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    torch.testing.assert_close(v.double(), v64, rtol=1e-4, atol=1e-6)
    # gradients of normalized rows scale as 1/‖x‖: compare relative to the largest one, but at
    # least 1e-6/‖x‖ (where the true gradient is 0, e.g. d = 1, the float64 one is rounding
    # noise, 1e-17 of that). A near duplicate 1e-4 away is normalized in float32 first, whose
    # rounding (6e-8) is 6e-4 of the gap that the gradient's direction comes from: a float32
    # floor of the inputs, not of the loss
    scale = torch.maximum(g64.abs().max(), 1e-6 / x.double().norm(dim=1).max()).clamp_min(1e-300)
    tol = 1e-2 if special == "near_duplicate" else 1e-3
    assert float((g.double() - g64).abs().max() / scale) < tol


@PROPERTY
@given(name=st.sampled_from(sorted(KINKED)), **CASES)
def test_hinge_and_mining_losses_are_finite(name, b, d, pattern, exponent, special, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = rows(b, d, exponent, special, gen), labels(pattern, b, gen)
    if name.startswith("triplet-batch-all-dot") and exponent > 9:
        x = x / 1e10  # dot products of 1e19-norm rows are beyond float32: not a finite question
    v, g = value_and_grad(KINKED[name], x, y)
    assert torch.isfinite(v) and torch.isfinite(g).all(), (v, g)
