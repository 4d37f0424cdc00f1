"""The stage-1 losses in their default ("tfa") conventions equal the formulas the original
study computed with TensorFlow Addons, written out densely here in float64."""
import pytest
import torch
from torch.nn import functional as F

from fastcontrast.experiment.losses import CONTRASTIVE_LOSSES, LossSettings, build_loss


@pytest.fixture
def batch():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(11, 6, dtype=torch.float64), dim=1).requires_grad_()
    y = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 4, 3])  # label 4 has no positive
    return z, y


def check(fn, ref, z, y):
    value, expected = fn(z, y), ref(z, y)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    g, g_ref = (torch.autograd.grad(v, z)[0] for v in (value, expected))
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)


def test_max_margin_is_hadsell_mean_over_all_pairs(batch):
    def ref(z, y):
        i, j = torch.triu_indices(len(y), len(y), 1)
        d = (z[i] - z[j]).norm(dim=1)
        same = (y[i] == y[j]).double()
        return (same * d ** 2 + (1 - same) * torch.relu(1.0 - d) ** 2).mean()

    check(build_loss("max-margin", LossSettings()), ref, *batch)


def test_npair_is_tfa_npairs_on_the_gram_matrix(batch):
    def ref(z, y):
        target = (y[:, None] == y[None]).double()
        target = target / target.sum(1, keepdim=True)
        return -(target * torch.log_softmax(z @ z.T, 1)).sum(1).mean()

    check(build_loss("npair", LossSettings()), ref, *batch)


def test_supcon_is_the_scaled_supervised_nt_xent(batch):
    tau, base = 0.5, 0.07

    def ref(z, y):
        u = F.normalize(z, dim=1)  # cosine: normalized again inside, which matters for the gradient
        logits = (u @ u.T) / tau
        eye = torch.eye(len(y), dtype=torch.bool)
        pos = (y[:, None] == y[None]) & ~eye
        log_prob = logits - logits.masked_fill(eye, float("-inf")).logsumexp(1, keepdim=True)
        has = pos.any(1)  # the anchor without a positive is left out
        per_anchor = -(log_prob * pos).sum(1)[has] / pos.sum(1)[has]
        return (tau / base) * per_anchor.mean()

    check(build_loss("supcon", LossSettings(temperature=tau, base_temperature=base)), ref, *batch)


def test_nt_xent_is_the_per_pair_supervised_nt_xent(batch):
    tau = 0.2

    def ref(z, y):
        u = F.normalize(z, dim=1)
        logits = (u @ u.T) / tau
        terms = []
        for a in range(len(y)):
            neg = logits[a][y != y[a]]
            for p in range(len(y)):
                if p != a and y[p] == y[a]:  # other positives stay out of the denominator
                    terms.append(-(logits[a, p] - torch.cat([logits[a, p:p + 1], neg]).logsumexp(0)))
        return torch.stack(terms).mean()

    check(build_loss("nt-xent", LossSettings(temperature=tau)), ref, *batch)


def _dist(z):
    return (z[:, None] - z[None]).norm(dim=2)


def test_semihard_is_tfa_triplet_semihard(batch):
    def ref(z, y):
        d, m, terms = _dist(z), 1.0, []
        for a in range(len(y)):
            neg = d[a][y != y[a]]
            for p in range(len(y)):
                if p == a or y[p] != y[a]:
                    continue
                farther = neg[neg > d[a, p]]
                d_an = farther.min() if len(farther) else neg.max()
                terms.append(torch.relu(m + d[a, p] - d_an))
        return torch.stack(terms).mean()

    check(build_loss("triplet-semihard", LossSettings()), ref, *batch)


def test_hard_is_tfa_triplet_hard(batch):
    def ref(z, y):
        d, m, terms = _dist(z), 1.0, []
        for a in range(len(y)):
            pos = (y == y[a]) & (torch.arange(len(y)) != a)
            d_ap = d[a][pos].max() if pos.any() else d.new_zeros(())
            terms.append(torch.relu(d_ap - d[a][y != y[a]].min() + m))
        return torch.stack(terms).mean()

    check(build_loss("triplet-hard", LossSettings()), ref, *batch)


@pytest.mark.parametrize("semantics", ["tfa", "pml"])
@pytest.mark.parametrize("name", CONTRASTIVE_LOSSES)
def test_every_loss_trains(name, semantics, batch):
    z, y = batch
    value = build_loss(name, LossSettings(semantics=semantics))(z.float(), y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(z.grad).all()


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'triplet-soft'"):
        build_loss("triplet-soft", LossSettings())
