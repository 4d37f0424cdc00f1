"""pytorch-metric-learning's distributed wrappers, exact for any batch sizes.

    from fastcontrast.compat.pml.utils import distributed as pml_dist
    loss_fn = pml_dist.DistributedLossWrapper(losses.ContrastiveLoss(), efficient=False)
    miner = pml_dist.DistributedMinerWrapper(miners.TripletMarginMiner(), efficient=False)
    loss = loss_fn(embeddings, labels, miner(embeddings, labels))   # this rank's rows

Same signatures as pytorch_metric_learning.utils.distributed. Under
DistributedDataParallel the loss and every parameter gradient equal what one process gets
from the wrapped loss on the concatenated global batch (ranks in order), in both modes and
with a different batch size on every rank. How:

- Rows are gathered with `fastcontrast.distributed.all_gather_rows` (variable sizes, the
  gradient goes back to the rank that owns each row).
- No indices_tuple and a fastcontrast loss (it has terms()/reduce()): each rank computes only
  its own anchors against the global batch and the normalizers are all-reduced
  (`fastcontrast.distributed.GlobalBatchLoss`), in both modes.
- A lazy selection from fastcontrast.compat.pml.miners (TripletMarginMiner, BatchHardMiner)
  is a mining rule, not a list: with a fastcontrast triplet loss each rank applies it to its
  own anchors against the global batch inside the loss's pass (work shared, both modes).
- With an explicit indices_tuple, or any other loss (pytorch-metric-learning's own losses
  too): every rank computes the whole global loss from the gathered rows.
- Miners: efficient=False mines the whole gathered batch on every rank (indices into it, in
  rank order); efficient=True mines only this rank's anchors against the gathered batch
  (anchor indices local, the others global, self pairs removed). The loss wrapper must use
  the same `efficient` as the miner wrapper: with efficient=True it all-gathers every
  rank's tuples to rebuild the global set, so the loss is exactly the global loss — where
  pytorch-metric-learning normalizes over local tuples only.

Differences from pytorch-metric-learning: the gathered batch is in rank order (rank 0's rows
first) on every rank, not this rank's rows first; the loss value is the global loss (not
scaled by the world size: the world-size factor DDP needs is carried by the gradient);
CrossBatchMemory (enqueue_mask) is not supported.
"""
from __future__ import annotations

import warnings

import torch

from ....distributed import (GlobalBatchLoss, all_gather_labels, all_gather_rows, exchange_layout,
                             is_distributed, rank_and_world, _gather_padded)
from ....triplet import MinedTriplets
from ....triplet import TripletMarginLoss as _NativeTripletLoss

__all__ = ["DistributedLossWrapper", "DistributedMinerWrapper"]


def _gather_batch(emb, labels, ref_emb, ref_labels, group=None):
    """(all_emb, all_labels, all_ref_emb, all_ref_labels, row offset of this rank)."""
    all_emb, layout = all_gather_rows(emb, group, name="embeddings")
    all_labels = None
    if labels is not None:
        all_labels = all_gather_labels(labels.to(emb.device), layout, group)
    all_ref = all_ref_labels = None
    if ref_emb is not None:
        all_ref, ref_layout = all_gather_rows(ref_emb, group, name="ref_emb")
        if ref_labels is not None:
            all_ref_labels = all_gather_labels(ref_labels.to(ref_emb.device), ref_layout, group, "ref_labels")
    return all_emb, all_labels, all_ref, all_ref_labels, layout.offset


def _check_tuple(indices_tuple):
    if isinstance(indices_tuple, MinedTriplets):
        indices_tuple = indices_tuple.materialize()
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise ValueError("indices_tuple must be (anchors, positives, negatives) or "
                         "(anchors1, positives, anchors2, negatives)")
    return [torch.as_tensor(t).reshape(-1).long() for t in indices_tuple]


def _gather_index_rows(rows: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate every rank's (T_r, k) int64 rows (T_r may be 0) in rank order."""
    layout = exchange_layout(rows, "indices_tuple", group, allow_empty=True)
    return _gather_padded(rows, layout, group)


def global_indices_tuple(indices_tuple, offset: int, device, group=None):
    """Tuples with this rank's anchors (local indices) and global references → the tuples of
    every rank with global anchor indices, in rank order (identical on every rank)."""
    t = [x.to(device) for x in _check_tuple(indices_tuple)]
    if len(t) == 3:
        a, p, n = t
        rows = _gather_index_rows(torch.stack([a + offset, p, n], 1), group)
        return rows[:, 0], rows[:, 1], rows[:, 2]
    a1, p, a2, n = t
    pos = _gather_index_rows(torch.stack([a1 + offset, p], 1), group)
    neg = _gather_index_rows(torch.stack([a2 + offset, n], 1), group)
    return pos[:, 0], pos[:, 1], neg[:, 0], neg[:, 1]


def _native_triplet(loss):
    """The fastcontrast TripletMarginLoss computing `loss` (itself or inside the PML compat
    TripletMarginLoss), or None."""
    from .._triplet import TripletMarginLoss as _CompatTripletLoss
    if isinstance(loss, _NativeTripletLoss):
        return loss
    if isinstance(loss, _CompatTripletLoss):
        return loss.loss
    return None


def _rebased(sel: MinedTriplets, embeddings, labels, ref_emb, ref_labels, self_offset) -> MinedTriplets:
    """The same mining rule applied to other tensors (these anchors against these references)."""
    return MinedTriplets(sel.mining, sel.miner_margin, sel.metric, embeddings, labels, ref_emb, ref_labels,
                         self_offset=self_offset, hard_fallback=sel.hard_fallback)


def _has_terms(loss) -> bool:
    return callable(getattr(loss, "terms", None)) and callable(getattr(loss, "reduce", None))


class DistributedLossWrapper(torch.nn.Module):
    """pytorch_metric_learning.utils.distributed.DistributedLossWrapper(loss, efficient=False):
    the wrapped loss over the global batch, exact under DDP for any per-rank batch sizes.
    forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)."""

    def __init__(self, loss, efficient=False):
        super().__init__()
        if not isinstance(loss, torch.nn.Module) or not callable(loss):
            raise TypeError(f"loss must be a loss Module, got {type(loss).__name__}")
        if not isinstance(efficient, bool):
            raise TypeError(f"efficient must be True or False, got {type(efficient).__name__}")
        self.loss = loss
        self.efficient = efficient
        self.global_loss = GlobalBatchLoss(loss) if _has_terms(loss) else None

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None,
                enqueue_mask=None):
        if enqueue_mask is not None:
            raise ValueError("enqueue_mask (CrossBatchMemory) is not supported by this DistributedLossWrapper")
        if not is_distributed():
            warnings.warn("DistributedLossWrapper is used without an initialized process group: "
                          "returning the wrapped loss of the local batch")
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        _, world = rank_and_world()
        if world == 1:
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if not isinstance(embeddings, torch.Tensor):
            raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
        if indices_tuple is None and self.global_loss is not None and labels is not None:
            if ref_emb is not None and ref_labels is None:
                raise ValueError("ref_labels must be given with ref_emb")
            if self._exits_early(embeddings, labels, ref_emb, ref_labels):
                return (embeddings * 0).sum()
            return self.global_loss(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels)
        if isinstance(indices_tuple, MinedTriplets):
            if _native_triplet(self.loss) is not None:
                return self._forward_mined(embeddings, labels, indices_tuple, ref_emb, ref_labels, world)
            indices_tuple = tuple(indices_tuple.materialize())
        # the whole global loss on every rank; the gathers' backward sums the W identical
        # gradients, i.e. W x the global gradient per rank, which DDP's averaging divides out
        all_emb, all_labels, all_ref, all_ref_labels, offset = _gather_batch(
            embeddings, labels, ref_emb, ref_labels)
        if indices_tuple is not None and self.efficient:
            indices_tuple = global_indices_tuple(indices_tuple, offset, embeddings.device)
        return self.loss(all_emb, all_labels, indices_tuple, all_ref, all_ref_labels)

    def _forward_mined(self, embeddings, labels, sel: MinedTriplets, ref_emb, ref_labels, world):
        """A lazy selection of fastcontrast's miners is a rule, not a list: in either mode this
        rank applies it to its own anchors against the global batch, fused into the triplet
        loss's pass, and the normalizers are all-reduced (work shared, exact)."""
        if labels is None:
            raise ValueError("labels are required with a mined selection in distributed use")
        all_emb, layout = all_gather_rows(embeddings, name="embeddings")
        all_labels = all_gather_labels(labels.to(embeddings.device), layout)
        if ref_emb is None:
            refs, ref_lab, self_offset = all_emb, all_labels, layout.offset
        else:
            if ref_labels is None:
                raise ValueError("ref_labels must be given with ref_emb")
            refs, ref_layout = all_gather_rows(ref_emb, name="ref_emb")
            ref_lab = all_gather_labels(ref_labels.to(ref_emb.device), ref_layout, name="ref_labels")
            self_offset = -1
        local = _rebased(sel, embeddings, labels, refs, ref_lab, self_offset)
        # fastcontrast's triplet Module fuses a selection made on exactly these tensors
        terms = _native_triplet(self.loss)._forward_terms(embeddings, labels, local, refs, ref_lab, self_offset)
        return self.global_loss.reduce_global(terms, world)

    def _exits_early(self, embeddings, labels, ref_emb, ref_labels) -> bool:
        """PML's NT-Xent and SupCon return 0 when the whole batch has at most one positive and
        at most one negative pair (SupCon: no positive or no negative pair); decided here on
        the global labels, identically on every rank."""
        from .. import _softmax
        if not isinstance(self.loss, _softmax._PMLSoftmaxLoss):
            return False
        layout = exchange_layout(embeddings, "embeddings")
        all_labels = all_gather_labels(labels.to(embeddings.device), layout)
        if ref_emb is None:
            n_pos, n_neg = _softmax._pair_totals(all_labels, all_labels, 0)
        else:
            ref_layout = exchange_layout(ref_emb, "ref_emb")
            all_ref_labels = all_gather_labels(ref_labels.to(ref_emb.device), ref_layout, name="ref_labels")
            n_pos, n_neg = _softmax._pair_totals(all_labels, all_ref_labels, -1)
        return (n_pos <= 1 and n_neg <= 1) or self.loss.zero_without(n_pos, n_neg)


class DistributedMinerWrapper(torch.nn.Module):
    """pytorch_metric_learning.utils.distributed.DistributedMinerWrapper(miner, efficient=False).
    forward(embeddings, labels, ref_emb=None, ref_labels=None) -> indices_tuple:
    efficient=False: indices into the gathered global batch (same on every rank);
    efficient=True: this rank's anchors (local indices) against the gathered batch."""

    def __init__(self, miner, efficient=False):
        super().__init__()
        if not callable(miner):
            raise TypeError(f"miner must be a miner Module, got {type(miner).__name__}")
        if not isinstance(efficient, bool):
            raise TypeError(f"efficient must be True or False, got {type(efficient).__name__}")
        self.miner = miner
        self.efficient = efficient

    def forward(self, emb, labels, ref_emb=None, ref_labels=None):
        _, world = rank_and_world()
        if world == 1:
            return self.miner(emb, labels, ref_emb, ref_labels)
        with torch.no_grad():
            all_emb, all_labels, all_ref, all_ref_labels, offset = _gather_batch(
                emb.detach(), labels, None if ref_emb is None else ref_emb.detach(), ref_labels)
        if not self.efficient:
            return self.miner(all_emb, all_labels, all_ref, all_ref_labels)
        if all_ref is None:
            mined = self.miner(emb.detach(), labels, all_emb, all_labels)
            if isinstance(mined, MinedTriplets):  # a lazy rule: exclude the self pair by index
                return _rebased(mined, mined.embeddings, mined.labels, mined.ref_emb, mined.ref_labels, offset)
            return _drop_self_pairs(_check_tuple(mined), offset)
        return self.miner(emb.detach(), labels, all_ref, all_ref_labels)


def _drop_self_pairs(tuples, offset: int):
    """Drop (anchor, positive) entries whose positive is the anchor itself (global index
    anchor + offset): the references include this rank's own rows."""
    if len(tuples) == 3:
        a, p, n = tuples
        keep = p != a + offset
        return a[keep], p[keep], n[keep]
    a1, p, a2, n = tuples
    keep = p != a1 + offset
    return a1[keep], p[keep], a2, n
