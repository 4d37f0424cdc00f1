"""pytorch-metric-learning's pair miners, computed by fastcontrast.

    miner = miners.MultiSimilarityMiner(epsilon=0.1)
    loss = loss_fn(embeddings, labels, miner(embeddings, labels))

MultiSimilarityMiner, PairMarginMiner and BatchEasyHardMiner: same constructors, defaults
and outputs as PML 2.9.0 — the pairs (a1, p, a2, n), the same pairs in the same order —
computed by fastcontrast.pair_miners' chunked passes (no B×N distance matrix, no sort of one).
After a call the miner has `num_pos_pairs`, `num_neg_pairs` (and `num_triplets` = 0).
PairMarginMiner and MultiSimilarityMiner list nothing: they return a lazy selection
(`MinedPairs`, `MinedMultiSimilarity`: a tuple on reading); MultiSimilarityMiner's pair
counts come from its one streaming bounds pass, PairMarginMiner's when first read (from the
fused loss's pass, or one streaming count). fastcontrast's ContrastiveLoss, MarginLoss and the
pair-LSE losses (MultiSimilarity, Circle, (generalized) Lifted Structure) fuse it into
their own pass as per-anchor row bounds (PairMarginMiner: its margins; Multi-Similarity:
max_n s_an and min_p s_ap, so a pair is mined exactly when s_ap − ε < max_n s_an,
s_an + ε > min_p s_ap) and never list the pairs; any other reader gets PML's tuple.
BatchEasyHardMiner lists its pairs: with the easy/semihard/hard strategies that is one
positive and one negative per anchor (O(B), from one chunked pass); only a strategy "all"
lists O(B·N) pairs.
With collect_stats, or a distance without a fused form, the miner is PML's own (dense).
PML's self-pair rule is kept: (i, i) is skipped when ref_labels is labels (or missing);
MultiSimilarityMiner also when ref_emb is the embeddings tensor itself.
Known difference: given another ref_emb tensor with ref_labels the labels object, PML's
MultiSimilarityMiner lists (i, i) among the candidates of both kinds (its pair list drops
it, its masks do not); fastcontrast drops it.
"""
from __future__ import annotations

import torch

from ... import metrics
from ... import pair_miners as _native
from ..._validation import check_query_ref
from . import _pml
from ._lazy import LazyTuple
from ._triplet import distance_options, pml_self_offset
from .distances import CosineSimilarity, LpDistance, fused_metric

__all__ = ["MultiSimilarityMiner", "PairMarginMiner", "BatchEasyHardMiner", "MinedPairs", "MinedMultiSimilarity"]


class _PairMiner(_pml.DenseMinerFallback, torch.nn.Module):
    pml_name = ""

    def _setup(self, distance, collect_stats, hyper: dict):
        self.distance = self.default_distance() if distance is None else distance
        self.metric = fused_metric(self.distance, type(self).__name__)
        c_f = _pml.module("utils.common_functions")
        self.collect_stats = (c_f.COLLECT_STATS if c_f is not None else False) if collect_stats is None \
            else collect_stats
        self._hyper = dict(hyper)
        for k, v in hyper.items():
            setattr(self, k, v)
        self._dense_miner = None
        self.num_pos_pairs = self.num_neg_pairs = self.num_triplets = 0

    def default_distance(self):
        return LpDistance()

    def _dense_kwargs(self) -> dict:
        return self._hyper

    def _dense_reason(self) -> str:
        return f"collect_stats or {self.distance!r}"

    def _self_offset(self, embeddings, labels, ref_emb, ref_labels) -> int:
        return pml_self_offset(labels, ref_emb, ref_labels)

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        if self.metric is None or self.collect_stats:
            out = self.dense_miner()(embeddings, labels, ref_emb, ref_labels)
            self.num_pos_pairs, self.num_neg_pairs = self._dense_miner.num_pos_pairs, self._dense_miner.num_neg_pairs
            return out
        self_offset = self._self_offset(embeddings, labels, ref_emb, ref_labels)
        if ref_emb is not None and ref_labels is None:
            if isinstance(labels, torch.Tensor) and isinstance(ref_emb, torch.Tensor) and ref_emb.dim() >= 1 \
                    and ref_emb.shape[0] != labels.shape[0]:
                raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
            ref_labels = labels
        if ref_emb is not None:
            check_query_ref(embeddings, labels, ref_emb, ref_labels)
        if isinstance(labels, torch.Tensor):
            labels = labels.to(embeddings.device)
        out = self.mine(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels if ref_emb is not None else None,
                        self_offset=self_offset, **distance_options(self.metric), **self._hyper)
        self.num_pos_pairs, self.num_neg_pairs = int(out[0].numel()), int(out[2].numel())
        return out


class MultiSimilarityMiner(_PairMiner):
    """pytorch_metric_learning.miners.MultiSimilarityMiner(epsilon=0.1, distance=None,
    collect_stats=None): positives with s_ap − ε < max_n s_an, negatives with
    s_an + ε > min_p s_ap (comparisons flipped for a distance).

    Args:
        epsilon, distance (default CosineSimilarity()), collect_stats: as in PML.

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import miners
        >>> len(miners.MultiSimilarityMiner()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
        4
    """

    pml_name = "MultiSimilarityMiner"
    mine = staticmethod(_native.multi_similarity_miner)

    def __init__(self, epsilon=0.1, distance=None, collect_stats=None):
        super().__init__()
        self._setup(distance, collect_stats, dict(epsilon=epsilon))

    def default_distance(self):
        return CosineSimilarity()

    def _self_offset(self, embeddings, labels, ref_emb, ref_labels) -> int:
        if ref_emb is embeddings:
            return 0
        return pml_self_offset(labels, ref_emb, ref_labels)

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """A lazy MinedMultiSimilarity; num_pos_pairs / num_neg_pairs from its bounds pass."""
        if self.metric is None or self.collect_stats:
            return super().forward(embeddings, labels, ref_emb, ref_labels)
        _check_refs(embeddings, labels, ref_emb, ref_labels)
        sel = MinedMultiSimilarity(self.epsilon, self.metric, embeddings, labels, ref_emb, ref_labels,
                                   self._self_offset(embeddings, labels, ref_emb, ref_labels))
        counts = sel.pair_counts().sum(0)
        self.num_pos_pairs, self.num_neg_pairs = int(counts[0]), int(counts[1])
        return sel


class PairMarginMiner(_PairMiner):
    """pytorch_metric_learning.miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8,
    distance=None, collect_stats=None): positives with d > pos_margin, negatives with
    d < neg_margin (flipped for a similarity).

    Args:
        pos_margin, neg_margin, distance (default LpDistance()), collect_stats: as in PML.

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad options or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import miners
        >>> len(miners.PairMarginMiner()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
        4
    """

    pml_name = "PairMarginMiner"
    mine = staticmethod(_native.pair_margin_miner)

    def __init__(self, pos_margin=0.2, neg_margin=0.8, distance=None, collect_stats=None):
        super().__init__()
        self._setup(distance, collect_stats, dict(pos_margin=pos_margin, neg_margin=neg_margin))

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """A lazy MinedPairs. num_pos_pairs / num_neg_pairs are counted when first read (a fused
        loss leaves its own counts on the selection; otherwise one streaming pass), so the miner
        itself makes no pass over the batch; until then it keeps the selection."""
        if self.metric is None or self.collect_stats:
            return super().forward(embeddings, labels, ref_emb, ref_labels)
        _check_refs(embeddings, labels, ref_emb, ref_labels)
        sel = MinedPairs(self.pos_margin, self.neg_margin, self.metric, embeddings, labels, ref_emb, ref_labels,
                         self._self_offset(embeddings, labels, ref_emb, ref_labels))
        self.__dict__["_uncounted"] = sel
        return sel

    def _pair_totals(self) -> list:
        sel = self.__dict__.get("_uncounted")
        if sel is not None:
            counts = sel.pair_counts().sum(0)
            self.__dict__["_totals"] = [int(counts[0]), int(counts[1])]
            self.__dict__["_uncounted"] = None
        return self.__dict__.setdefault("_totals", [0, 0])

    @property
    def num_pos_pairs(self) -> int:
        return self._pair_totals()[0]

    @num_pos_pairs.setter
    def num_pos_pairs(self, value):
        self.__dict__["_uncounted"] = None
        self._pair_totals()[0] = value

    @property
    def num_neg_pairs(self) -> int:
        return self._pair_totals()[1]

    @num_neg_pairs.setter
    def num_neg_pairs(self, value):
        self.__dict__["_uncounted"] = None
        self._pair_totals()[1] = value


class BatchEasyHardMiner(_PairMiner):
    """pytorch_metric_learning.miners.BatchEasyHardMiner(pos_strategy="easy",
    neg_strategy="semihard", allowed_pos_range=None, allowed_neg_range=None, distance=None,
    collect_stats=None): one positive and one negative per anchor by strategy.

    Args:
        pos_strategy, neg_strategy, allowed_pos_range, allowed_neg_range, distance (default
            LpDistance()), collect_stats: as in PML.

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad strategies (as PML) or tensors.

    Example:
        >>> import torch
        >>> from fastcontrast.compat.pml import miners
        >>> len(miners.BatchEasyHardMiner()(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
        4
    """

    pml_name = "BatchEasyHardMiner"
    mine = staticmethod(_native.batch_easy_hard_miner)
    HARD, SEMIHARD, EASY, ALL = "hard", "semihard", "easy", "all"
    all_batch_mining_strategies = [HARD, SEMIHARD, EASY, ALL]

    def __init__(self, pos_strategy=EASY, neg_strategy=SEMIHARD, allowed_pos_range=None, allowed_neg_range=None,
                 distance=None, collect_stats=None):
        super().__init__()
        _native._check_strategies(pos_strategy, neg_strategy)
        self._setup(distance, collect_stats, dict(pos_strategy=pos_strategy, neg_strategy=neg_strategy,
                                                  allowed_pos_range=allowed_pos_range,
                                                  allowed_neg_range=allowed_neg_range))


def _check_refs(embeddings, labels, ref_emb, ref_labels):
    if ref_emb is not None:
        if ref_labels is None and isinstance(labels, torch.Tensor) and isinstance(ref_emb, torch.Tensor) \
                and ref_emb.dim() >= 1 and ref_emb.shape[0] != labels.shape[0]:
            raise ValueError("ref_labels is required when ref_emb has a different number of rows than labels")
        check_query_ref(embeddings, labels, ref_emb, labels if ref_labels is None else ref_labels)


class _MinedSelection(LazyTuple):
    """A pair miner's selection, not enumerated: the miner's metric and tensors, the tuple
    (a1, p, a2, n) of `materialize()` on reading, per-anchor pair counts, and the forms a
    fused loss reads (`fuses_with` says whether a loss call sees the same batch)."""

    def _store(self, metric, embeddings, labels, ref_emb, ref_labels, self_offset):
        self.metric = metric
        self.embeddings, self.labels, self.ref_emb, self.ref_labels = embeddings, labels, ref_emb, ref_labels
        self.self_offset = self_offset
        self._materialized = None
        self._counts = None

    def _refs(self):
        if self.ref_emb is None:
            return None, None
        return self.ref_emb, self.labels if self.ref_labels is None else self.ref_labels

    def fuses_with(self, metric, embeddings, labels, ref_emb, ref_labels) -> bool:
        return (metric == self.metric and embeddings is self.embeddings and labels is self.labels
                and ref_emb is self.ref_emb and ref_labels is self.ref_labels and labels is not None)

    def pair_counts(self) -> torch.Tensor:
        """(B, 2) mined positive and negative pairs per anchor."""
        raise NotImplementedError

    def row_bounds(self) -> tuple[torch.Tensor, float]:
        """(bounds (B, 2), slack) in l = s (or −d) units: the mined positives are those with
        l − slack < bounds[i, 0], the mined negatives those with l + slack > bounds[i, 1]
        (the pair-LSE losses' `row_bounds`; for a distance loss d-bounds are −bounds)."""
        raise NotImplementedError

    def __len__(self):
        return 4


class MinedPairs(_MinedSelection):
    """PairMarginMiner's selection, not enumerated: a tuple (a1, p, a2, n) on reading.

    It records the miner's thresholds, metric and tensors. fastcontrast's ContrastiveLoss,
    MarginLoss and the pair-LSE losses given it as `indices_tuple` fuse the rule into their
    own pass (constant row bounds: a pair counts only when it is mined), so no pair list is
    built; any other reader (unpacking, `len`, indexing, pytorch-metric-learning's losses)
    sees the pairs of `materialize()`, PML's pairs in PML's order, listed once. Code reading the tuple's
    storage from C (`torch.cat(sel)`) does not see them: give it `tuple(sel)`.
    """

    def __init__(self, pos_margin: float, neg_margin: float, metric, embeddings, labels, ref_emb, ref_labels,
                 self_offset: int):
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)
        self._store(metric, embeddings, labels, ref_emb, ref_labels, self_offset)

    @torch.no_grad()
    def materialize(self):
        """The pairs (a1, p, a2, n) as PML's PairMarginMiner lists them."""
        if self._materialized is None:
            ref_emb, ref_labels = self._refs()
            self._materialized = _native.pair_margin_miner(
                self.embeddings, self.labels, pos_margin=self.pos_margin, neg_margin=self.neg_margin,
                ref_emb=ref_emb, ref_labels=ref_labels, self_offset=self.self_offset,
                **distance_options(self.metric))
        return self._materialized

    @torch.no_grad()
    def pair_counts(self) -> torch.Tensor:
        """(B, 2) mined positive and negative pairs per anchor: left here by a fused
        ContrastiveLoss, or counted in one streaming pass of the same rule (row bounds
        d > pos_margin, d < neg_margin; flipped for a similarity)."""
        if self._counts is None:
            from ...pair_margin import ContrastiveLoss as _Fast
            from ._pair_margin import _distance_name
            name, normalize = _distance_name(self.metric)
            counter = _Fast(distance=name, normalize=normalize, backend="torch")
            ref_emb, ref_labels = self._refs()
            l_bounds, slack = self.row_bounds()
            terms = counter.terms(self.embeddings.detach(), self.labels,
                                  None if ref_emb is None else ref_emb.detach(), ref_labels, self.self_offset,
                                  row_bounds=-l_bounds, bound_slack=slack)
            self._counts = terms.counts
        return self._counts

    def d_thresholds(self) -> tuple[float, float]:
        """The thresholds on d (the distance, or −s for a similarity): positives d > T_p,
        negatives d < T_n."""
        if self.metric.is_similarity:
            return -self.pos_margin, -self.neg_margin
        return self.pos_margin, self.neg_margin

    def row_bounds(self):
        """d > T_p is l = −d < −T_p and d < T_n is l > −T_n, exactly: constant bounds, slack 0."""
        t_pos, t_neg = self.d_thresholds()
        b = self.embeddings.shape[0]
        cd = metrics.compute_dtype(self.embeddings.dtype)
        bounds = torch.tensor([-t_pos, -t_neg], dtype=cd, device=self.embeddings.device).repeat(b, 1)
        return bounds, 0.0

    def __repr__(self):
        return (f"MinedPairs(pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, "
                f"batch={self.embeddings.shape[0]}, materialized={self._materialized is not None})")


class MinedMultiSimilarity(_MinedSelection):
    """MultiSimilarityMiner's selection, not enumerated: a tuple (a1, p, a2, n) on reading.

    Built by one streaming pass (pair_miners.multi_similarity_bounds): each anchor's
    max_n l_an and min_p l_ap (l = s, or −d for a distance) and its mined pair counts, O(B).
    fastcontrast's ContrastiveLoss, MarginLoss and the pair-LSE losses given it as
    `indices_tuple` fuse the bounds into their pass (a positive is mined when
    l − ε < max_n l_an, a negative when l + ε > min_p l_ap); any other reader
    sees `materialize()`, PML's pairs in PML's order (within an anchor by increasing
    similarity or distance), listed once.
    """

    def __init__(self, epsilon: float, metric, embeddings, labels, ref_emb, ref_labels, self_offset: int):
        self.epsilon = float(epsilon)
        self._store(metric, embeddings, labels, ref_emb, ref_labels, self_offset)
        self._bounds = None

    def _mine_bounds(self):
        if self._bounds is None:
            ref_emb, ref_labels = self._refs()
            self._bounds, self._counts = _native.multi_similarity_bounds(
                self.embeddings, self.labels, epsilon=self.epsilon, ref_emb=ref_emb, ref_labels=ref_labels,
                self_offset=self.self_offset, **distance_options(self.metric))
        return self._bounds, self._counts

    @torch.no_grad()
    def materialize(self):
        """The pairs (a1, p, a2, n) as PML's MultiSimilarityMiner lists them."""
        if self._materialized is None:
            ref_emb, ref_labels = self._refs()
            self._materialized = _native.multi_similarity_miner(
                self.embeddings, self.labels, epsilon=self.epsilon, ref_emb=ref_emb, ref_labels=ref_labels,
                self_offset=self.self_offset, **distance_options(self.metric))
        return self._materialized

    def pair_counts(self) -> torch.Tensor:
        return self._mine_bounds()[1]

    def row_bounds(self):
        return self._mine_bounds()[0], self.epsilon

    def __repr__(self):
        return (f"MinedMultiSimilarity(epsilon={self.epsilon}, batch={self.embeddings.shape[0]}, "
                f"materialized={self._materialized is not None})")
