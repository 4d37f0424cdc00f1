"""Triplet family, the memory-lean PyTorch path.

d = distance (d = −s when cfg.negate), per anchor a: positives P_a (same label, not the self
pair), negatives N_a (other label). Term of a triplet (a, p, n):
h = d_ap − d_an + margin, term relu(h) (softplus(h) when smooth); see configs.TripletConfig.

Every path walks the anchors in chunks; a chunk×N distance tile (`metrics.pairwise`), or the
sweep's piece × (N + E·P_max) merged rows, is the largest thing alive, and backward
recomputes the tile from q and r.

batch_all and the miner filters ("all", "hard", "semihard", "easy"), relu, no swap —
    label-grouped sweep, O(B·N log N) (see `_Sweep` and `_grouped_chunk`; for float32 on the
    CPU the passes around the sort are compiled row loops, `triplet_rows`, and a tile's
    pieces run on torch's thread count): references and
    anchors are permuted once per call by a stable argsort of their labels, so each anchor's
    positives are one contiguous column range. For a positive with x = d_ap, every condition
    on a negative (filter on t = d_an − x with the miner margin mm, and the hinge
    d_an < x + margin) bounds d_an from one side, so the kept negatives form a contiguous run
    [lo, hi) of the anchor's sorted negatives and the active ones its prefix [lo, U). The
    bounds' thresholds and the negatives are sorted together, one merged row per anchor; a
    cumulative count along it gives every bound (c = U − lo). Gradients:
        ∂v/∂d_ap = c(a, p)      ∂v/∂d_an = −#{p : n in the run [lo, U) of (a, p)}
    the latter from a difference array over the runs (+1 at lo, −1 at U, prefix sum) read at
    each negative's rank, so both directions use the very same runs; and the value from them,
        v_a = Σ_p c·(x + m) + Σ_n (∂v/∂d_an)·d_an       (accumulated in float64).
    cfg.term_keep
    (low, high) (ThresholdReducer) is two more one-sided bounds of the same kind: low ≥ 0
    keeps d_an < fl(x + fl(m − low)), 0 < high < inf keeps d_an > fl(x + fl(m − high)); the
    window [w_lo, w_hi) is their intersection with [lo, hi) (with low < 0 it includes the
    zero terms: they count in nonzero and add nothing). When the Function expects a gradient,
    forward also computes the gradients for dL/dvalues = 1 (`unit_grad`) and backward only
    rescales them (mean/sum reductions).
smooth (softplus is not linear, prefix sums do not apply): positives of each anchor
    compacted (chunk × P_max), negatives streamed in column blocks; O(B·P·N) time,
    O(chunk·P_max·block) memory.
swap (d_an → min(d_an, d_pn) in the term, d_pn = d(r_p, r_n)): (anchor, positive) pairs
    streamed in blocks, each block computing its rows of d(r_p, ·); O(B·P·N·D) time.
    On an exact tie d_an = d_pn the gradient is split in half (as torch.minimum does).
batch_hard: masked max over positives / min over negatives, lowest index on ties; backward
    touches the selected rows only (O(B·D)).
semihard_tfa: for each positive pair, the first negative of the sorted row strictly above
    d_ap (searchsorted), else the farthest negative (lowest index among equal values), or
    d_an = 0 when the anchor has no negative at all (TF Addons' row minimum, 0 on its
    zero diagonal).
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import TripletConfig
from ..metrics import Frame, chunks, compute_dtype, row_counts
from . import triplet_rows

# Elements per chunk×N tile (and per streamed block); tests lower it to force tiny chunks.
CHUNK_BUDGET = 1 << 21
# Merged-row entries per piece of the grouped sweep (a tile chunk is swept in pieces); label
# groups of at least MIN_GROUP_ROWS anchors are swept in pieces of their own.
SWEEP_BUDGET = 1 << 19
MIN_GROUP_ROWS = 4
TILE_ROWS = 512
# On a GPU each torch op is a kernel launch and each piece a few host syncs, while the CPU
# sizes above are chosen for its caches: the grouped sweep's tiles and pieces are
# GPU_BUDGET_SCALE times larger there (B = 65536: 512-row tiles of 128 MiB, a few hundred MiB
# live in all; a sizing not yet timed on a GPU).
GPU_BUDGET_SCALE = 8
# float32 merged rows sort as packed int64 keys (values only); False (tests) or other dtypes:
# stable row-wise sorts of the same layout.
PACKED_SORT = True

FILTERS = ("batch_all", "all", "hard", "semihard", "easy")


# ----------------------------------------------------------------------------- helpers

class _Refs:
    """The anchors and references in their metrics.Frame (compute dtype, centered and exactly
    scaled for the distance kinds), made once per call."""

    def __init__(self, q: torch.Tensor, r: torch.Tensor, kind: str):
        self.frame = Frame(q, r, kind)
        self.cd = self.frame.q.dtype
        self.r = self.frame.r
        self.r_abs = self.frame.r_abs
        self.sq = self.frame.r_sq


def _tile(q, refs: _Refs, rows: slice, cfg: TripletConfig, out=None):
    """(q chunk in the frame, true raw tile, its near pairs, signed distance tile d); the raw
    tile is written into `out` when given."""
    qc, q_sq, q_abs = refs.frame.rows(rows)
    raw, near = refs.frame.tile(qc, q_sq, q_abs, out=out)
    return qc, (raw, near, q_abs), (-raw if cfg.negate else raw)


def _masks(q_labels, r_labels, rows: slice, self_offset: int):
    """(pos, neg) boolean chunk×N masks: same label, other label; the self pair is neither."""
    same = q_labels[rows, None] == r_labels[None, :]
    neg = ~same
    if self_offset >= 0:
        self_col = torch.arange(rows.start, rows.stop, device=same.device) + self_offset
        inside = self_col < r_labels.shape[0]
        local = torch.arange(rows.stop - rows.start, device=same.device)
        same[local[inside], self_col[inside]] = False
        neg[local[inside], self_col[inside]] = False
    return same, neg


def _tile_backward(grad_d, qc, refs: _Refs, raw, cfg: TripletConfig, prescaled=False, r_out=None):
    """dL/d(signed tile) → (dL/dq chunk, dL/dr); raw = (true tile, near pairs, uncentered
    rows) from _tile; prescaled, r_out: see metrics.pairwise_backward's prescaled and y_out."""
    g = -grad_d if cfg.negate else grad_d
    tile, near, q_abs = raw
    return refs.frame.tile_backward(g, qc, tile, near, q_abs, prescaled=prescaled, r_out=r_out)


def _rowdist(x, y, refs: _Refs, negate: bool):
    """Signed d(x_k, y_k) for paired uncentered frame rows, from their difference."""
    d = refs.frame.row_distances(x, y)
    return -d if negate else d


def _rowdist_backward(g, x, y, d, refs: _Refs, negate: bool):
    """Gradients (dL/dx, dL/dy) of d(x_k, y_k) given dL/dd (signed, as _rowdist returns)."""
    if negate:
        g, d = -g, -d
    return refs.frame.row_distances_backward(g, x, y, d)


def _term(h, smooth: bool):
    return F.softplus(h) if smooth else F.relu(h)


def _term_grad(h, smooth: bool):
    return torch.sigmoid(h) if smooth else (h > 0).to(h.dtype)


def _in_keep(term, cfg: TripletConfig):
    """Boolean: the computed term lies inside cfg.term_keep (low < term < high), or None for
    the default (0, inf), where every term counts and nonzero is term > 0."""
    if not cfg.filtered:
        return None
    low, high = cfg.term_keep
    return (term > low) & (term < high)


def _kept(x, z, cfg: TripletConfig):
    """Boolean: triplet with d_ap = x, d_an = z passes the mining filter (broadcasting).
    Written with the same float expressions as the sorted path's searches."""
    mining, mm = cfg.mining, cfg.miner_margin
    if mining == "batch_all":
        return torch.ones(torch.broadcast_shapes(x.shape, z.shape), dtype=torch.bool, device=x.device)
    if mining == "all":
        return z <= x + mm
    if mining == "hard":
        return z <= torch.minimum(x + mm, x)
    if mining == "semihard":
        return (z > x) & (z <= x + mm)
    if mining == "easy":
        return z > x + mm
    raise ValueError(f"unknown triplet mining {mining!r}")


# ----------------------------------------------------------------------------- sorted path

def _padded_sort(d, mask):
    """Row-wise ascending stable sort of d where mask, +inf elsewhere: (values, order, row
    counts); equal values keep increasing column order. float32 on the CPU sorts one packed
    int64 key per entry, values only (the value's order-preserving bits over its column, the
    masked-out entries after every value: `_sortable_high`, `_sort_rows`), the same order as a
    stable sort and much faster than one with indices."""
    counts = row_counts(mask)
    c, n = d.shape
    if not (PACKED_SORT and d.dtype == torch.float32 and d.device.type == "cpu" and n < (1 << 31)):
        vals, order = torch.sort(torch.where(mask, d, float("inf")), dim=1, stable=True)
        return vals, order, counts
    words = torch.empty(c, n, 2, dtype=torch.int32)
    key = words.view(torch.int64).view(c, n)
    if triplet_rows.usable(c * n):
        triplet_rows.pack_keys(d.numpy().view(np.int32), 0, 0, False, key.numpy(), 0)
    else:
        words[..., _LOW] = torch.arange(n, dtype=torch.int32)
        _sortable_high(d, words[..., _HIGH])
    words[..., _HIGH].masked_fill_(~mask, _DEAD_HIGH)
    order = _sort_rows(key).bitwise_and_(0xFFFFFFFF)          # the low words: the columns
    vals = d.gather(1, order).masked_fill_(torch.arange(n)[None, :] >= counts[:, None], float("inf"))
    return vals, order, counts


def _compact(d, mask):
    """The masked columns of each row moved to the front, in increasing column order:
    (column index, valid, d) of shape chunk×K, K = the largest row count."""
    c = mask.shape[0]
    counts = row_counts(mask)
    k = int(counts.max()) if c else 0
    rows, cols = mask.nonzero(as_tuple=True)           # row-major: rows ascending, then columns
    starts = counts.cumsum(0) - counts
    slot = torch.arange(rows.shape[0], device=d.device) - starts[rows]
    index = torch.zeros(c, k, dtype=torch.long, device=d.device)
    index[rows, slot] = cols
    valid = torch.arange(k, device=d.device)[None, :] < counts[:, None]
    return index, valid, d.gather(1, index)


# ----------------------------------------------------------------------------- grouped sweep
#
# batch_all and the miner filters (relu, no swap), label-grouped: the references are permuted
# once per call by a stable argsort of their labels, and the anchors by one of theirs, so the
# positives of every anchor are one contiguous column range [start, end) of the permuted tile
# (its self column removed) and its negatives the rest. Per anchor row, the window bounds are
# counts of negatives below thresholds of its positives x (x, fl(x + mm), fl(x + m), as the
# filter asks); instead of one binary search per (positive, bound), the thresholds and the
# negatives are sorted together in one merged row, and a cumulative count along it gives
# every bound at once (a sweep, O(L) per row after the sort, L = N + E·P_max, E ≤ 5 bounds
# per positive). On equal values a "<" bound goes before the negatives and a "≤" bound after
# them, so the counts are exactly #{v < t} and #{v ≤ t}. For float32 every entry of a merged
# row is one int64 key (order-preserving bits of the value | tie class | position in the
# row), all distinct, so a plain values-only row sort (numpy's in-place sort on CPU) orders
# them exactly as a stable sort by (value, tie class) would and the low bits carry the
# permutation; other dtypes use stable row-wise sorts of the same layout. A tile chunk is swept
# in pieces of rows (`_pieces`); a piece inside one label group drops that group's positive
# columns from its merged rows (they are no negatives), other pieces mark them dead.

_LT, _NEG, _LE = 0, 1, 2   # tie classes: "<" bound, negative, "≤" bound



def _bounds(x, cfg: TripletConfig):
    """The thresholds of the positives x (chunk × P_max) the mining filter and the hinge need:
    ([(name, threshold, tie class, whether it is ≥ +0 wherever x is)], same float expressions
    as _kept)."""
    mining, mm = cfg.mining, cfg.miner_margin
    out = []
    if mining == "all":
        out.append(("hi", x + mm, _LE, mm >= 0))
    elif mining == "hard":
        out.append(("hi", torch.minimum(x + mm, x), _LE, mm >= 0))
    elif mining == "semihard":
        out += [("lo", x, _LE, True), ("hi", x + mm, _LE, mm >= 0)]
    elif mining == "easy":
        out.append(("lo", x + mm, _LE, mm >= 0))
    elif mining != "batch_all":
        raise ValueError(f"unknown triplet mining {mining!r}")
    out.append(("act", x + cfg.margin, _LT, cfg.margin >= 0))
    low, high = cfg.term_keep
    if low >= 0 and low != 0:          # relu(h) > low ≥ 0  ⟺  d_an < x + (m − low)
        out.append(("keep_hi", x + (cfg.margin - low), _LT, cfg.margin - low >= 0))
    if 0 < high < math.inf:            # relu(h) < high     ⟺  d_an > x + (m − high)
        out.append(("keep_lo", x + (cfg.margin - high), _LE, cfg.margin - high >= 0))
    return out


# int32 word order of an int64 key: (low, high) on little-endian machines
_LOW, _HIGH = (0, 1) if sys.byteorder == "little" else (1, 0)
_DEAD_HIGH = triplet_rows.DEAD_HIGH      # a dead column's high word: after every finite value's


def _tie_word(tie: int) -> int:
    """tie << 30 as a signed int32 (the low word compares unsigned inside the int64 key)."""
    w = tie << 30
    return w - (1 << 32) if w >= 1 << 31 else w


def _sortable_high(v, out, nonneg: bool = False):
    """out (int32, any strides) = an order-preserving signed map of the float32 values v
    (−0.0 taken as +0.0): their bits, the magnitude bits flipped for negative values; with
    nonneg (every v ≥ +0) the bits themselves."""
    torch.add(v, 0.0, out=out.view(torch.float32))
    if not nonneg:
        out.bitwise_xor_((out >> 31).bitwise_and_(0x7FFFFFFF))
    return out


def _sort_rows(key):
    """Each row of the int64 matrix `key` ascending (values only; in place on the CPU, where
    numpy's sort is the faster one)."""
    if key.device.type == "cpu":
        key.numpy().sort(axis=1)
        return key
    return torch.sort(key, dim=1)[0]


class _Sweep:
    """The merged rows of one chunk, sorted: the negatives of each row (the tile columns but
    `skip`, a column range [s, e) dropped, and but `dead`, a chunk × N mask or (rows, columns)
    pairs) and the bounds (blocks of chunk × P_max thresholds with their tie classes; the dead
    slots' counts are computed and ignored). Gives `bound_counts` (chunk × E·P_max: the
    negatives before each bound, #{v < t} or #{v ≤ t} by its tie class), `at` (chunk ×
    (N + E·P_max) int32: 1 + a negative's rank at its column, the bound counts after them) and
    `runs_to_columns`. (The compiled passes build the same keys in `_compiled_sweep`.)"""

    def __init__(self, d, bounds, skip=None, dead=None, nonneg=False):
        c, n = d.shape
        total = n + sum(t.shape[1] for t, _, _ in bounds)     # positions: columns, then bound slots
        segments = [(d, 0)] if skip is None else [(d[:, :skip[0]], 0), (d[:, skip[1]:], skip[1])]
        packed = PACKED_SORT and d.dtype == torch.float32 and total < (1 << 28)
        self._n = n
        # the inclusive count of negatives at every entry, put back at its position: a
        # negative's column gets 1 + its rank, a bound's slot the negatives before it (a dead
        # column sorts last and gets a rank past every window)
        # (int32: counts < 2^28)
        at = torch.empty(c, total, dtype=torch.int32, device=d.device)
        if packed:
            key = self._packed(segments, bounds, dead, skip, c, n, nonneg)
            # positions: the low 30 bits; as signed int32 the low words of negatives, and
            # only theirs, are ≥ 2^30
            low = key.view(torch.int32).view(key.shape[0], key.shape[1], 2)[..., _LOW]
            at.scatter_(1, key & ((1 << 30) - 1), torch.cumsum(low >= (1 << 30), 1, dtype=torch.int32))
        else:
            idx, is_neg = self._rowwise(segments, bounds, dead, skip, c, n, total)
            at.scatter_(1, idx, torch.cumsum(is_neg, 1, dtype=torch.int32))
        if skip is not None:
            at[:, skip[0]:skip[1]] = 0
        self.at = at

    @property
    def bound_counts(self):
        """chunk × E·P_max int64: the negatives before each bound."""
        return self.at[:, self._n:].long()

    def _packed(self, segments, bounds, dead, skip, c, n, nonneg):
        # key (int64) = the value's sortable int32 (`_sortable_high`) in the high word and
        # tie class << 30 | position (< 2^28) in the low word; a dead column gets the high
        # word _DEAD_HIGH (after every live key: live values are finite). Both words are
        # written through int32 views; the keys are sorted values only, in place.
        dev = segments[0][0].device
        width = sum(v.shape[1] for v, _ in segments) + sum(t.shape[1] for t, _, _ in bounds)
        words = torch.empty(c, width, 2, dtype=torch.int32, device=dev)
        key = words.view(torch.int64).view(c, width)
        low, high = words[..., _LOW], words[..., _HIGH]

        def pack(v, pos, tie, v_nonneg, j):
            w = v.shape[1]
            low[:, j:j + w] = _tie_word(tie) | torch.arange(pos, pos + w, dtype=torch.int32, device=dev)
            _sortable_high(v, high[:, j:j + w], v_nonneg)

        j = 0
        for v, pos in segments:
            pack(v, pos, _NEG, nonneg, j)
            j += v.shape[1]
        if isinstance(dead, torch.Tensor):
            high[:, :n].masked_fill_(dead, _DEAD_HIGH)
        elif dead is not None and dead[0].numel():
            rows, cols = dead
            kpos = cols if skip is None else torch.where(cols < skip[0], cols, cols - (skip[1] - skip[0]))
            high[rows, kpos] = _DEAD_HIGH
        pos = n
        for t, tie, t_nonneg in bounds:
            pack(t, pos, tie, t_nonneg, j)
            j, pos = j + t.shape[1], pos + t.shape[1]
        return _sort_rows(key)

    def _rowwise(self, segments, bounds, dead, skip, c, n, total):
        # stable row sorts: by tie class, then by value (dead entries +inf; live values are finite)
        dev = segments[0][0].device
        layout = torch.cat([v for v, _ in segments] + [t for t, _, _ in bounds], 1)
        position = torch.cat([torch.arange(p, p + v.shape[1], device=dev) for v, p in segments] +
                             [torch.arange(n, total, device=dev)])
        tie = torch.cat([torch.full(v.shape, _NEG, dtype=torch.int8, device=dev) for v, _ in segments] +
                        [torch.full(t.shape, k, dtype=torch.int8, device=dev) for t, k, _ in bounds], 1)
        live = torch.ones(layout.shape, dtype=torch.bool, device=dev)
        if isinstance(dead, torch.Tensor):
            live[:, :n] = ~dead
        elif dead is not None and dead[0].numel():
            rows, cols = dead
            live[rows, cols if skip is None else torch.where(cols < skip[0], cols, cols - (skip[1] - skip[0]))] = False
        order = torch.sort(tie, dim=1, stable=True)[1]
        vals = torch.where(live, layout, float("inf")).gather(1, order)
        perm = order.gather(1, torch.sort(vals, dim=1, stable=True)[1])
        # a dead column (+inf, after every live entry) counts as a negative ranked past every window
        return position[perm], (tie == _NEG).gather(1, perm).long()

    def runs_to_columns(self, w_lo, ahi, d, out=None, want_dots=True):
        """The runs [w_lo, ahi) of ranks (chunk × P_max, ahi ≥ w_lo) → (grad, dots): grad
        (chunk × N, written into `out` when given) = −#{runs holding the negative} at every
        negative's tile column, 0 at the others; dots = Σ_j grad·d per row in float64, or
        None when not wanted."""
        c, n = self.at.shape[0], self._n
        # cover[1 + k] = −#{runs holding the negative of rank k}: a difference array (−1
        # after w_lo, +1 after ahi), summed up, read at every column's 1 + rank
        ones = torch.ones(w_lo.shape, dtype=d.dtype, device=d.device)
        cover = torch.zeros(c, n + 2, dtype=d.dtype, device=d.device)
        cover.scatter_add_(1, w_lo + 1, -ones).scatter_add_(1, ahi + 1, ones).cumsum_(1)
        rank1 = self.at[:, :n].long()
        grad = torch.gather(cover, 1, rank1, out=out) if out is not None else cover.gather(1, rank1)
        return grad, (_rowdot64(grad, d) if want_dots else None)


class _Groups:
    """Label grouping of one call: permutations of anchors and references, and for each
    permuted anchor its positive column range [start, end) and self column (−1: none) in the
    permuted references."""

    def __init__(self, q_labels, r_labels, self_offset: int):
        self.q_perm = torch.sort(q_labels, stable=True)[1]
        if r_labels is q_labels:
            self.r_perm = self.q_perm
        else:
            self.r_perm = torch.sort(r_labels, stable=True)[1]
        n = r_labels.shape[0]
        r_sorted = r_labels[self.r_perm]
        y = q_labels[self.q_perm]
        self.start = torch.searchsorted(r_sorted, y, right=False)
        self.end = torch.searchsorted(r_sorted, y, right=True)
        r_inv = torch.empty_like(self.r_perm)
        r_inv[self.r_perm] = torch.arange(n, device=r_inv.device)
        self_orig = self.q_perm + self_offset
        has_self = (self_offset >= 0) & (self_orig < n)
        self.self_col = torch.where(has_self, r_inv[self_orig.clamp(0, max(n - 1, 0))], -1) if n else \
            torch.full_like(self.q_perm, -1)
        inside = (self.self_col >= self.start) & (self.self_col < self.end)
        self.n_pos = self.end - self.start - inside.long()
        self.self_rank = torch.where(inside, self.self_col - self.start, self.end - self.start)
        self.n_neg = n - (self.end - self.start) - ((self.self_col >= 0) & ~inside).long()

    def runs(self, min_rows: int):
        """[(first, last + 1)] of the permuted anchors' label groups of at least min_rows rows."""
        b = self.start.shape[0]
        if b == 0:
            return []
        new = torch.ones(b, dtype=torch.bool, device=self.start.device)
        new[1:] = (self.start[1:] != self.start[:-1]) | (self.end[1:] != self.end[:-1])
        firsts = new.nonzero()[:, 0].tolist() + [b]
        return [(a, e) for a, e in zip(firsts[:-1], firsts[1:]) if e - a >= min_rows]


def _grouped_chunk(d, grp: _Groups, rows: slice, cfg: TripletConfig, g=None, want_values=True, out=None,
                   compiled=False, tile_scale=0.0, pieces=None):
    """Batch-all / filters on one chunk of permuted anchors (d: chunk × N, permuted columns).
    Returns ((values, counts, nonzero) or None, dL/d(signed tile) for dL/dvalues = g or None);
    the gradient is written into `out` (chunk × N) when given. compiled: the passes around the
    sort as compiled row loops (float32 on the CPU, `triplet_rows`); with tile_scale = 2 / unit
    (Euclidean) they return the gradient already divided by the zero-safe 2d, as
    metrics.pairwise_backward(prescaled=True) takes it. Given a list `pieces`, the compiled
    passes are appended to it as a triplet_rows.Piece instead of run: the returned tensors
    hold the results once triplet_rows.run(pieces) has run (the values in float64)."""
    c, n = d.shape
    dev = d.device
    start, n_pos, self_rank = grp.start[rows], grp.n_pos[rows], grp.self_rank[rows]
    p_max = int(n_pos.max()) if c else 0
    zeros_out = (torch.zeros(c, dtype=d.dtype, device=dev), torch.zeros(c, dtype=torch.int64, device=dev),
                 torch.zeros(c, dtype=torch.int64, device=dev))
    if p_max == 0:
        grad = None if g is None else (torch.zeros_like(d) if out is None else out.zero_())
        return (zeros_out if want_values else None), grad
    # the positives: a contiguous range per row, its self column skipped
    j = torch.arange(p_max, device=dev)
    p_ok = j[None, :] < n_pos[:, None]
    p_col = (start[:, None] + j[None, :] + (j[None, :] >= self_rank[:, None]).long()).clamp_max(n - 1)
    x = torch.where(p_ok, d.gather(1, p_col), torch.zeros((), dtype=d.dtype, device=dev))
    bounds = _bounds(x, cfg)
    nonneg = cfg.kind != "dot" and not cfg.negate
    s0, e0 = int(start[0]), int(grp.end[rows.start])
    one_group = bool((start == s0).all()) and bool((grp.end[rows] == e0).all())
    sweep_bounds = [(t, k, nonneg and z) for _, t, k, z in bounds]
    if compiled:
        return _compiled_sweep(d, grp, rows, cfg, bounds, sweep_bounds, x, p_col, n_pos, g, want_values, out,
                               tile_scale, (s0, e0) if one_group else (0, 0), nonneg, pieces)
    if one_group:
        # one label group: the negatives are the columns outside [s0, e0) but a self column there
        sc = grp.self_col[rows]
        out_self = (sc >= 0) & ((sc < s0) | (sc >= e0))
        dead = (out_self.nonzero()[:, 0], sc[out_self])
        sw = _Sweep(d, sweep_bounds, skip=(s0, e0), dead=dead, nonneg=nonneg)
    else:
        # not a negative: the columns in [start, end) and the self column
        col = torch.arange(n, device=dev)
        dead = ((col[None, :] >= start[:, None]) & (col[None, :] < grp.end[rows, None])) | \
            (col[None, :] == grp.self_col[rows, None])
        sw = _Sweep(d, sweep_bounds, dead=dead, nonneg=nonneg)
    found = {name: sw.bound_counts[:, k * p_max:(k + 1) * p_max] for k, (name, _, _, _) in enumerate(bounds)}
    n_neg = grp.n_neg[rows, None].expand(c, p_max)
    zero = torch.zeros_like(n_neg)
    m_lo = found.get("lo", zero)
    hi = torch.maximum(found.get("hi", n_neg), m_lo)
    a_end = found["act"]
    # the term window (cfg.term_keep) inside the mining window [lo, hi): [w_lo, w_hi)
    low, high = cfg.term_keep
    w_lo = torch.maximum(found["keep_lo"], m_lo) if "keep_lo" in found else m_lo
    w_hi = hi
    if low >= 0:
        w_hi = torch.minimum(hi, found["keep_hi"] if "keep_hi" in found else a_end)
    if high <= 0:
        w_hi = w_lo                    # relu(h) ≥ 0: no term is below high
    w_hi = torch.maximum(w_hi, w_lo)
    # [w_lo, ahi): the kept terms that are > 0 (the others add 0 and have no gradient)
    ahi = torch.where(p_ok, torch.maximum(torch.minimum(w_hi, a_end), w_lo), w_lo)
    active = ahi - w_lo
    # ∂v/∂d_an = −#{positives whose active run [w_lo, ahi) holds the negative}
    grad, dots = sw.runs_to_columns(w_lo, ahi, d, out=out, want_dots=want_values)
    values = None
    if want_values:
        # v = Σ_p Σ_{n in its run} (x + m − d_an) = Σ_p active·(x + m) + Σ_n (∂v/∂d_an)·d_an
        kept = torch.where(p_ok, hi - m_lo, zero)
        in_keep = torch.where(p_ok, w_hi - w_lo, zero) if cfg.filtered else active
        v = (active.double() * (x + cfg.margin).double()).sum(1) + dots
        values = (v.to(d.dtype), kept.sum(1), in_keep.sum(1))
    if g is None:
        return values, None
    grad.scatter_add_(1, p_col, active.to(d.dtype))       # ∂v/∂d_ap = active
    if not bool((g == 1).all()):
        grad *= g[:, None]
    return values, grad


def _compiled_sweep(d, grp: _Groups, rows: slice, cfg: TripletConfig, bounds, sweep_bounds, x, p_col, n_pos, g,
                    want_values, out, tile_scale, skip, nonneg, pieces):
    """The rest of _grouped_chunk as compiled row passes (`triplet_rows.Piece`): the merged
    rows' keys as `_Sweep._packed` lays them out (the tile columns but [skip), then the bound
    blocks), sorted, and from them the same windows, counts and gradient coefficients."""
    c, n = d.shape
    names = [name for name, _, _, _ in bounds]
    slots = np.array([names.index(k) if k in names else -1 for k in ("lo", "hi", "act", "keep_lo", "keep_hi")])
    low, high = cfg.term_keep
    grad = torch.empty_like(d) if out is None else out
    scale = torch.ones(c, dtype=d.dtype) if g is None else g.to(d.dtype).contiguous()
    values = torch.empty(c, dtype=torch.float64)
    counts, nonzero = torch.empty(c, dtype=torch.int64), torch.empty(c, dtype=torch.int64)
    bits = d.numpy().view(np.int32)
    neg = _tie_word(_NEG)
    packs = [(bits, 0, neg, nonneg, 0)] if skip[1] == skip[0] else \
        [(bits[:, :skip[0]], 0, neg, nonneg, 0), (bits[:, skip[1]:], skip[1], neg, nonneg, skip[0])]
    j, pos = n - (skip[1] - skip[0]), n
    for t, tie, t_nonneg in sweep_bounds:
        packs.append((t.contiguous().numpy().view(np.int32), pos, _tie_word(tie), t_nonneg, j))
        j, pos = j + t.shape[1], pos + t.shape[1]
    dead = tuple(t.contiguous().numpy() for t in (grp.start[rows], grp.end[rows], grp.self_col[rows])) + skip
    piece = triplet_rows.Piece(c, j, packs, dead, (
        n, skip, slots, n_pos.contiguous().numpy(), grp.n_neg[rows].contiguous().numpy(), x.contiguous().numpy(),
        float(cfg.margin), float(low), float(high), cfg.filtered, p_col.contiguous().numpy(), scale.numpy(),
        d.numpy(), tile_scale, grad.numpy(), values.numpy(), counts.numpy(), nonzero.numpy()))
    if pieces is None:
        triplet_rows.run([piece])
        values = values.to(d.dtype)
    else:
        pieces.append(piece)
    return ((values, counts, nonzero) if want_values else None), (None if g is None else grad)


def _rowdot64(a, b, elements: int = 1 << 15):
    """Σ_j a_ij·b_ij per row, products and sums in float64, a few rows at a time: about
    `elements` entries (256 KiB of float64), so the copy stays in a core's L2."""
    out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    rows = max(1, elements // max(a.shape[1], 1))
    for r0 in range(0, a.shape[0], rows):
        out[r0:r0 + rows] = a[r0:r0 + rows].to(torch.float64, copy=True).mul_(b[r0:r0 + rows]).sum(1)
    return out


def _grouped(cfg: TripletConfig):
    return cfg.mining in FILTERS and not cfg.smooth and not cfg.swap


def _pieces(rows: slice, big_groups, step: int):
    """Row slices of `rows`, at most `step` rows each, cut at the bounds of the label groups
    in big_groups ([(start, end)] of permuted anchors), so that a piece inside one of them is
    one group (the sweep then drops its positive columns)."""
    cuts = {rows.start, rows.stop}
    for a, e in big_groups:
        if a < rows.stop and e > rows.start:
            cuts.update((max(a, rows.start), min(e, rows.stop)))
    cuts = sorted(cuts)
    for a, e in zip(cuts[:-1], cuts[1:]):
        for r0 in range(a, e, step):
            yield slice(r0, min(e, r0 + step))


def _grouped_pass(q, r, q_labels, r_labels, cfg: TripletConfig, g=None, want_values=True):
    """The grouped sweep over all anchors: ((values, counts, nonzero) or None, (dL/dq, dL/dr)
    for dL/dvalues = g or None), everything in the caller's order."""
    b, n = q.shape[0], r.shape[0]
    grp = _Groups(q_labels, r_labels, cfg.self_offset)
    same = r is q and grp.r_perm is grp.q_perm
    qp = q[grp.q_perm]
    rp = qp if same else r[grp.r_perm]
    refs = _Refs(qp, rp, cfg.kind)
    cd, dev = refs.cd, q.device
    values = torch.zeros(b, dtype=cd, device=dev)
    counts = torch.zeros(b, dtype=torch.int64, device=dev)
    nonzero = torch.zeros_like(counts)
    if g is not None:
        gp = g.to(cd)[grp.q_perm]
        grad_q = torch.zeros(qp.shape, dtype=cd, device=dev)
        grad_r = torch.zeros(refs.r.shape, dtype=cd, device=dev)
    n_bounds = len(_bounds(torch.zeros(1, 1, dtype=cd, device=dev), cfg))
    width = n + n_bounds * int(grp.n_pos.max()) if b else n
    scale = 1 if dev.type == "cpu" else GPU_BUDGET_SCALE
    step = max(1, scale * SWEEP_BUDGET // max(width, 1))
    big_groups = grp.runs(MIN_GROUP_ROWS)
    # tiles of at least TILE_ROWS anchors while that stays within 2·CHUNK_BUDGET elements: the
    # gradient's O(N·D) passes per tile then weigh little against its O(rows·N·D) matmuls
    budget = scale * min(max(CHUNK_BUDGET, TILE_ROWS * n), 2 * CHUNK_BUDGET)
    packed = PACKED_SORT and cd == torch.float32 and dev.type == "cpu" and width < (1 << 28)
    # the tile, its gradient and the references' gradient terms live in buffers of the first
    # (largest) tile's size, reused by every tile: fewer live buffers at the peak, and no page
    # faults of fresh ones where first touches are slow
    tile_buf = grad_buf = r_bufs = None
    for rows in chunks(b, n, budget):
        if g is not None and not want_values and not bool((gp[rows] != 0).any()):
            continue
        c = rows.stop - rows.start
        if tile_buf is None:
            tile_buf = torch.empty(c, n, dtype=cd, device=dev)
            # (without g the compiled passes still write coefficients: into this scratch)
            grad_buf = torch.empty(c, n, dtype=cd, device=dev) if g is not None or packed else None
            r_bufs = (torch.empty_like(refs.r), torch.empty_like(refs.r)) if g is not None else None
        qc, raw, d = _tile(qp, refs, rows, cfg, out=tile_buf[:c])
        grad = grad_buf[:c] if g is not None else None
        # one choice per tile: the compiled passes, and with them the Euclidean 1/(2d) folded
        # into the gradient they write, or the torch passes
        compiled = packed and triplet_rows.usable(c * width)
        prescaled = compiled and grad is not None and cfg.kind == "euclidean" and not cfg.negate
        tile_scale = float(2.0 / refs.frame.unit) if prescaled else 0.0
        # the compiled passes of the tile's pieces run together, on torch's thread count
        deferred = [] if compiled else None
        results = []
        for part in _pieces(rows, big_groups, step):
            local = slice(part.start - rows.start, part.stop - rows.start)
            out, _ = _grouped_chunk(d[local], grp, part, cfg, g=None if g is None else gp[part],
                                    want_values=want_values, out=None if grad_buf is None else grad_buf[local],
                                    compiled=compiled, tile_scale=tile_scale, pieces=deferred)
            results.append((part, out))
        if compiled:
            triplet_rows.run(deferred)
        if want_values:
            for part, out in results:
                values[part], counts[part], nonzero[part] = out
        if grad is not None:
            gq, gr = _tile_backward(grad, qc, refs, raw, cfg, prescaled=prescaled, r_out=r_bufs)
            grad_q[rows] += gq
            grad_r += gr
        raw = d = grad = gq = gr = None      # this tile's other tensors go before the next one is computed
    out = None
    if want_values:
        out = tuple(torch.empty_like(t).index_copy_(0, grp.q_perm, t) for t in (values, counts, nonzero))
    grads = None
    if g is not None:
        gq = torch.empty_like(grad_q).index_copy_(0, grp.q_perm, grad_q)
        gr = torch.empty_like(grad_r).index_copy_(0, grp.r_perm, grad_r)
        grads = (gq, gr)
    return out, grads


# ----------------------------------------------------------------------------- smooth path

def _streamed_chunk(d, pos, neg, cfg: TripletConfig, g=None, want_values=True):
    """Batch-all / filters by streaming negatives in column blocks (any term, used for smooth).
    -> ((values, counts, nonzero) or None, dL/d(signed tile) for dL/dvalues = g or None), both
    from the same blocks."""
    c, n = d.shape
    pidx, pvalid, x = _compact(d, pos)
    p_max = x.shape[1]
    values = torch.zeros(c, dtype=d.dtype, device=d.device)
    counts = torch.zeros(c, dtype=torch.int64, device=d.device)
    nonzero = torch.zeros_like(counts)
    grad = torch.zeros_like(d) if g is not None else None
    grad_x = torch.zeros_like(x) if g is not None else None
    if p_max == 0:
        return ((values, counts, nonzero) if want_values else None), grad
    block = max(1, CHUNK_BUDGET // max(c * p_max, 1))
    for j0 in range(0, n, block):
        z = d[:, j0:j0 + block]
        keep = pvalid[:, :, None] & neg[:, None, j0:j0 + block] & _kept(x[:, :, None], z[:, None, :], cfg)
        h = x[:, :, None] - z[:, None, :] + cfg.margin
        term = _term(h, cfg.smooth)
        in_keep = _in_keep(term, cfg)
        window = keep if in_keep is None else keep & in_keep
        if want_values:
            term = torch.where(window, term, torch.zeros_like(h))
            values += term.sum((1, 2))
            counts += row_counts(keep.view(c, -1))
            nonzero += row_counts((term > 0 if in_keep is None else window).view(c, -1))
        if g is not None:
            w = torch.where(window, _term_grad(h, cfg.smooth), torch.zeros_like(h)) * g[:, None, None]
            grad_x += w.sum(2)
            grad[:, j0:j0 + block] -= w.sum(1)
    if g is not None:
        grad.scatter_add_(1, pidx, torch.where(pvalid, grad_x, torch.zeros_like(grad_x)))
    return ((values, counts, nonzero) if want_values else None), grad


# ----------------------------------------------------------------------------- swap path

def _swap_chunk(d, pos, neg, refs: _Refs, cfg: TripletConfig, g=None, grad_r=None, want_values=True):
    """Batch-all / filters with swap: (anchor, positive) pairs in blocks, each block with its
    rows d(r_p, ·) computed once for the values and the gradient.
    -> ((values, counts, nonzero) or None, dL/d(signed tile) for dL/dvalues = g or None); the
    d_pn gradients are added into grad_r."""
    c, n = d.shape
    a_loc, p_col = pos.nonzero(as_tuple=True)
    values = torch.zeros(c, dtype=d.dtype, device=d.device)
    counts = torch.zeros(c, dtype=torch.int64, device=d.device)
    nonzero = torch.zeros_like(counts)
    grad = torch.zeros_like(d) if g is not None else None
    block = max(1, CHUNK_BUDGET // max(n, 1))
    for k0 in range(0, a_loc.shape[0], block):
        al, pc = a_loc[k0:k0 + block], p_col[k0:k0 + block]
        z = d[al]
        x = d[al, pc]
        rp, rp_sq, rp_abs = refs.frame.ref_rows(pc)
        raw_pn, near_pn = refs.frame.tile(rp, rp_sq, rp_abs)
        d_pn = -raw_pn if cfg.negate else raw_pn
        keep = neg[al] & _kept(x[:, None], z, cfg)
        e = torch.minimum(z, d_pn)
        h = x[:, None] - e + cfg.margin
        term = _term(h, cfg.smooth)
        in_keep = _in_keep(term, cfg)
        window = keep if in_keep is None else keep & in_keep
        if want_values:
            term = torch.where(window, term, torch.zeros_like(h))
            values.index_add_(0, al, term.sum(1))
            counts.index_add_(0, al, row_counts(keep))
            nonzero.index_add_(0, al, row_counts(term > 0 if in_keep is None else window))
        if g is None:
            continue
        w = torch.where(window, _term_grad(h, cfg.smooth), torch.zeros_like(h)) * g[al, None]
        share_an = torch.where(z < d_pn, 1.0, torch.where(z == d_pn, 0.5, 0.0)).to(d.dtype)
        grad.index_put_((al, pc), w.sum(1), accumulate=True)
        grad.index_add_(0, al, -w * share_an)
        g_pn = -w * (1.0 - share_an)
        if cfg.negate:
            g_pn = -g_pn
        gx, gy = refs.frame.tile_backward(g_pn, rp, raw_pn, near_pn, rp_abs)
        grad_r.index_add_(0, pc, gx)
        grad_r += gy
    return ((values, counts, nonzero) if want_values else None), grad


# ----------------------------------------------------------------------------- selections

def _batch_hard_select(d, pos, neg, cfg: TripletConfig):
    """Per anchor: (d_ap, p index, has_p grad, d_an, n index, has_n grad, valid)."""
    inf = torch.full_like(d, float("inf"))
    p_idx = torch.where(pos, d, -inf).argmax(1)
    n_idx = torch.where(neg, d, inf).argmin(1)
    has_p, has_n = pos.any(1), neg.any(1)
    d_ap = d.gather(1, p_idx[:, None])[:, 0]
    d_an = d.gather(1, n_idx[:, None])[:, 0]
    if cfg.hard_fallback == "drop":
        valid = has_p & has_n
    elif cfg.hard_fallback == "tfa":
        valid = torch.ones_like(has_p)
        d_ap = torch.where(has_p, d_ap, torch.zeros_like(d_ap))
        far = d.argmax(1)
        n_idx = torch.where(has_n, n_idx, far)
        d_an = d.gather(1, n_idx[:, None])[:, 0]
        has_n = torch.ones_like(has_n)
    else:
        raise ValueError(f"unknown hard_fallback {cfg.hard_fallback!r}")
    return d_ap, p_idx, has_p, d_an, n_idx, has_n, valid


def _semihard_tfa_chunk(d, pos, neg, refs: _Refs, cfg: TripletConfig, g=None, grad_r=None, want_values=True):
    """semihard_tfa on one chunk, positives compacted (chunk × P_max). For each positive
    x = d_ap: the first sorted negative strictly above x, else the farthest negative (the
    first of its ties), else d_an = 0 (no negative at all; no gradient).
    -> ((values, counts, nonzero) or None, dL/d(signed tile) for dL/dvalues = g or None),
    from one sort; swap's d_pn gradients are added into grad_r."""
    s, order, n_neg = _padded_sort(d, neg)
    p_col, p_ok, x = _compact(d, pos)
    c, n = d.shape
    if s.dtype == torch.float32 and s.device.type == "cpu" and triplet_rows.usable(c * n):
        k = torch.empty(x.shape, dtype=torch.int64)
        triplet_rows.first_above(s.numpy(), n_neg.contiguous().numpy(), x.contiguous().numpy(), k.numpy())
    else:
        above = torch.searchsorted(s, x, right=True)
        last = (n_neg - 1).clamp_min(0)[:, None]
        far = torch.searchsorted(s, s.gather(1, last), right=False)
        k = torch.where(above < n_neg[:, None], above, far).clamp_max(n - 1)
    has_n = p_ok & (n_neg > 0)[:, None]
    n_col = order.gather(1, k)
    z = torch.where(has_n, s.gather(1, k), torch.zeros_like(x))
    e, share_an = z, has_n.to(d.dtype)
    if cfg.swap:
        a_loc, slot = has_n.nonzero(as_tuple=True)
        rp, rn = refs.r_abs[p_col[a_loc, slot]], refs.r_abs[n_col[a_loc, slot]]
        d_pn = _rowdist(rp, rn, refs, cfg.negate)
        za = z[a_loc, slot]
        pair_share = torch.where(za < d_pn, 1.0, torch.where(za == d_pn, 0.5, 0.0)).to(d.dtype)
        e = e.index_put((a_loc, slot), torch.minimum(za, d_pn))
        share_an = share_an.index_put((a_loc, slot), pair_share)
    h = x - e + cfg.margin
    term = _term(h, cfg.smooth)
    in_keep = _in_keep(term, cfg)
    window = p_ok if in_keep is None else p_ok & in_keep
    values = None
    if want_values:
        term = torch.where(window, term, torch.zeros_like(h))
        values = (term.sum(1), p_ok.sum(1), (term > 0).sum(1) if in_keep is None else window.sum(1))
    if g is None:
        return values, None
    w = torch.where(window, _term_grad(h, cfg.smooth), torch.zeros_like(h)) * g[:, None]
    grad = torch.zeros_like(d)
    grad.scatter_add_(1, p_col, w)
    grad.scatter_add_(1, n_col, -w * share_an)
    if cfg.swap and a_loc.numel():
        g_pn = -w[a_loc, slot] * (1.0 - pair_share)
        gp, gn = _rowdist_backward(g_pn, rp, rn, d_pn, refs, cfg.negate)
        grad_r.index_add_(0, p_col[a_loc, slot], gp)
        grad_r.index_add_(0, n_col[a_loc, slot], gn)
    return values, grad


# ----------------------------------------------------------------------------- the seam

def _check(cfg: TripletConfig):
    if cfg.mining not in FILTERS + ("batch_hard", "semihard_tfa"):
        raise ValueError(f"unknown triplet mining {cfg.mining!r}")


def _chunk(d, pos, neg, refs: _Refs, cfg: TripletConfig, g=None, grad_r=None, want_values=True):
    """One chunk of every mode but batch_hard and the grouped ones: (values, counts, nonzero)
    or None, and the gradient tile for dL/dvalues = g, or None (swap paths add their d_pn part
    into grad_r), from one pass over the chunk."""
    if cfg.mining == "semihard_tfa":
        return _semihard_tfa_chunk(d, pos, neg, refs, cfg, g=g, grad_r=grad_r, want_values=want_values)
    if cfg.swap:
        return _swap_chunk(d, pos, neg, refs, cfg, g=g, grad_r=grad_r, want_values=want_values)
    if cfg.smooth:
        return _streamed_chunk(d, pos, neg, cfg, g=g, want_values=want_values)
    raise AssertionError("batch_all and the filters without smooth/swap take the grouped sweep")


def forward(q, r, q_labels, r_labels, cfg: TripletConfig, unit_grad: bool = False):
    """The seam's forward. With unit_grad=True (the PyTorch path only; the Function asks for it
    when a gradient will be needed) it also computes dL/dq and dL/dr for dL/dvalues = 1 in the
    same pass and keeps them in `saved` (O((B + N)·D)); backward then only scales them when its
    incoming gradient is the same for every anchor (the "mean" and "sum" reductions), instead
    of recomputing every chunk."""
    _check(cfg)
    if _grouped(cfg):
        ones = torch.ones(q.shape[0], dtype=compute_dtype(q.dtype), device=q.device) if unit_grad else None
        (values, counts, nonzero), grads = _grouped_pass(q, r, q_labels, r_labels, cfg, g=ones)
        return values, counts, nonzero, (grads if unit_grad else ())
    b, n = q.shape[0], r.shape[0]
    refs = _Refs(q, r, cfg.kind)
    values = torch.zeros(b, dtype=refs.cd, device=q.device)
    counts = torch.zeros(b, dtype=torch.int64, device=q.device)
    nonzero = torch.zeros_like(counts)
    if cfg.mining == "batch_hard":
        sel = [torch.empty(b, dtype=dt, device=q.device) for dt in (refs.cd, torch.int64, refs.cd, torch.int64)]
        flags = torch.zeros(b, 3, dtype=torch.bool, device=q.device)
        unit_grad = False  # its backward touches B rows only
    if unit_grad:
        unit_q = torch.zeros(q.shape, dtype=refs.cd, device=q.device)
        unit_r = torch.zeros(refs.r.shape, dtype=refs.cd, device=q.device)
    for rows in chunks(b, n, CHUNK_BUDGET):
        qc, raw, d = _tile(q, refs, rows, cfg)
        pos, neg = _masks(q_labels, r_labels, rows, cfg.self_offset)
        if cfg.mining == "batch_hard":
            d_ap, p_idx, has_p, d_an, n_idx, has_n, valid = _batch_hard_select(d, pos, neg, cfg)
            e = d_an
            if cfg.swap:  # (an anchor without a positive under the "tfa" fallback has no d_pn)
                d_pn = _rowdist(refs.r_abs[p_idx], refs.r_abs[n_idx], refs, cfg.negate)
                e = torch.where(has_p, torch.minimum(d_an, d_pn), d_an)
            term = _term(d_ap - e + cfg.margin, cfg.smooth)
            in_keep = _in_keep(term, cfg)
            window = valid if in_keep is None else valid & in_keep
            term = torch.where(window, term, torch.zeros_like(d_ap))
            values[rows], counts[rows] = term, valid.long()
            nonzero[rows] = (term > 0).long() if in_keep is None else window.long()
            sel[0][rows], sel[1][rows], sel[2][rows], sel[3][rows] = d_ap, p_idx, d_an, n_idx
            flags[rows] = torch.stack([has_p, has_n, valid], 1)
            continue
        ones = torch.ones(d.shape[0], dtype=d.dtype, device=d.device) if unit_grad else None
        out, grad = _chunk(d, pos, neg, refs, cfg, g=ones, grad_r=unit_r if unit_grad else None)
        values[rows], counts[rows], nonzero[rows] = out
        if grad is not None:
            gq, gr = _tile_backward(grad, qc, refs, raw, cfg)
            unit_q[rows] += gq
            unit_r += gr
    if cfg.mining == "batch_hard":
        return values, counts, nonzero, (*sel, flags)
    return values, counts, nonzero, ((unit_q, unit_r) if unit_grad else ())


def backward(grad_values, q, r, q_labels, r_labels, cfg: TripletConfig, saved):
    _check(cfg)
    b, n = q.shape[0], r.shape[0]
    refs = _Refs(q, r, cfg.kind)
    g_all = grad_values.to(refs.cd)
    if cfg.mining != "batch_hard" and len(saved) == 2 and bool((g_all == g_all[0]).all()):
        unit_q, unit_r = saved
        return (g_all[0] * unit_q).to(q.dtype), (g_all[0] * unit_r).to(r.dtype)
    if _grouped(cfg):
        _, (grad_q, grad_r) = _grouped_pass(q, r, q_labels, r_labels, cfg, g=g_all, want_values=False)
        return grad_q.to(q.dtype), grad_r.to(r.dtype)
    grad_q = torch.zeros(q.shape, dtype=refs.cd, device=q.device)
    grad_r = torch.zeros(refs.r.shape, dtype=refs.cd, device=q.device)
    if cfg.mining == "batch_hard":
        _batch_hard_backward(g_all, q, refs, cfg, saved, grad_q, grad_r)
        return grad_q.to(q.dtype), grad_r.to(r.dtype)
    for rows in chunks(b, n, CHUNK_BUDGET):
        g = g_all[rows]
        if not bool((g != 0).any()):
            continue
        qc, raw, d = _tile(q, refs, rows, cfg)
        pos, neg = _masks(q_labels, r_labels, rows, cfg.self_offset)
        _, grad = _chunk(d, pos, neg, refs, cfg, g=g, grad_r=grad_r, want_values=False)
        gq, gr = _tile_backward(grad, qc, refs, raw, cfg)
        grad_q[rows] += gq
        grad_r += gr
    return grad_q.to(q.dtype), grad_r.to(r.dtype)


def _batch_hard_backward(g_all, q, refs: _Refs, cfg: TripletConfig, saved, grad_q, grad_r):
    d_ap, p_idx, d_an, n_idx, flags = saved
    has_p, has_n, valid = flags.unbind(1)
    if cfg.swap:
        d_pn = _rowdist(refs.r_abs[p_idx], refs.r_abs[n_idx], refs, cfg.negate)
        share_an = torch.where(d_an < d_pn, 1.0, torch.where(d_an == d_pn, 0.5, 0.0)).to(d_ap.dtype)
        share_an = torch.where(has_p, share_an, torch.ones_like(share_an))
        e = torch.where(has_p, torch.minimum(d_an, d_pn), d_an)
    else:
        share_an, e = torch.ones_like(d_ap), d_an
    h = d_ap - e + cfg.margin
    in_keep = _in_keep(_term(h, cfg.smooth), cfg)
    window = valid if in_keep is None else valid & in_keep
    w = torch.where(window, _term_grad(h, cfg.smooth), torch.zeros_like(d_ap)) * g_all
    qa = refs.frame.q_abs
    rows = torch.arange(q.shape[0], device=q.device)
    for weight, other, dist, on in ((w, p_idx, d_ap, has_p), (-w * share_an, n_idx, d_an, has_n)):
        weight = torch.where(on, weight, torch.zeros_like(weight))
        keep = weight != 0
        if not bool(keep.any()):
            continue
        a_rows, o_rows = rows[keep], other[keep]
        gq, gr = _rowdist_backward(weight[keep], qa[a_rows], refs.r_abs[o_rows], dist[keep], refs, cfg.negate)
        grad_q.index_add_(0, a_rows, gq)
        grad_r.index_add_(0, o_rows, gr)
    if cfg.swap:
        weight = torch.where(window, -w * (1.0 - share_an), torch.zeros_like(w))
        keep = weight != 0
        if bool(keep.any()):
            gp, gn = _rowdist_backward(weight[keep], refs.r_abs[p_idx[keep]], refs.r_abs[n_idx[keep]], d_pn[keep],
                                       refs, cfg.negate)
            grad_r.index_add_(0, p_idx[keep], gp)
            grad_r.index_add_(0, n_idx[keep], gn)
