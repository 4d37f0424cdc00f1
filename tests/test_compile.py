"""torch.compile(fullgraph=True) of a training step, with the default (Inductor) backend, for
every loss family, their mining modes and both backends: no graph break, and the compiled
step's losses and gradients equal the eager ones.

While compiling, the PyTorch path runs through opaque custom ops (fastcontrast/_function.py).
One compiled function per backend computes a vector of many loss configurations at once, so
the suite pays for two Inductor compiles, not one per configuration; each loss's gradient is
then taken separately through the same compiled graph."""
import pytest
import torch

import fastcontrast as fc
from tests.conftest import triton_available

B, D, E = 16, 8, 6

pml = pytest.importorskip("fastcontrast.compat.pml")
SEMIHARD_MINER = pml.miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")
HARD_MINER = pml.miners.BatchHardMiner()

# name -> loss of (embeddings z, labels y); every mining mode of the triplet family, the
# options that take their own code paths, and every loss of the other two families
CASES = {
    "triplet all": lambda z, y, bk: fc.triplet_margin_loss(z, y, backend=bk),
    "triplet batch_all": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="batch_all", backend=bk),
    "triplet hard": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="hard", margin=0.5, backend=bk),
    "triplet semihard": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="semihard", margin=0.5, backend=bk),
    "triplet easy": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="easy", margin=1.0, miner_margin=0.05,
                                                           backend=bk),
    "triplet batch_hard": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="batch_hard", backend=bk),
    "triplet batch_hard tfa": lambda z, y, bk: fc.triplet_margin_loss(
        z, y, mining="batch_hard", hard_fallback="tfa", distance="cosine", backend=bk),
    "triplet semihard_tfa": lambda z, y, bk: fc.triplet_margin_loss(z, y, mining="semihard_tfa", backend=bk),
    "triplet smooth": lambda z, y, bk: fc.triplet_margin_loss(z, y, smooth=True, backend=bk),
    "triplet swap": lambda z, y, bk: fc.triplet_margin_loss(z, y, swap=True, mining="batch_all", backend=bk),
    "triplet ref_emb": lambda z, y, bk: fc.triplet_margin_loss(z[:10], y[:10], ref_emb=z[6:], ref_labels=y[6:],
                                                              backend=bk),
    # the compat miners' lazy selections, fused into the native loss
    "triplet + semihard miner": lambda z, y, bk: fc.TripletMarginLoss(margin=0.1, backend=bk)(
        z, y, SEMIHARD_MINER(z, y)),
    "triplet + batch-hard miner": lambda z, y, bk: fc.TripletMarginLoss(margin=0.1, backend=bk)(
        z, y, HARD_MINER(z, y)),
    "contrastive": lambda z, y, bk: fc.contrastive_loss(z, y, backend=bk),
    "contrastive squared cosine": lambda z, y, bk: fc.contrastive_loss(
        z, y, power=2, pos_margin=0.1, neg_margin=0.4, distance="cosine", average="mean", backend=bk),
    "contrastive ref_emb": lambda z, y, bk: fc.contrastive_loss(z[:10], y[:10], ref_emb=z[6:], ref_labels=y[6:],
                                                               backend=bk),
    "supcon": lambda z, y, bk: fc.supcon_loss(z, y, temperature=0.2, backend=bk),
    "nt_xent pair": lambda z, y, bk: fc.nt_xent_loss(z, y, backend=bk),
    "nt_xent simclr views": lambda z, y, bk: fc.nt_xent_loss(z, None, form="simclr", backend=bk),
    "npair": lambda z, y, bk: fc.npair_loss(z, y, l2_reg=0.1, backend=bk),
    "info_nce symmetric": lambda z, y, bk: fc.info_nce_loss(z[:8], z[8:], symmetric=True, backend=bk),
    # the pair-weighted and image-text / self-supervised losses
    "multi_similarity": lambda z, y, bk: fc.multi_similarity_loss(z, y, backend=bk),
    "circle": lambda z, y, bk: fc.circle_loss(z, y, backend=bk),
    "lifted": lambda z, y, bk: fc.lifted_structure_loss(z, y, backend=bk),
    "generalized lifted": lambda z, y, bk: fc.generalized_lifted_structure_loss(z, y, backend=bk),
    "margin": lambda z, y, bk: fc.margin_loss(z, y, backend=bk),
    "siglip": lambda z, y, bk: fc.siglip_loss(z[:8], z[8:], logit_scale=torch.tensor(10.0),
                                              logit_bias=torch.tensor(-10.0), backend=bk),
    "dclw": lambda z, y, bk: fc.dcl_loss(z, temperature=0.1, sigma=0.5, backend=bk),
}

# the kernels run in the interpreter on CPU (slow): one configuration per family there, and
# Lifted (its own pair kernels next to the softmax ones)
TRITON_CASES = ("triplet semihard", "contrastive", "supcon", "lifted")

LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 4, 2, 3, 1, 0, 5])  # a lonely label, uneven classes


def _compare(backend, names, b):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(D, E)
    x = torch.randn(b, D, generator=gen)
    y = LABELS[:b]

    def step(inp, labels):
        z = model(inp)
        return torch.stack([CASES[name](z, labels, backend) for name in names])

    compiled = torch.compile(step, fullgraph=True)  # the default backend: Inductor
    eager_losses, compiled_losses = step(x, y), compiled(x, y)
    zero = [name for name, v in zip(names, eager_losses.tolist()) if not v > 0]
    assert not zero, zero  # a case whose loss is 0 would check little
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-5, atol=1e-6)
    return model, eager_losses, compiled_losses


def test_compiled_training_step_matches_eager():
    """PyTorch path: every configuration's loss and its own parameter gradients."""
    model, eager_losses, compiled_losses = _compare("torch", tuple(CASES), B)
    params = list(model.parameters())
    for k, name in enumerate(CASES):
        want = torch.autograd.grad(eager_losses[k], params, retain_graph=True)
        got = torch.autograd.grad(compiled_losses[k], params, retain_graph=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif(not triton_available(), reason="triton does not import")
def test_compiled_training_step_matches_eager_triton():
    """Triton backend (registered kernel ops): losses and the gradient of a weighted sum."""
    model, eager_losses, compiled_losses = _compare("triton", TRITON_CASES, 10)
    weights = torch.tensor([1.0, 0.5, 2.0, 0.7])
    params = list(model.parameters())
    want = torch.autograd.grad((weights * eager_losses).sum(), params)
    got = torch.autograd.grad((weights * compiled_losses).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_explain_reports_no_graph_break():
    """torch._dynamo.explain sees one graph for each family on the PyTorch path."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    for name in ("triplet semihard", "triplet batch_hard", "contrastive", "npair", "supcon"):
        torch._dynamo.reset()
        report = torch._dynamo.explain(lambda z: CASES[name](z, y, "torch"))(x.clone().requires_grad_())
        assert report.graph_break_count == 0, (name, report.break_reasons)
        assert report.graph_count == 1, name
