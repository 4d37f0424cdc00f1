"""Compiled row passes of the triplet sweep on the CPU (numba; optional).

With torch ops alone, the grouped sweep of `_torch/triplet.py` spends most of its CPU time
not in the sort or the matmuls but in about a dozen elementwise passes over chunk × N
buffers (the sort keys, cumulative counts, their scatter, int64 copies of them, the
coverage's gather to columns, the float64 row dots) and some forty small ops on the
chunk × P_max windows. The three functions here do that work in one pass per row each, with
the same integer results and gradients (the values' float64 sums run in another order):

    pack_keys       float32 values → the sort's int64 keys (the value's order-preserving
                    int32 in the high word, tie class << 30 | position in the low word)
    merged_counts   a sorted merged row of packed keys → at[r, position] = the number of
                    negatives up to and including that entry (a negative's column gets
                    1 + its rank, a bound's slot the negatives before it)
    windows         the bound counts → every positive's mining, term and active windows,
                    the runs' difference array and its prefix sum read at every column's
                    1 + rank (∂v/∂d_an, 0 off the negatives), the runs' lengths at the
                    positives' columns, times the upstream gradient; the values (Σ with the
                    float64 row dot, exact products, one sum per row) and the counts

Used when numba is installed (and imports) and FASTCONTRAST_NUMBA is not "0", for tiles of
at least MIN_ELEMENTS merged entries (the caller decides once per tile); otherwise the torch
passes run. numba is imported, and the functions compiled (cached beside this file where that
is writable), on the first tile that uses them, so small batches never pay for either.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

AVAILABLE = os.environ.get("FASTCONTRAST_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
# Tiles below this many merged entries keep the torch passes (the compiled ones gain little
# there, and the first use costs numba's import and compilation).
MIN_ELEMENTS = 1 << 16
_LOW_MASK = (1 << 30) - 1   # the low word: tie class << 30 | position; negatives' class is 1
_compiled: dict = {}


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
        for fn in (_pack_keys, _merged_counts, _windows):
            _compiled[fn.__name__[1:]] = numba.njit(cache=True, nogil=True)(fn)
    return _compiled


def pack_keys(bits, position, tie_word, nonneg, key, j0):
    _load()["pack_keys"](bits, position, tie_word, nonneg, key, j0)


def merged_counts(key, out):
    _load()["merged_counts"](key, out)


def windows(at, n, slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d, tile_scale, grad, values,
            counts, nonzero):
    _load()["windows"](at, n, slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d, tile_scale, grad,
                       values, counts, nonzero)


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


def _merged_counts(key, out):
    """key (c × W int64, each row sorted; low 32 bits = tie class << 30 | position),
    out (c × total int32): out[r, position] = negatives among key[r, :k + 1]."""
    c, w = key.shape
    for r in range(c):
        src = key[r]
        dst = out[r]
        count = np.int32(0)
        for k in range(w):
            low = np.uint32(src[k] & 0xFFFFFFFF)
            count += np.int32((low >> 30) == 1)
            dst[low & _LOW_MASK] = count


def _windows(at, n, slots, n_pos, n_neg, x, margin, low, high, filtered, p_col, g, d, tile_scale, grad, values,
             counts, nonzero):
    """The whole sweep of a piece after its merged counts, as `_torch/triplet._grouped_chunk`
    computes it from the bound counts: for each positive i < n_pos[r] (x[r, i], column
    p_col[r, i]) the mining window [m_lo, hi) and the term window [w_lo, w_hi) of ranks, the
    active run [w_lo, ahi), and from the runs
        grad[r] = g[r]·(∂v/∂d): −#{runs holding the negative} at its column, the run's length
                  at the positive's column, 0 elsewhere
        values[r] = Σ_i active·(x + m) + Σ_j (∂v/∂d_j)·d_j (float64), counts[r] = Σ_i (hi − m_lo),
        nonzero[r] = Σ_i (w_hi − w_lo) (filtered) or Σ_i active.
    slots[k] = the bound index of lo, hi, act, keep_lo, keep_hi (−1: that bound is absent);
    bound b of positive i is counted at at[r, n + b·P + i]. tile_scale > 0 (Euclidean, d the
    true tile, tile_scale = 2 / unit): grad is divided by max(d·tile_scale, tiny), 0 where
    d ≤ 0, in the float32 operations of metrics.pairwise_backward."""
    c, p = x.shape
    m32 = np.float32(margin)
    two_over_unit = np.float32(tile_scale)
    tiny = np.float32(np.finfo(np.float32).tiny)
    cover = np.zeros(n + 2, dtype=np.float32)
    w_lo = np.zeros(p, dtype=np.int64)
    ahi = np.zeros(p, dtype=np.int64)
    lo_k, hi_k, act_k, klo_k, khi_k = slots[0], slots[1], slots[2], slots[3], slots[4]
    for r in range(c):
        at_r, x_r = at[r], x[r]
        k_neg = n_neg[r]
        value = 0.0
        kept_sum = 0
        keep_sum = 0
        for i in range(n_pos[r]):
            m_lo = np.int64(at_r[n + lo_k * p + i]) if lo_k >= 0 else np.int64(0)
            hi = np.int64(at_r[n + hi_k * p + i]) if hi_k >= 0 else k_neg
            hi = max(hi, m_lo)
            a_end = np.int64(at_r[n + act_k * p + i])
            lo_w = max(np.int64(at_r[n + klo_k * p + i]), m_lo) if klo_k >= 0 else m_lo
            hi_w = hi
            if low >= 0:
                hi_w = min(hi, np.int64(at_r[n + khi_k * p + i]) if khi_k >= 0 else a_end)
            if high <= 0:
                hi_w = lo_w
            hi_w = max(hi_w, lo_w)
            w_lo[i] = lo_w
            ahi[i] = max(min(hi_w, a_end), lo_w)
            active = ahi[i] - lo_w
            value += np.float64(active) * np.float64(x_r[i] + m32)
            kept_sum += hi - m_lo
            keep_sum += (hi_w - lo_w) if filtered else active
        cover[:] = 0.0
        for i in range(n_pos[r]):
            cover[w_lo[i] + 1] -= 1.0
            cover[ahi[i] + 1] += 1.0
        run = np.float32(0.0)
        for k in range(n + 2):
            run += cover[k]
            cover[k] = run
        d_r, g_r, scale = d[r], grad[r], g[r]
        dot = 0.0
        for j in range(n):
            v = cover[at_r[j]]
            dot += np.float64(v) * np.float64(d_r[j])
            g_r[j] = v * scale
        for i in range(n_pos[r]):
            g_r[p_col[r, i]] += np.float32(ahi[i] - w_lo[i]) * scale
        if tile_scale > 0:
            for j in range(n):
                t = d_r[j]
                g_r[j] = g_r[j] / max(t * two_over_unit, tiny) if t > 0 else np.float32(0.0)
        values[r] = value + dot
        counts[r] = kept_sum
        nonzero[r] = keep_sum
