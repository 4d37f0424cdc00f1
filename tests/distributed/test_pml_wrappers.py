"""fastcontrast.compat.pml.utils.distributed: DistributedLossWrapper / DistributedMinerWrapper
with pytorch-metric-learning's signatures, exact in both modes with unequal batches."""
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses_ref
from pytorch_metric_learning import miners as pml_miners_ref

from fastcontrast.compat.pml import losses as pml_losses
from fastcontrast.compat.pml import miners as pml_miners
from fastcontrast.compat.pml.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

from ._cases import check_global
from ._ranks import run_ranks


class MinedLoss(torch.nn.Module):
    """loss(embeddings, labels, miner(embeddings, labels))."""

    def __init__(self, miner, loss):
        super().__init__()
        self.miner, self.loss = miner, loss

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


def call(loss, emb, labels, ref_emb, ref_labels):
    return loss(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)


def wrapper(efficient):
    def wrap(loss):
        if isinstance(loss, MinedLoss):
            return MinedLoss(DistributedMinerWrapper(loss.miner, efficient=efficient),
                             DistributedLossWrapper(loss.loss, efficient=efficient))
        return DistributedLossWrapper(loss, efficient=efficient)
    return wrap


# name -> (factory, options)
CASES = {
    "fc-contrastive": (lambda: pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch"), {}),
    "fc-contrastive-ref": (lambda: pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch"), {"ref": True}),
    "fc-ntxent": (lambda: pml_losses.NTXentLoss(temperature=0.3, backend="torch"), {}),
    "fc-supcon": (lambda: pml_losses.SupConLoss(temperature=0.2, backend="torch"), {}),
    "fc-supcon-one-class": (lambda: pml_losses.SupConLoss(backend="torch"), {"labels": "one_class"}),
    "fc-npairs": (lambda: pml_losses.NPairsLoss(backend="torch"), {}),
    "multisimilarity-miner+fc-ntxent": (lambda: MinedLoss(
        pml_miners_ref.MultiSimilarityMiner(epsilon=0.3),
        pml_losses.NTXentLoss(temperature=0.3, backend="torch")), {}),
    "fc-lifted (whole loss on every rank)": (lambda: pml_losses.LiftedStructureLoss(neg_margin=1.5,
                                                                                     backend="torch"), {}),
    "fc-pairmargin-miner+fc-contrastive (lazy, materialized)": (lambda: MinedLoss(
        pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=1.2),
        pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch")), {}),
    "fc-triplet": (lambda: pml_losses.TripletMarginLoss(margin=0.3, backend="torch"), {}),
    "fc-semihard-miner+fc-triplet (lazy, fused)": (lambda: MinedLoss(
        pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard"),
        pml_losses.TripletMarginLoss(margin=0.3, backend="torch")), {}),
    "fc-batchhard-miner+fc-triplet (lazy, fused)": (lambda: MinedLoss(
        pml_miners.BatchHardMiner(), pml_losses.TripletMarginLoss(margin=0.3, backend="torch")), {}),
    "fc-easy-miner+fc-contrastive (lazy, materialized)": (lambda: MinedLoss(
        pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="easy"),
        pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch")), {}),
    "pml-hard-miner+fc-triplet": (lambda: MinedLoss(
        pml_miners_ref.TripletMarginMiner(margin=0.4, type_of_triplets="hard"),
        pml_losses.TripletMarginLoss(margin=0.4, backend="torch")), {}),
    "pml-contrastive": (lambda: pml_losses_ref.ContrastiveLoss(neg_margin=1.5), {}),
    "pml-triplet": (lambda: pml_losses_ref.TripletMarginLoss(margin=0.3), {}),
    "semihard-miner+fc-contrastive": (lambda: MinedLoss(
        pml_miners_ref.TripletMarginMiner(margin=0.5, type_of_triplets="semihard"),
        pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch")), {}),
    "multisimilarity-miner+fc-contrastive": (lambda: MinedLoss(
        pml_miners_ref.MultiSimilarityMiner(epsilon=0.3),
        pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch")), {}),
    "hard-miner+pml-triplet": (lambda: MinedLoss(
        pml_miners_ref.TripletMarginMiner(margin=0.4, type_of_triplets="hard"),
        pml_losses_ref.TripletMarginLoss(margin=0.4)), {}),
}


def _worker(rank, world, sizes, ref_sizes, efficient_modes):
    for efficient in efficient_modes:
        for name, (make, opts) in CASES.items():
            check_global(rank, world, f"{name}, efficient={efficient}", sizes, make, wrapper(efficient),
                         call, labels=opts.get("labels", "classes"),
                         ref_sizes=ref_sizes if opts.get("ref") else None)


def test_wrappers_three_ranks_both_modes():
    run_ranks(_worker, 3, (4, 9, 6), (6, 3, 2), (False, True))


def test_wrappers_two_ranks_efficient():
    run_ranks(_worker, 2, (11, 5), (2, 7), (True,))


def test_wrappers_check_their_arguments():
    with pytest.raises(TypeError, match="efficient"):
        DistributedLossWrapper(pml_losses.ContrastiveLoss(), efficient="yes")
    with pytest.raises(TypeError, match="loss"):
        DistributedLossWrapper(3)
    with pytest.raises(TypeError, match="miner"):
        DistributedMinerWrapper(None)


def test_without_process_group_the_loss_is_unchanged():
    torch.manual_seed(0)
    emb, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    loss = pml_losses.ContrastiveLoss()
    with pytest.warns(UserWarning, match="process group"):
        got = DistributedLossWrapper(loss)(emb, y)
    assert torch.equal(got, loss(emb, y))
