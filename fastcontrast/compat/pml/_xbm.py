"""pytorch-metric-learning's CrossBatchMemory, keeping the fused path.

    loss_fn = losses.CrossBatchMemory(losses.TripletMarginLoss(), embedding_size=128,
                                      memory_size=8192, miner=miners.TripletMarginMiner(type_of_triplets="semihard"))
    loss = loss_fn(embeddings, labels)

pytorch-metric-learning's own class (queue, enqueue_mask, reset_queue, every attribute),
with one change of route: when the wrapped loss is one of fastcontrast's fused compat
losses, the miner is fastcontrast's TripletMarginMiner (or there is none), no
indices_tuple or enqueue_mask is given, and this batch's rows sit contiguously in the
memory (the queue did not wrap around inside the batch), the batch's own memory rows are
excluded as self pairs by position inside the fused pass. PML instead lists every
(pair or) triplet against the memory (B·M·M entries for a triplet miner) and then removes
the self comparisons from that list. Every other case is PML's own code path (with a lazy
selection materialized where it reads one).

BatchHardMiner takes PML's path: PML picks the hardest positive before removing the self
comparison (with a similarity the anchor itself can be the hardest positive, and the anchor
then has no triplet), which the fused rule (self excluded first) would not reproduce.
"""
from __future__ import annotations

from . import _pml
from ._base import PMLLossBase

_theirs = _pml.module("losses")

__all__ = ["CrossBatchMemory"] if _theirs is not None else []


if _theirs is not None:
    class CrossBatchMemory(_theirs.CrossBatchMemory):
        """pytorch_metric_learning.losses.CrossBatchMemory(loss, embedding_size, memory_size=1024,
        miner=None); fused against the memory where possible (see the module docstring)."""

        def _fusable_miner(self) -> bool:
            from .miners import TripletMarginMiner
            return self.miner is None or (type(self.miner) is TripletMarginMiner and self.miner.metric is not None)

        def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
            fused = (isinstance(self.loss, PMLLossBase) and self.loss.metric is not None and indices_tuple is None
                     and enqueue_mask is None and self._fusable_miner()
                     # PML gives a triplet loss without a miner every pair: all triplets
                     and getattr(self.loss, "triplets_per_anchor", "all") == "all")
            self._fuse_now = fused
            try:
                return super().forward(embeddings, labels, indices_tuple, enqueue_mask)
            finally:
                self._fuse_now = False
                if fused:
                    self.loss._self_offset_override = None

        def add_to_memory(self, embeddings, labels, batch_size):
            self._batch_start = self.queue_idx
            super().add_to_memory(embeddings, labels, batch_size)

        def create_indices_tuple(self, embeddings, labels, E_mem, L_mem, input_indices_tuple,
                                 do_remove_self_comparisons):
            start = self._batch_start
            contiguous = start + embeddings.shape[0] <= self.memory_size
            if not (getattr(self, "_fuse_now", False) and do_remove_self_comparisons and contiguous
                    and input_indices_tuple is None):
                return super().create_indices_tuple(embeddings, labels, E_mem, L_mem, input_indices_tuple,
                                                    do_remove_self_comparisons)
            if self.miner is None:
                # every pair against the memory but the batch's own rows: the loss's own pass
                self.loss._self_offset_override = start
                return None
            from .miners import MinedSelection
            sel = self.miner(embeddings, labels, E_mem, L_mem)
            # the miner's num_triplets stays PML's: counted before the self comparisons are removed
            return MinedSelection(sel.mining, sel.miner_margin, sel.metric, embeddings, labels, E_mem, L_mem,
                                  self_offset=start, hard_fallback=sel.hard_fallback)
