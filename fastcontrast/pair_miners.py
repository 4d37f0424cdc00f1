"""Pair miners: Multi-Similarity, pair-margin and batch easy/hard selections.

Each miner returns pytorch-metric-learning's pairs (a1, p, a2, n): positive pairs (a1, p)
and negative pairs (a2, n), int64 index tensors, for any pair-based loss's `indices_tuple`.
They walk the anchors in chunks (a chunk×N tile of similarities at a time, the distance
helper of every family, metrics.Frame), so the only B×N-sized things are the selected
pairs themselves. With l = s (a similarity) or l = −d (a distance), every rule reads the same:

    multi_similarity_miner   keep a positive if l_ap − ε < max_n l_an, a negative if
                             l_an + ε > min_p l_ap (per anchor; nothing when the batch has no
                             positive or no negative pair)
    pair_margin_miner        keep a positive if s_ap < pos_margin (d_ap > pos_margin), a
                             negative if s_an > neg_margin (d_an < neg_margin)
    batch_easy_hard_miner    per anchor one positive and one negative: "easy" the closest
                             positive / farthest negative, "hard" the farthest positive /
                             closest negative, "semihard" the same restricted by the other
                             side's pick (positive closer than it, negative farther), "all"
                             every pair; ranges (in the metric's own units) filter candidates

Ties pick the lowest index. Pairs come out in increasing anchor order; within an anchor in
increasing index order (multi_similarity_miner: increasing l, as pytorch-metric-learning's
sort lists them).
"""
from __future__ import annotations

import torch
from torch import nn

from . import metrics
from ._validation import check_choice, check_embeddings, check_labels, check_query_ref, check_real

__all__ = ["multi_similarity_miner", "multi_similarity_bounds", "pair_margin_miner", "batch_easy_hard_miner",
           "MultiSimilarityMiner", "PairMarginMiner", "BatchEasyHardMiner", "STRATEGIES"]

STRATEGIES = ("easy", "semihard", "hard", "all")
# Elements of one live chunk×N tile (2 MiB of float32): the miners' output is O(B) or their
# pairs, so this tile and its masks are their memory; at B = N = 4096 the bounds pass ran in
# 224 ms with 49 MiB peak at 2**19 against 554 ms and 138 MiB at 2**22 (one thread).
CHUNK_ELEMS = 1 << 19


def _empty(device):
    e = torch.empty(0, dtype=torch.int64, device=device)
    return e, e.clone(), e.clone(), e.clone()


def _chunk_tiles(embeddings, labels, ref_emb, ref_labels, metric, self_offset):
    """(rows, l tile, positive mask, negative mask) per anchor chunk, no gradient."""
    with torch.no_grad():
        q = metrics.prepare(embeddings.detach(), metric)
        r = q if ref_emb is None else metrics.prepare(ref_emb.detach(), metric)
        r_labels = labels if ref_emb is None else ref_labels
        frame = metrics.Frame(q, r, metric.kind)
        b, n = q.shape[0], r.shape[0]
        for rows in metrics.chunks(b, n, CHUNK_ELEMS):
            tile, _ = frame.tile(*frame.rows(rows))
            l = tile if metric.kind == "dot" else -tile
            same = labels[rows, None] == r_labels[None, :]
            valid = torch.ones_like(same)
            if self_offset >= 0:
                valid.diagonal(rows.start + self_offset).fill_(False)
            yield rows, l, same & valid, valid & ~same


def _checked(embeddings, labels, ref_emb, ref_labels):
    check_embeddings(embeddings, "embeddings")
    check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
    if ref_emb is not None or ref_labels is not None:
        if ref_emb is None or ref_labels is None:
            raise ValueError("ref_emb and ref_labels must be given together")
        check_query_ref(embeddings, labels, ref_emb, ref_labels)
    return labels.long(), None if ref_labels is None else ref_labels.long()


def _pairs_of(mask_chunks):
    """Row-major (row, column) indices of boolean chunks [(rows, mask)]."""
    out_i, out_j = [], []
    for rows, mask in mask_chunks:
        i, j = mask.nonzero(as_tuple=True)
        out_i.append(i + rows.start)
        out_j.append(j)
    return torch.cat(out_i), torch.cat(out_j)


def _sorted_pairs(rows, mask, key, descending=False):
    """The pairs of a chunk's mask, within each row ordered by key (stable: ties by index)."""
    big = torch.finfo(key.dtype).max
    k = torch.where(mask, key, big if not descending else -big)
    order = torch.sort(k, dim=1, stable=True, descending=descending).indices
    kept = torch.gather(mask, 1, order)
    i, pos = kept.nonzero(as_tuple=True)
    return i + rows.start, order[i, pos]


def multi_similarity_miner(embeddings, labels, *, epsilon=0.1, distance="cosine", normalize=None,
                           ref_emb=None, ref_labels=None, self_offset=None):
    """Multi-Similarity mining (Wang et al. 2019): the informative pairs of each anchor.

    A positive is kept if l_ap − ε < max_n l_an, a negative if l_an + ε > min_p l_ap, with
    l = s for a similarity and l = −d for a distance (so d_ap + ε > min_n d_an and
    d_an − ε < max_p d_ap). Nothing is kept when the batch has no positive or no negative pair.

    Args:
        embeddings (Tensor): (B, D) rows (no gradient flows through a miner).
        labels (Tensor): (B,) integer labels.
        epsilon (float, default 0.1): the slack ε.
        distance (str, default "cosine"): "cosine", "dot", "euclidean" or "squared_euclidean".
        normalize (bool | None, default None): L2-normalize the rows first.
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        self_offset (int | None): anchor i is reference i + self_offset (default 0 without
            references, −1 with them).

    Returns:
        (a1, p, a2, n): int64 positive-pair and negative-pair indices; within an anchor the
        pairs are in increasing similarity (distance).

    Raises:
        ValueError: bad tensors or options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> a1, p, a2, n = fc.multi_similarity_miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> a1.dtype
        torch.int64
    """
    eps = check_real(epsilon, "epsilon")
    metric = metrics.resolve_metric(distance, normalize)
    labels, ref_labels = _checked(embeddings, labels, ref_emb, ref_labels)
    if self_offset is None:
        self_offset = 0 if ref_emb is None else -1
    tiles = list(_chunk_tiles(embeddings, labels, ref_emb, ref_labels, metric, self_offset))
    if not any(bool(pos.any()) for _, _, pos, _ in tiles) or not any(bool(neg.any()) for _, _, _, neg in tiles):
        return _empty(embeddings.device)
    parts = ([], [], [], [])
    sign = 1.0 if metric.is_similarity else -1.0  # PML lists each anchor's pairs by increasing value
    for rows, l, pos, neg in tiles:
        inf = torch.tensor(float("inf"), dtype=l.dtype, device=l.device)
        max_neg = torch.where(neg, l, -inf).amax(1, keepdim=True)
        min_pos = torch.where(pos, l, inf).amin(1, keepdim=True)
        keep_pos = pos & (l - eps < max_neg)
        keep_neg = neg & (l + eps > min_pos)
        value = sign * l
        for k, pair in enumerate(_sorted_pairs(rows, keep_pos, value) + _sorted_pairs(rows, keep_neg, value)):
            parts[k].append(pair)
    return tuple(torch.cat(p) for p in parts)


@torch.no_grad()
def multi_similarity_bounds(embeddings, labels, *, epsilon=0.1, distance="cosine", normalize=None,
                            ref_emb=None, ref_labels=None, self_offset=None):
    """Multi-Similarity mining without listing the pairs: per-anchor bounds and pair counts.

    One streaming pass (a chunk×N tile at a time) gives, with l = s (or −d), each anchor's
    max_n l_an and min_p l_ap. multi_similarity_miner keeps exactly the positives with
    l − ε < bounds[i, 0] and the negatives with l + ε > bounds[i, 1] — the form the pair
    losses' `row_bounds` (bound_slack = ε) fuse. A batch without any positive or any negative
    pair gets bounds (−inf, +inf): nothing is kept.

    Args:
        embeddings, labels, epsilon, distance, normalize, ref_emb, ref_labels, self_offset: as
            multi_similarity_miner.

    Returns:
        (bounds, counts): bounds (B, 2) float (max_n l_an, min_p l_ap) in the compute dtype,
        counts (B, 2) int64, the kept positive and negative pairs of each anchor.

    Raises:
        ValueError: bad tensors or options.

    Example:
        >>> import torch
        >>> from fastcontrast.pair_miners import multi_similarity_bounds
        >>> bounds, counts = multi_similarity_bounds(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> bounds.shape, counts.shape
        (torch.Size([8, 2]), torch.Size([8, 2]))
    """
    from ._torch.pair_margin import pair_counts
    eps = check_real(epsilon, "epsilon")
    metric = metrics.resolve_metric(distance, normalize)
    labels, ref_labels = _checked(embeddings, labels, ref_emb, ref_labels)
    if self_offset is None:
        self_offset = 0 if ref_emb is None else -1
    b = embeddings.shape[0]
    cd = metrics.compute_dtype(embeddings.dtype)
    inf = float("inf")
    none = torch.stack([torch.full((b,), -inf, dtype=cd, device=embeddings.device),
                        torch.full((b,), inf, dtype=cd, device=embeddings.device)], 1)
    bounds = none.clone()
    counts = torch.zeros(b, 2, dtype=torch.int64, device=embeddings.device)
    if b == 0:
        return bounds, counts
    for rows, l, pos, neg in _chunk_tiles(embeddings, labels, ref_emb, ref_labels, metric, self_offset):
        max_neg = torch.where(neg, l, -inf).amax(1)
        min_pos = torch.where(pos, l, inf).amin(1)
        bounds[rows, 0], bounds[rows, 1] = max_neg, min_pos
        counts[rows, 0] = metrics.row_counts(pos & (l - eps < max_neg[:, None]))
        counts[rows, 1] = metrics.row_counts(neg & (l + eps > min_pos[:, None]))
    # a batch without a positive or without a negative pair mines nothing (as PML): decided on
    # the device, so that no value is read on the host
    totals = pair_counts(labels, labels if ref_labels is None else ref_labels, self_offset).sum(0)
    nothing = (totals == 0).any()
    return torch.where(nothing, none, bounds), torch.where(nothing, 0, counts)


def pair_margin_miner(embeddings, labels, *, pos_margin=0.2, neg_margin=0.8, distance="euclidean",
                      normalize=None, ref_emb=None, ref_labels=None, self_offset=None):
    """Pair-margin mining: positives farther than pos_margin, negatives closer than neg_margin.

    With a distance d: keep positives with d_ap > pos_margin and negatives with
    d_an < neg_margin; with a similarity s: s_ap < pos_margin and s_an > neg_margin.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor): (B,) integer labels.
        pos_margin (float, default 0.2): the positives' threshold.
        neg_margin (float, default 0.8): the negatives' threshold.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "dot" or "cosine".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's default).
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        self_offset (int | None, default None): anchor i is reference i + self_offset, a pair that is
            skipped (None: 0 without ref_emb, no self pair with it).

    Returns:
        (a1, p, a2, n) int64 pairs in row-major order.

    Raises:
        ValueError: bad tensors or options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> pairs = fc.pair_margin_miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), normalize=True)
        >>> len(pairs)
        4
    """
    pm, nm = check_real(pos_margin, "pos_margin"), check_real(neg_margin, "neg_margin")
    metric = metrics.resolve_metric(distance, normalize)
    labels, ref_labels = _checked(embeddings, labels, ref_emb, ref_labels)
    if self_offset is None:
        self_offset = 0 if ref_emb is None else -1
    sign = 1.0 if metric.is_similarity else -1.0  # l = sign · (the metric's value)
    pos_chunks, neg_chunks = [], []
    for rows, l, pos, neg in _chunk_tiles(embeddings, labels, ref_emb, ref_labels, metric, self_offset):
        value = sign * l
        pos_chunks.append((rows, pos & ((value < pm) if metric.is_similarity else (value > pm))))
        neg_chunks.append((rows, neg & ((value > nm) if metric.is_similarity else (value < nm))))
    if not pos_chunks:
        return _empty(embeddings.device)
    return _pairs_of(pos_chunks) + _pairs_of(neg_chunks)


def _check_strategies(pos_strategy, neg_strategy):
    check_choice(pos_strategy, "pos_strategy", STRATEGIES)
    check_choice(neg_strategy, "neg_strategy", STRATEGIES)
    if pos_strategy == neg_strategy == "semihard":
        raise ValueError('pos_strategy and neg_strategy cannot both be "semihard"')
    if "all" in (pos_strategy, neg_strategy) and "semihard" in (pos_strategy, neg_strategy):
        raise ValueError('"semihard" cannot be used in combination with "all"')


def _check_range(value, name):
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be None or (low, high), got {value!r}")
    return check_real(value[0], f"{name}[0]"), check_real(value[1], f"{name}[1]")


def _pick(l, cand, closest: bool, value, allowed, threshold=None, beyond=None):
    """Per row of a chunk: the closest (max l) or farthest (min l) candidate, lowest index on
    ties, optionally among those with l beyond a per-row threshold ("above" or "below");
    candidates outside `allowed` (in the metric's units, `value`) are dropped.
    Returns (picked l, picked index, row has one)."""
    if allowed is not None:
        cand = cand & (value >= allowed[0]) & (value <= allowed[1])
    if threshold is not None:
        cand = cand & ((l > threshold[:, None]) if beyond == "above" else (l < threshold[:, None]))
    inf = torch.tensor(float("inf"), dtype=l.dtype, device=l.device)
    masked = torch.where(cand, l, -inf if closest else inf)
    best, idx = (masked.max(1) if closest else masked.min(1))
    return best, idx, cand.any(1)


def batch_easy_hard_miner(embeddings, labels, *, pos_strategy="easy", neg_strategy="semihard",
                          allowed_pos_range=None, allowed_neg_range=None, distance="euclidean",
                          normalize=None, ref_emb=None, ref_labels=None, self_offset=None):
    """Batch easy/hard mining (Xuan et al. 2020): one positive and one negative per anchor.

    "easy": the closest positive / the farthest negative; "hard": the farthest positive /
    the closest negative; "semihard": positive — the farthest one still closer than the
    chosen negative; negative — the closest one still farther than the chosen positive;
    "all": every pair of that kind. Anchors lacking a pick are dropped.

    Args:
        embeddings (Tensor): (B, D) rows.
        labels (Tensor): (B,) integer labels.
        pos_strategy (str, default "easy"): "easy", "semihard", "hard" or "all" for the positive.
        neg_strategy (str, default "semihard"): the same for the negative (not both "semihard";
            "semihard" not with "all").
        allowed_pos_range ((low, high) | None, default None): only positives whose distance (or
            similarity) lies in [low, high].
        allowed_neg_range ((low, high) | None, default None): the same for negatives.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "dot" or "cosine".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's default).
        ref_emb (Tensor | None, default None): (N, D) reference rows (then no self pairs).
        ref_labels (Tensor | None, default None): (N,) the references' labels.
        self_offset (int | None, default None): anchor i is reference i + self_offset, a pair that is
            skipped (None: 0 without ref_emb, no self pair with it).

    Returns:
        (a1, p, a2, n) int64 pairs (a1 = a2 unless a strategy is "all").

    Raises:
        ValueError: bad strategies, ranges or tensors.

    Example:
        >>> import torch, fastcontrast as fc
        >>> a, p, a2, n = fc.batch_easy_hard_miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> bool((a == a2).all())
        True
    """
    _check_strategies(pos_strategy, neg_strategy)
    pos_range = _check_range(allowed_pos_range, "allowed_pos_range")
    neg_range = _check_range(allowed_neg_range, "allowed_neg_range")
    metric = metrics.resolve_metric(distance, normalize)
    labels, ref_labels = _checked(embeddings, labels, ref_emb, ref_labels)
    if self_offset is None:
        self_offset = 0 if ref_emb is None else -1
    sign = 1.0 if metric.is_similarity else -1.0
    pos_closest = pos_strategy == "easy"
    neg_closest = neg_strategy in ("hard", "semihard")
    out = {k: [] for k in ("a", "p", "n", "a1", "p1", "a2", "n2")}
    for rows, l, pos, neg in _chunk_tiles(embeddings, labels, ref_emb, ref_labels, metric, self_offset):
        value = sign * l
        anchors = torch.arange(rows.start, rows.stop, device=l.device)
        if pos_strategy == "semihard":
            ln, n_idx, n_ok = _pick(l, neg, neg_closest, value, neg_range)
            lp, p_idx, p_ok = _pick(l, pos, False, value, pos_range, ln, "above")
        elif neg_strategy == "semihard":
            lp, p_idx, p_ok = _pick(l, pos, pos_closest, value, pos_range)
            ln, n_idx, n_ok = _pick(l, neg, True, value, neg_range, lp, "below")
        else:
            if pos_strategy != "all":
                lp, p_idx, p_ok = _pick(l, pos, pos_closest, value, pos_range)
            if neg_strategy != "all":
                ln, n_idx, n_ok = _pick(l, neg, neg_closest, value, neg_range)
        if "all" not in (pos_strategy, neg_strategy):
            keep = p_ok & n_ok
            out["a"].append(anchors[keep])
            out["p"].append(p_idx[keep])
            out["n"].append(n_idx[keep])
            continue
        if pos_strategy == "all":
            i, j = pos.nonzero(as_tuple=True)
            out["a1"].append(i + rows.start)
            out["p1"].append(j)
        else:
            out["a1"].append(anchors[p_ok])
            out["p1"].append(p_idx[p_ok])
        if neg_strategy == "all":
            i, j = neg.nonzero(as_tuple=True)
            out["a2"].append(i + rows.start)
            out["n2"].append(j)
        else:
            out["a2"].append(anchors[n_ok])
            out["n2"].append(n_idx[n_ok])
    if not any(out.values()):
        return _empty(embeddings.device)
    if "all" not in (pos_strategy, neg_strategy):
        a, p, n = (torch.cat(out[k]) for k in ("a", "p", "n"))
        return a, p, a.clone(), n
    return tuple(torch.cat(out[k]) for k in ("a1", "p1", "a2", "n2"))


class _PairMiner(nn.Module):
    """forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n)."""

    def __init__(self, *, distance, normalize):
        super().__init__()
        self.metric = metrics.resolve_metric(distance, normalize)
        self.distance, self.normalize = distance, normalize

    def _options(self) -> dict:
        raise NotImplementedError

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        return self.mine(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels,
                         distance=self.distance, normalize=self.normalize, **self._options())

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{opts}, distance={self.distance!r}, normalize={self.normalize}"


class MultiSimilarityMiner(_PairMiner):
    """Multi-Similarity miner as a Module; see multi_similarity_miner for the rule.

    Args:
        epsilon (float, default 0.1): the slack ε.
        distance (str, default "cosine"): "cosine", "dot", "euclidean" or "squared_euclidean".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's default).

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> miner, loss = fc.MultiSimilarityMiner(epsilon=0.1), fc.MultiSimilarityLoss()
        >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss(x, y, miner(x, y)).dim()
        0
    """

    mine = staticmethod(multi_similarity_miner)

    def __init__(self, *, epsilon=0.1, distance="cosine", normalize=None):
        super().__init__(distance=distance, normalize=normalize)
        self.epsilon = check_real(epsilon, "epsilon")

    def _options(self):
        return dict(epsilon=self.epsilon)


class PairMarginMiner(_PairMiner):
    """Pair-margin miner as a Module; see pair_margin_miner for the rule.

    Args:
        pos_margin (float, default 0.2): the positives' threshold.
        neg_margin (float, default 0.8): the negatives' threshold.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "dot" or "cosine".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's default).

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad options.

    Example:
        >>> import torch, fastcontrast as fc
        >>> miner = fc.PairMarginMiner(pos_margin=0.2, neg_margin=0.8, normalize=True)
        >>> len(miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
        4
    """

    mine = staticmethod(pair_margin_miner)

    def __init__(self, *, pos_margin=0.2, neg_margin=0.8, distance="euclidean", normalize=None):
        super().__init__(distance=distance, normalize=normalize)
        self.pos_margin, self.neg_margin = check_real(pos_margin, "pos_margin"), check_real(neg_margin, "neg_margin")

    def _options(self):
        return dict(pos_margin=self.pos_margin, neg_margin=self.neg_margin)


class BatchEasyHardMiner(_PairMiner):
    """Batch easy/hard miner as a Module; see batch_easy_hard_miner for the strategies.

    Args:
        pos_strategy (str, default "easy"): "easy", "semihard", "hard" or "all" for the positive.
        neg_strategy (str, default "semihard"): the same for the negative.
        allowed_pos_range ((low, high) | None, default None): the positives' distance range.
        allowed_neg_range ((low, high) | None, default None): the negatives' distance range.
        distance (str, default "euclidean"): "euclidean", "squared_euclidean", "dot" or "cosine".
        normalize (bool | None, default None): L2-normalize the rows first (None: the metric's default).

    Returns:
        forward(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n).

    Raises:
        ValueError: bad strategies or ranges.

    Example:
        >>> import torch, fastcontrast as fc
        >>> miner = fc.BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard")
        >>> len(miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
        4
    """

    mine = staticmethod(batch_easy_hard_miner)

    def __init__(self, *, pos_strategy="easy", neg_strategy="semihard", allowed_pos_range=None,
                 allowed_neg_range=None, distance="euclidean", normalize=None):
        _check_strategies(pos_strategy, neg_strategy)
        super().__init__(distance=distance, normalize=normalize)
        self.pos_strategy, self.neg_strategy = pos_strategy, neg_strategy
        self.allowed_pos_range = _check_range(allowed_pos_range, "allowed_pos_range")
        self.allowed_neg_range = _check_range(allowed_neg_range, "allowed_neg_range")

    def _options(self):
        return dict(pos_strategy=self.pos_strategy, neg_strategy=self.neg_strategy,
                    allowed_pos_range=self.allowed_pos_range, allowed_neg_range=self.allowed_neg_range)
