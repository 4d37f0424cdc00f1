"""Compiled row passes of the triplet sweep on the CPU (numba; optional).

With torch ops alone, the grouped sweep of `_torch/triplet.py` spends most of its CPU time
not in the sort or the matmuls but in about a dozen elementwise passes over chunk × N
buffers (the sort keys, cumulative counts, their scatter, int64 copies of them, the
coverage's gather to columns, the float64 row dots) and some forty small ops on the
chunk × P_max windows. The two functions here do that work in a few passes per row, with
the same integer results and gradients (the values' float64 sums run in another order):

    pack_keys   float32 values → the sort's int64 keys (the value's order-preserving int32 in
                the high word, tie class << 30 | position in the low word)
    mark_dead   the keys of the columns that are no negatives of their row (its label group
                and its self column) get the high word DEAD_HIGH: they sort after every value
    sweep       a piece's sorted merged rows → every positive's mining, term and active
                windows: one walk along the row counts the negatives before each bound, the
                runs' difference array summed up gives −#{runs holding it} for each
                negative rank, a second walk writes that (∂v/∂d_an) at each negative's column
                and the run lengths go to the positives' columns, all times the upstream
                gradient; the values (Σ with the float64 dot of the coefficients and the
                distances in rank order, exact products) and the counts

A piece's whole job (pack, mark, numpy's row sort, sweep) is one `Piece`; `run` runs a tile's
pieces on torch.get_num_threads() threads (every step releases the GIL, each thread packs
into a key buffer of its own), so the sweep uses the cores the tile's matmuls use.

Used when numba is installed (and imports) and FASTCONTRAST_NUMBA is not "0", for tiles of
at least MIN_ELEMENTS merged entries (the caller decides once per tile); otherwise the torch
passes run. numba is imported, and the functions compiled (cached beside this file where that
is writable), on the first tile that uses them, so small batches never pay for either.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

AVAILABLE = os.environ.get("FASTCONTRAST_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
# Tiles below this many merged entries keep the torch passes (the compiled ones gain little
# there, and the first use costs numba's import and compilation).
MIN_ELEMENTS = 1 << 16
_LOW_MASK = (1 << 30) - 1   # the low word: tie class << 30 | position; negatives' class is 1
DEAD_HIGH = (1 << 31) - 1    # a dead column's high word: after every finite value's
_compiled: dict = {}
_pools: dict = {}


def usable(elements: int) -> bool:
    """Whether a tile of `elements` merged entries takes the compiled passes (compiling them
    on the first call that says yes; False for good if numba fails to import)."""
    global AVAILABLE
    if not AVAILABLE or elements < MIN_ELEMENTS:
        return False
    try:
        _load()
    except ImportError:        # e.g. a numba built for another numpy
        AVAILABLE = False
    return AVAILABLE


def _load() -> dict:
    if not _compiled:
        import numba
        for fn in (_pack_keys, _mark_dead, _sweep, _first_above):
            _compiled[fn.__name__[1:]] = numba.njit(cache=True, nogil=True)(fn)
    return _compiled


def pack_keys(bits, position, tie_word, nonneg, key, j0):
    _load()["pack_keys"](bits, position, tie_word, nonneg, key, j0)


def mark_dead(key, start, end, self_col, skip_lo, skip_hi):
    _load()["mark_dead"](key, start, end, self_col, skip_lo, skip_hi)


def first_above(s, n_neg, x, k):
    _load()["first_above"](s, n_neg, x, k)


class Piece:
    """One piece of the sweep as plain arrays: its keys (c × width int64) are packed from
    `packs` [(int32 bits, position, tie word, nonneg, first key column)], the columns
    [start_r, end_r) and self_col_r (≥ 0) of each row marked dead (the key columns skip the
    tile columns [skip_lo, skip_hi)), sorted, and swept with `sweep_args` (sweep's arguments
    after the key)."""

    def __init__(self, rows: int, width: int, packs, dead, sweep_args):
        self.shape, self.packs, self.dead, self.sweep_args = (rows, width), packs, dead, sweep_args

    def run(self, buffer=None):
        c, w = self.shape
        key = (np.empty(c * w, np.int64) if buffer is None else buffer[:c * w]).reshape(c, w)
        for bits, position, tie_word, nonneg, j0 in self.packs:
            pack_keys(bits, position, tie_word, nonneg, key, j0)
        mark_dead(key, *self.dead)
        key.sort(axis=1)
        sweep(key, *self.sweep_args)


def run(pieces) -> None:
    """Run the pieces on torch.get_num_threads() threads, this one among them; each thread
    takes the next piece not yet taken (a thread that starts late, e.g. behind a core still
    spinning for torch's last parallel op, takes fewer)."""
    threads = min(torch.get_num_threads(), len(pieces))
    queue = iter(pieces)
    lock = threading.Lock()

    def drain():
        buffer = np.empty(max(p.shape[0] * p.shape[1] for p in pieces), np.int64)
        while True:
            with lock:
                piece = next(queue, None)
            if piece is None:
                return
            piece.run(buffer)

    if threads <= 1:
        if pieces:
            drain()
        return
    # a forked child inherits the pools but not their threads: it makes its own
    pool = _pools.get((os.getpid(), threads - 1))
    if pool is None:
        pool = _pools[os.getpid(), threads - 1] = ThreadPoolExecutor(threads - 1,
                                                                    thread_name_prefix="fastcontrast-sweep")
    helpers = [pool.submit(drain) for _ in range(threads - 1)]
    try:
        drain()
    finally:            # no helper outlives the call, even when this thread's share failed
        wait(helpers)
    for helper in helpers:
        helper.result()


def sweep(key, n, skip, slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d, tile_scale, grad, values,
          counts, nonzero):
    _load()["sweep"](key, n, skip[0], skip[1], slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d,
                     tile_scale, grad, values, counts, nonzero)


# ----------------------------------------------------------------------------- the row loops
# (plain Python, compiled by numba.njit in _load)

def _pack_keys(bits, position, tie_word, nonneg, key, j0):
    """key[r, j0 + k] (c × W int64) = the order-preserving int32 of the float32 whose
    bits are bits[r, k] (int32; −0.0 taken as +0.0; with nonneg the bits themselves, else
    the magnitude bits of negatives flipped) in the high word and tie_word | (position + k)
    in the low word (unsigned: it orders ties inside the int64 key)."""
    c, w = bits.shape
    for r in range(c):
        src = bits[r]
        dst = key[r]
        for k in range(w):
            b = src[k]
            if b == -0x80000000:           # −0.0
                b = 0
            if not nonneg:
                b ^= (b >> 31) & 0x7FFFFFFF
            low = np.int64(np.uint32(tie_word | np.int32(position + k)))
            dst[j0 + k] = (np.int64(b) << 32) | low


def _first_above(s, n_neg, x, k):
    """semihard_tfa's choice of negative rank: k[r, i] = the first rank of s[r, :n_neg[r]]
    (ascending) whose value is > x[r, i] if there is one, else the first rank holding the
    largest value (0 when the row has no negative). As torch.searchsorted(right=True), then
    searchsorted(left) of the last value, on rows padded with +inf."""
    for r in range(s.shape[0]):
        s_r, m = s[r], n_neg[r]
        far = 0
        if m > 0:                               # the first rank of the largest value
            top = s_r[m - 1]
            lo, length = 0, m
            while length > 0:
                half = length >> 1
                if s_r[lo + half] < top:
                    lo += half + 1
                    length -= half + 1
                else:
                    length = half
            far = lo
        for i in range(x.shape[1]):
            t = x[r, i]
            lo, length = 0, m                   # #{rank < m : s ≤ t}
            while length > 0:
                half = length >> 1
                if s_r[lo + half] <= t:
                    lo += half + 1
                    length -= half + 1
                else:
                    length = half
            k[r, i] = lo if lo < m else far


def _mark_dead(key, start, end, self_col, skip_lo, skip_hi):
    """key[r, k] of every tile column in [start[r], end[r]) or equal to self_col[r] (≥ 0), but
    those in [skip_lo, skip_hi) (no key column; the later ones shift left by its width): the
    high word DEAD_HIGH, the low word kept."""
    dead = np.int64(DEAD_HIGH) << 32
    gap = skip_hi - skip_lo
    for r in range(key.shape[0]):
        s, e, own = start[r], end[r], self_col[r]
        group = e - s
        extra = 1 if own >= 0 and not (s <= own < e) else 0
        for i in range(group + extra):
            col = s + i if i < group else own
            if skip_lo <= col < skip_hi:
                continue
            k = col if col < skip_lo else col - gap
            key[r, k] = dead | (key[r, k] & 0xFFFFFFFF)


def _sweep(key, n, skip_lo, skip_hi, slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d, tile_scale,
           grad, values, counts, nonzero):
    """The whole sweep of a piece from its sorted merged rows key (c × W int64; low word:
    tie class << 30 | position, positions < n the tile columns, n + b·P + i bound b of
    positive i): for each positive i < n_pos[r] (x[r, i], column p_col[r, i]) the mining
    window [m_lo, hi) and the term window [w_lo, w_hi) of negative ranks, the active run
    [w_lo, ahi), and from the runs
        grad[r] = g[r]·(∂v/∂d): −#{runs holding the negative} at its column, the run's length
                  added at the positive's column, 0 at the other columns ([skip_lo, skip_hi)
                  and the dead ones, which sort after every window)
        values[r] = Σ_i active·(x + m) + Σ_j (∂v/∂d_j)·d_j (float64), counts[r] = Σ_i (hi − m_lo),
        nonzero[r] = Σ_i (w_hi − w_lo) (filtered) or Σ_i active.
    slots[k] = the bound index of lo, hi, act, keep_lo, keep_hi (−1: that bound is absent).
    tile_scale > 0 (Euclidean, d the true tile, tile_scale = 2 / unit): grad is divided by
    max(d·tile_scale, tiny), 0 where d ≤ 0, in the float32 operations of
    metrics.pairwise_backward."""
    c, w = key.shape
    p = x.shape[1]
    m32 = np.float32(margin)
    two_over_unit = np.float32(tile_scale)
    tiny = np.float32(np.finfo(np.float32).tiny)
    n_bound = w - (n - (skip_hi - skip_lo))          # bound entries per row
    found = np.zeros(n_bound + 1, dtype=np.int32)    # bound slot → negatives before it; [n_bound]: scratch
    order = np.zeros(n + 1, dtype=np.int32)          # order[k]: the column of the negative of rank k ≥ 1
    # (int32: the rows are shorter than 2^28, and half the bytes make the walk faster)
    cover = np.zeros(n + 2, dtype=np.int32)
    w_lo = np.zeros(p, dtype=np.int64)
    ahi = np.zeros(p, dtype=np.int64)
    lo_k, hi_k, act_k, klo_k, khi_k = slots[0], slots[1], slots[2], slots[3], slots[4]
    for r in range(c):
        key_r, x_r, g_r, d_r = key[r], x[r], grad[r], d[r]
        # one walk along the sorted row, without branches (the classes interleave at random):
        # a negative takes the next rank and leaves its column in order, a bound entry
        # records the negatives before it
        count = 0
        for k in range(w):
            low_word = key_r[k] & 0xFFFFFFFF
            position = low_word & _LOW_MASK
            is_neg = (low_word >> 30) == 1
            count += is_neg
            found[n_bound if is_neg else position - n] = count
            order[count if is_neg else 0] = position
        k_neg = n_neg[r]
        value = 0.0
        kept_sum = 0
        keep_sum = 0
        for i in range(n_pos[r]):
            m_lo = found[lo_k * p + i] if lo_k >= 0 else np.int64(0)
            hi = found[hi_k * p + i] if hi_k >= 0 else k_neg
            hi = max(hi, m_lo)
            a_end = found[act_k * p + i]
            lo_w = max(found[klo_k * p + i], m_lo) if klo_k >= 0 else m_lo
            hi_w = hi
            if low >= 0:
                hi_w = min(hi, found[khi_k * p + i] if khi_k >= 0 else a_end)
            if high <= 0:
                hi_w = lo_w
            hi_w = max(hi_w, lo_w)
            w_lo[i] = lo_w
            ahi[i] = max(min(hi_w, a_end), lo_w)
            active = ahi[i] - lo_w
            value += np.float64(active) * np.float64(x_r[i] + m32)
            kept_sum += hi - m_lo
            keep_sum += (hi_w - lo_w) if filtered else active
        # cover[1 + k] = −#{runs holding the negative of rank k}
        cover[:] = 0
        for i in range(n_pos[r]):
            cover[w_lo[i] + 1] -= 1
            cover[ahi[i] + 1] += 1
        run = 0
        for k in range(n + 2):
            run += cover[k]
            cover[k] = run
        scale = g[r]
        zero = np.float32(0.0) * scale
        for j in range(skip_lo, skip_hi):
            g_r[j] = zero
        # the negatives in rank order: their column's coefficient, and Σ_j (∂v/∂d_j)·d_j
        dot = 0.0
        for k in range(1, count + 1):
            col = order[k]
            g_r[col] = np.float32(cover[k]) * scale
            dot += np.float64(cover[k]) * np.float64(d_r[col])
        for i in range(n_pos[r]):
            g_r[p_col[r, i]] += np.float32(ahi[i] - w_lo[i]) * scale
        if tile_scale > 0:
            for j in range(n):
                t = d_r[j]
                g_r[j] = g_r[j] / max(t * two_over_unit, tiny) if t > 0 else np.float32(0.0)
        values[r] = value + dot
        counts[r] = kept_sum
        nonzero[r] = keep_sum
