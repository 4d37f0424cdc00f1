"""pytorch-metric-learning's triplet miners, lazy.

    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    loss = loss_fn(embeddings, labels, miner(embeddings, labels))

A miner call lists nothing: it returns a `fastcontrast.triplet.MinedTriplets` that records
the rule, the miner's margin and distance and the tensors. A fastcontrast triplet loss given
it fuses the selection into its own sorted pass (the mining filter with the miner's margin,
the loss term with the loss's margin), so PML's B×B×B triplet list never exists. When the
loss uses another distance than the miner, or other tensors, the selection is materialized.

`selection.materialize()` (or unpacking: `a, p, n = miner(x, y)`) gives PML's index
tensors: the same set of triplets as PML's miner, listed in increasing (anchor, positive,
negative) order (PML's order for TripletMarginMiner; BatchHardMiner: one triplet per anchor
in increasing anchor order, as PML). Ties between equal distances pick the lowest index.
A pytorch-metric-learning loss (not fastcontrast's) needs a real tuple: pass
`selection.materialize()` or `tuple(selection)` to it.
"""
from __future__ import annotations

import torch

from ..._validation import check_choice, check_query_ref, check_real
from ...triplet import MinedTriplets
from ._triplet import pml_self_offset
from .distances import LpDistance, metric_from_distance

__all__ = ["TripletMarginMiner", "BatchHardMiner"]

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class _LazyTripletMiner(torch.nn.Module):
    mining = "all"

    def __init__(self, distance=None, collect_stats=None):
        super().__init__()
        self.distance = LpDistance() if distance is None else distance
        self.metric = metric_from_distance(self.distance, "distance")
        self.collect_stats = collect_stats

    def _margin(self) -> float:
        return 0.0

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None) -> MinedTriplets:
        self_offset = pml_self_offset(labels, ref_emb, ref_labels)
        if ref_emb is not None and ref_labels is None:
            if isinstance(labels, torch.Tensor) and isinstance(ref_emb, torch.Tensor) and ref_emb.dim() >= 1 \
                    and ref_emb.shape[0] != labels.shape[0]:
                raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
            ref_labels = labels
        check_query_ref(embeddings, labels, ref_emb, ref_labels)
        return MinedTriplets(self.mining, self._margin(), self.metric, embeddings, labels, ref_emb,
                             ref_labels if ref_emb is not None else None, self_offset)


class TripletMarginMiner(_LazyTripletMiner):
    """pytorch_metric_learning.miners.TripletMarginMiner(margin=0.2, type_of_triplets="all",
    distance=None): with t = d_an − d_ap keeps "all": t ≤ margin, "hard": t ≤ 0 (and ≤ margin),
    "semihard": 0 < t ≤ margin, "easy": t > margin."""

    def __init__(self, margin=0.2, type_of_triplets="all", distance=None, collect_stats=None):
        super().__init__(distance, collect_stats)
        check_choice(type_of_triplets, "type_of_triplets", TRIPLET_TYPES)
        self.margin = check_real(margin, "margin")
        self.type_of_triplets = type_of_triplets
        self.mining = type_of_triplets

    def _margin(self) -> float:
        return self.margin


class BatchHardMiner(_LazyTripletMiner):
    """pytorch_metric_learning.miners.BatchHardMiner(distance=None): per anchor with a
    positive and a negative, the farthest positive and the nearest negative."""

    mining = "batch_hard"


from ._pml import forwarding  # noqa: E402

__getattr__, __dir__ = forwarding(__name__, "miners")
