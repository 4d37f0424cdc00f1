"""pytorch-metric-learning's triplet miners, lazy (the pair miners MultiSimilarityMiner,
PairMarginMiner and BatchEasyHardMiner: see _pair_miners).

    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    loss = loss_fn(embeddings, labels, miner(embeddings, labels))

A miner call lists nothing: it returns a `MinedSelection`, a tuple (isinstance(x, tuple),
len 3, unpacking, indexing, slicing) that records the rule, the miner's margin and distance
and the tensors. A fastcontrast triplet loss given it fuses the selection into its own
sorted pass (the mining filter with the miner's margin, the loss term with the loss's
margin), so PML's B×B×B triplet list never exists. When the loss uses another distance
than the miner, or other tensors, the selection is materialized.

Reading an element (`a, p, n = sel`, `sel[0]`, any pytorch-metric-learning loss or utility
given it) materializes PML's index tensors once: the same set of triplets as PML's miner,
listed in increasing (anchor, positive, negative) order (PML's order for
TripletMarginMiner; BatchHardMiner: one triplet per anchor in increasing anchor order, as
PML). Ties between equal distances pick the lowest index. Only code reading the tuple's
storage from C (e.g. `torch.cat(sel)`, `torch.stack(sel)`) does not see the elements: give
it `tuple(sel)`.

After a call the miner has `num_triplets` (counted by the sorted pass, or taken from the
fused loss that consumed the selection: no triplet is listed for it), `num_pos_pairs` and
`num_neg_pairs` (0: these miners return triplets), and with collect_stats the statistics
pytorch-metric-learning records (TripletMarginMiner: pos_pair_dist, neg_pair_dist,
avg_triplet_margin over all valid triplets, from per-anchor sums; BatchHardMiner:
hardest/easiest triplet, positive and negative pair of the selection).

A distance without a fused form (see distances) makes the miner pytorch-metric-learning's
own (dense) miner, with a one-time warning.
"""
from __future__ import annotations

import torch

from ..._function import compiling
from ..._validation import check_choice, check_query_ref, check_real
from ...triplet import MinedTriplets
from ...triplet import TripletMarginLoss as _FastTripletMarginLoss
from . import _pml
from ._lazy import LazyTuple
from ._triplet import distance_options, pml_self_offset
from .distances import LpDistance, fused_metric

__all__ = ["TripletMarginMiner", "BatchHardMiner", "MinedSelection"]

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class MinedSelection(MinedTriplets, LazyTuple):
    """A lazy triplet selection that is also a tuple (a, p, n), materialized on first read of
    an element. fastcontrast's triplet losses recognize it by type and fuse it unread."""

    def __init__(self, *args, **kwargs):
        MinedTriplets.__init__(self, *args, **kwargs)
        self._count = None

    def __repr__(self):
        return (f"MinedSelection(mining={self.mining!r}, miner_margin={self.miner_margin}, "
                f"batch={self.embeddings.shape[0]}, materialized={self._materialized is not None})")

    # counts without listing
    def note_counts(self, counts: torch.Tensor):
        """Called by a fused loss: its per-anchor term counts are the selection's size."""
        if self._materialized is None:
            self._count = counts.sum()

    def num_triplets(self) -> int:
        if self._materialized is not None:
            return int(self._materialized[0].numel())
        if self._count is None:
            self._count = self._counted()
        return int(self._count)

    @torch.no_grad()
    def _counted(self) -> torch.Tensor:
        """The number of selected triplets from fastcontrast's sorted per-anchor pass (its
        term counts), nothing enumerated."""
        counter = _FastTripletMarginLoss(mining="batch_all", **distance_options(self.metric))
        cfg = self.config()
        terms = counter.terms(self.embeddings.detach(), self.labels,
                              None if self.ref_emb is None else self.ref_emb.detach(), self.ref_labels,
                              self.self_offset, _config=cfg)
        return terms.counts.sum()


class _LazyTripletMiner(_pml.DenseMinerFallback, torch.nn.Module):
    mining = "all"
    pml_name = ""

    def __init__(self, distance=None, collect_stats=None):
        super().__init__()
        self.distance = LpDistance() if distance is None else distance
        self.metric = fused_metric(self.distance, type(self).__name__)
        c_f = _pml.module("utils.common_functions")
        self.collect_stats = (c_f.COLLECT_STATS if c_f is not None else False) if collect_stats is None \
            else collect_stats
        self._last = None
        self._dense_miner = None
        self.num_pos_pairs = self.num_neg_pairs = 0

    @property
    def num_triplets(self) -> int:
        """Triplets selected by the last call (0 before any)."""
        if self._dense_miner is not None:
            return self._dense_miner.num_triplets
        if self._last is None:
            return 0
        if not isinstance(self._last, MinedSelection):  # made while compiling: count by listing
            return int(self._last.materialize()[0].numel())
        return self._last.num_triplets()

    @num_triplets.setter
    def num_triplets(self, value):
        if value != 0:
            raise AttributeError("num_triplets is computed from the last selection")
        self._last = None

    def _margin(self) -> float:
        return 0.0

    def _dense_kwargs(self) -> dict:
        return {}

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        if self.metric is None:
            return self.dense_miner()(embeddings, labels, ref_emb, ref_labels)
        self_offset = pml_self_offset(labels, ref_emb, ref_labels)
        if ref_emb is not None and ref_labels is None:
            if isinstance(labels, torch.Tensor) and isinstance(ref_emb, torch.Tensor) and ref_emb.dim() >= 1 \
                    and ref_emb.shape[0] != labels.shape[0]:
                raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
            ref_labels = labels
        check_query_ref(embeddings, labels, ref_emb, ref_labels)
        # torch.compile cannot construct the tuple subclass: a compiled step gets the plain lazy
        # selection (unpacking and indexing work the same; the loss fuses it all the same)
        selection = MinedTriplets if compiling() else MinedSelection
        sel = selection(self.mining, self._margin(), self.metric, embeddings, labels, ref_emb,
                             ref_labels if ref_emb is not None else None, self_offset)
        self._last = sel
        if self.collect_stats:
            for name in self.stat_names:  # PML resets its stats to 0 on every call
                setattr(self, name, 0)
            self._set_stats(sel)
        return sel

    def _distances_and_masks(self, sel):
        """The miner's dense distance rows (as its distance object computes them) and the
        positive / negative masks, for the statistics only."""
        ref = sel.embeddings if sel.ref_emb is None else sel.ref_emb
        ref_labels = sel.labels if sel.ref_labels is None else sel.ref_labels
        mat = self.distance(sel.embeddings.detach(), ref.detach())
        same = sel.labels[:, None] == ref_labels[None, :]
        pos = same.clone()
        if sel.self_offset >= 0:
            rows = torch.arange(mat.shape[0], device=mat.device)
            cols = rows + sel.self_offset
            ok = cols < mat.shape[1]
            pos[rows[ok], cols[ok]] = False
        return mat, pos, ~same


class TripletMarginMiner(_LazyTripletMiner):
    """pytorch_metric_learning.miners.TripletMarginMiner(margin=0.2, type_of_triplets="all",
    distance=None): with t = d_an − d_ap keeps "all": t ≤ margin, "hard": t ≤ 0 (and ≤ margin),
    "semihard": 0 < t ≤ margin, "easy": t > margin."""

    pml_name = "TripletMarginMiner"
    stat_names = ("avg_triplet_margin", "pos_pair_dist", "neg_pair_dist")

    def __init__(self, margin=0.2, type_of_triplets="all", distance=None, collect_stats=None):
        check_choice(type_of_triplets, "type_of_triplets", TRIPLET_TYPES)
        margin = check_real(margin, "margin")
        super().__init__(distance, collect_stats)
        self.margin = margin
        self.type_of_triplets = type_of_triplets
        self.mining = type_of_triplets

    def _margin(self) -> float:
        return self.margin

    def _dense_kwargs(self) -> dict:
        return dict(margin=self.margin, type_of_triplets=self.type_of_triplets)

    @torch.no_grad()
    def _set_stats(self, sel):
        """Means over every valid triplet (before the filter), as PML records them, from
        per-anchor sums: Σ_p d_ap·|N(a)| and Σ_n d_an·|P(a)| over Σ |P(a)|·|N(a)|."""
        mat, pos, neg = self._distances_and_masks(sel)
        n_pos, n_neg = pos.sum(1).to(mat.dtype), neg.sum(1).to(mat.dtype)
        total = (n_pos * n_neg).sum()
        ap = ((mat * pos).sum(1) * n_neg).sum() / total
        an = ((mat * neg).sum(1) * n_pos).sum() / total
        self.pos_pair_dist, self.neg_pair_dist = ap.item(), an.item()
        self.avg_triplet_margin = (ap - an if self.distance.is_inverted else an - ap).item()


class BatchHardMiner(_LazyTripletMiner):
    """pytorch_metric_learning.miners.BatchHardMiner(distance=None): per anchor with a
    positive and a negative, the farthest positive and the nearest negative."""

    mining = "batch_hard"
    pml_name = "BatchHardMiner"
    stat_names = ("easiest_triplet", "hardest_triplet", "easiest_pos_pair", "hardest_pos_pair",
                  "easiest_neg_pair", "hardest_neg_pair")

    @torch.no_grad()
    def _set_stats(self, sel):
        """Extremes over the selection (one triplet per anchor: listing it is O(B))."""
        a, p, n = sel.materialize()
        if a.numel() == 0:
            return
        ref = sel.embeddings if sel.ref_emb is None else sel.ref_emb
        mat = self.distance(sel.embeddings.detach(), ref.detach())
        pd, nd = mat[a, p], mat[a, n]
        inv = self.distance.is_inverted
        hard, easy = (torch.min, torch.max) if inv else (torch.max, torch.min)
        self.hardest_triplet, self.easiest_triplet = hard(pd - nd).item(), easy(pd - nd).item()
        self.hardest_pos_pair, self.easiest_pos_pair = hard(pd).item(), easy(pd).item()
        self.hardest_neg_pair, self.easiest_neg_pair = easy(nd).item(), hard(nd).item()


from ._pair_miners import *  # noqa: E402,F401,F403
from ._pml import forwarding  # noqa: E402

__getattr__, __dir__ = forwarding(__name__, "miners")
