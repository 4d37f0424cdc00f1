"""Every fastcontrast loss family through GlobalBatchLoss on spawned gloo groups: loss value
and DDP parameter gradients equal one process on the concatenated batch (float64)."""
import pytest
import torch

import fastcontrast as fc
from fastcontrast.backend import interpreter_enabled, triton_import_error
from fastcontrast.compat.pml import losses as pml_losses
from fastcontrast.distributed import GlobalBatchLoss

from ._cases import check_global
from ._ranks import run_ranks


def native(loss, emb, labels, ref_emb, ref_labels):
    return loss(emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)


def info_nce(loss, query, labels, keys, key_labels):
    return loss(query, keys, labels, key_labels)


# name -> (loss factory, options); options: labels kind, ref (use a reference set), call
SOFTMAX = {
    "supcon": (lambda: fc.SupConLoss(temperature=0.3, backend="torch"), {}),
    "supcon-views": (lambda: fc.SupConLoss(temperature=0.3, backend="torch"), {"labels": "views"}),
    "supcon-rank0-no-positives": (lambda: fc.SupConLoss(backend="torch"), {"labels": "rank0_alone"}),
    "supcon-ref": (lambda: fc.SupConLoss(distance="euclidean", backend="torch"), {"ref": True}),
    "ntxent-pair": (lambda: fc.NTXentLoss(temperature=0.5, backend="torch"), {}),
    "ntxent-pair-local-singletons": (lambda: fc.NTXentLoss(temperature=0.5, backend="torch"),
                                     {"labels": "local_singletons"}),
    "ntxent-simclr-views": (lambda: fc.NTXentLoss(temperature=0.5, form="simclr", backend="torch"),
                            {"labels": "views"}),
    "npair-l2": (lambda: fc.NPairLoss(l2_reg=0.1, backend="torch", normalize=None), {}),
    "infonce": (lambda: fc.InfoNCELoss(temperature=0.2, backend="torch"),
                {"labels": "none", "ref": "same", "call": info_nce}),
    "infonce-labels": (lambda: fc.InfoNCELoss(backend="torch"), {"ref": True, "call": info_nce}),
    "infonce-symmetric": (lambda: fc.InfoNCELoss(symmetric=True, backend="torch"),
                          {"labels": "none", "ref": "same", "call": info_nce}),
}

PAIR_MARGIN = {
    "contrastive-avg_nonzero": (lambda: fc.ContrastiveLoss(pos_margin=0.2, neg_margin=2.0, backend="torch", normalize=None), {}),
    "contrastive-mean-power2": (lambda: fc.ContrastiveLoss(neg_margin=2.5, power=2, average="mean",
                                                           backend="torch", normalize=None), {}),
    "contrastive-sum-cosine": (lambda: fc.ContrastiveLoss(pos_margin=0.9, neg_margin=0.5, distance="cosine",
                                                          reduction="sum", backend="torch", normalize=None), {}),
    "contrastive-ref": (lambda: fc.ContrastiveLoss(neg_margin=2.0, backend="torch", normalize=None), {"ref": True}),
    "contrastive-rank0-no-positives": (lambda: fc.ContrastiveLoss(neg_margin=2.0, backend="torch", normalize=None),
                                       {"labels": "rank0_alone"}),
    "pml-contrastive": (lambda: pml_losses.ContrastiveLoss(neg_margin=1.5, backend="torch"), {}),
}

TRIPLET = {
    **{f"triplet-{m}": (lambda m=m: fc.TripletMarginLoss(margin=0.4, mining=m, miner_margin=0.6, backend="torch", normalize=None), {})
       for m in fc.MINING_MODES},
    "triplet-batch_hard-tfa-fallback-rank0-alone": (
        lambda: fc.TripletMarginLoss(margin=0.4, mining="batch_hard", hard_fallback="tfa", backend="torch", normalize=None),
        {"labels": "rank0_alone"}),
    "triplet-semihard-swap-mean": (lambda: fc.TripletMarginLoss(margin=0.4, mining="semihard", swap=True,
                                                                 average="mean", backend="torch", normalize=None), {}),
    "triplet-all-smooth-cosine-sum": (lambda: fc.TripletMarginLoss(margin=0.2, smooth=True, distance="cosine",
                                                                   reduction="sum", backend="torch", normalize=None), {}),
    "triplet-semihard_tfa-ref": (lambda: fc.TripletMarginLoss(margin=0.4, mining="semihard_tfa", backend="torch", normalize=None),
                                 {"ref": True}),
    "pml-triplet": (lambda: pml_losses.TripletMarginLoss(margin=0.3, backend="torch"), {}),
}

FAMILIES = {**SOFTMAX, **PAIR_MARGIN, **TRIPLET}


# the Triton kernels (in the interpreter on CPU) with a global reference set and self offsets
TRITON = {
    "triton-supcon": (lambda: fc.SupConLoss(temperature=0.3, backend="triton"), {}),
    "triton-contrastive": (lambda: fc.ContrastiveLoss(neg_margin=2.0, backend="triton", normalize=None), {}),
}

FAMILIES.update(TRITON)


def _worker(rank, world, sizes, ref_sizes, names, dtype=torch.float64):
    for name in names:
        make, opts = FAMILIES[name]
        ref = opts.get("ref")
        check_global(rank, world, name, sizes, make, GlobalBatchLoss, opts.get("call", native),
                     labels=opts.get("labels", "classes"),
                     ref_sizes=sizes if ref == "same" else (ref_sizes if ref else None), dtype=dtype)


def test_softmax_family_three_ranks():
    run_ranks(_worker, 3, (6, 10, 4), (5, 2, 7), list(SOFTMAX))


def test_pair_margin_family_two_ranks():
    run_ranks(_worker, 2, (9, 4), (3, 8), list(PAIR_MARGIN))


def test_triplet_family_every_mining_mode_three_ranks():
    run_ranks(_worker, 3, (7, 3, 8), (4, 6, 1), list(TRIPLET))


@pytest.mark.skipif(not interpreter_enabled() or triton_import_error() is not None,
                    reason="Triton kernels on CPU tensors need TRITON_INTERPRET=1")
def test_triton_kernels_float32_two_ranks():
    run_ranks(_worker, 2, (8, 5), (3, 3), list(TRITON), torch.float32)
