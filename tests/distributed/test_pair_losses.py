"""Multi-Similarity, Circle, generalized Lifted and Margin losses through GlobalBatchLoss on
spawned gloo groups: loss value and DDP parameter gradients equal one process on the
concatenated batch (float64). LiftedStructureLoss runs as "whole_rows" (a positive pair's
negatives include those of its positive's own anchor row, which another rank may hold)."""
import torch

import fastcontrast as fc
from fastcontrast.distributed import GlobalBatchLoss, distributed_mode

from ._cases import check_global
from ._ranks import run_ranks

CASES = {
    "ms": (lambda: fc.MultiSimilarityLoss(alpha=2.0, beta=8.0, base=0.3, backend="torch"), {}),
    "ms-euclidean-ref": (lambda: fc.MultiSimilarityLoss(beta=5.0, distance="euclidean", normalize=True,
                                                        backend="torch"), {"ref": True}),
    "circle": (lambda: fc.CircleLoss(gamma=16.0, backend="torch"), {}),
    "circle-rank0-alone": (lambda: fc.CircleLoss(gamma=16.0, backend="torch"), {"labels": "rank0_alone"}),
    "glifted": (lambda: fc.GeneralizedLiftedStructureLoss(neg_margin=2.0, backend="torch"), {}),
    "margin": (lambda: fc.MarginLoss(margin=0.3, beta=1.5, backend="torch"), {}),
    # β in float64 like the embeddings (a float32 β's gradient would round at float32)
    "margin-learned-beta": (lambda: fc.MarginLoss(margin=0.3, beta=1.5, learn_beta=True, nu=0.1,
                                                  backend="torch").double(), {}),
    "margin-per-class": (lambda: fc.MarginLoss(margin=0.3, beta=1.5, learn_beta=True, nu=0.1, num_classes=3,
                                               backend="torch").double(), {}),
    "margin-per-class-sum": (lambda: fc.MarginLoss(margin=0.3, beta=1.5, learn_beta=True, nu=0.1, num_classes=3,
                                                   reduction="sum", backend="torch").double(), {}),
}
LIFTED = {
    "lifted": (lambda: fc.LiftedStructureLoss(neg_margin=1.5, pos_margin=0.2, backend="torch"), {}),
    "lifted-sum-cosine": (lambda: fc.LiftedStructureLoss(neg_margin=0.4, distance="cosine", reduction="sum",
                                                         backend="torch"), {}),
    "lifted-dot-ref": (lambda: fc.LiftedStructureLoss(neg_margin=0.5, pos_margin=0.1, distance="dot",
                                                      backend="torch"), {"ref": True}),
    "lifted-local-singletons": (lambda: fc.LiftedStructureLoss(neg_margin=2.0, backend="torch"),
                                {"labels": "local_singletons"}),
    "lifted-one-class": (lambda: fc.LiftedStructureLoss(backend="torch"), {"labels": "one_class"}),
}
CASES.update(LIFTED)


def native(loss, emb, labels, ref_emb, ref_labels):
    return loss(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)


def _worker(rank, world, sizes, ref_sizes, names, dtype=torch.float64):
    for name in names:
        make, opts = CASES[name]
        check_global(rank, world, name, sizes, make, GlobalBatchLoss, native, labels=opts.get("labels", "classes"),
                     ref_sizes=ref_sizes if opts.get("ref") else None, dtype=dtype)


def test_pair_losses_three_ranks():
    run_ranks(_worker, 3, (6, 9, 4), (5, 2, 7), list(CASES))



def test_lifted_two_ranks():
    run_ranks(_worker, 2, (7, 4), (3, 6), list(LIFTED))


def test_lifted_declares_whole_rows():
    # the rows split would miss the negatives of a positive's anchor row held by another rank
    assert distributed_mode(fc.LiftedStructureLoss()) == "whole_rows"
    assert distributed_mode(fc.GeneralizedLiftedStructureLoss()) == "rows"
