"""Compiled row passes of the triplet sweep on the CPU (numba; optional).

The grouped sweep of `_torch/triplet.py` spends most of its CPU time not in the sort or the
matmuls but in about a dozen elementwise torch passes over chunk × N buffers (cumulative
counts, their scatter, int64 copies of them, the coverage's gather to columns, the float64
row dots). The three functions here do the same work in one pass per row each, with the
same integer and float results:

    pack_keys       float32 values → the sort's int64 keys (the value's order-preserving
                    int32 in the high word, tie class << 30 | position in the low word)
    merged_counts   a sorted merged row of packed keys → at[r, position] = the number of
                    negatives up to and including that entry (a negative's column gets
                    1 + its rank, a bound's slot the negatives before it)
    cover_columns   the active runs [w_lo, ahi) of a row's positives → the difference array
                    cover (−1 after w_lo, +1 after ahi), its prefix sum read at every
                    column's 1 + rank (∂v/∂d_an, 0 off the negatives), and Σ_j grad·d in
                    float64 (exact products; one sum per row, in column order)

Used when numba is installed (and imports) and FASTCONTRAST_NUMBA is not "0", for pieces of
at least MIN_ELEMENTS merged entries; otherwise the torch passes run. numba is imported, and
the functions compiled (cached beside this file where that is writable), on the first piece
that uses them, so small batches never pay for either.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

AVAILABLE = os.environ.get("FASTCONTRAST_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
# Pieces below this many merged entries keep the torch passes (the compiled ones gain little
# there, and the first use costs numba's import and compilation, about 1-3 s).
MIN_ELEMENTS = 1 << 16
_LOW_MASK = (1 << 30) - 1   # the low word: tie class << 30 | position; negatives' class is 1
_compiled: dict = {}


def usable(elements: int) -> bool:
    """Whether a piece of `elements` merged entries takes the compiled passes (compiling them
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
        for fn in (_pack_keys, _merged_counts, _cover_columns):
            _compiled[fn.__name__[1:]] = numba.njit(cache=True, nogil=True)(fn)
    return _compiled


def pack_keys(bits, position, tie_word, nonneg, key, j0):
    _load()["pack_keys"](bits, position, tie_word, nonneg, key, j0)


def merged_counts(key, out):
    _load()["merged_counts"](key, out)


def cover_columns(at, n, w_lo, ahi, d, grad, dots):
    _load()["cover_columns"](at, n, w_lo, ahi, d, grad, dots)


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


def _cover_columns(at, n, w_lo, ahi, d, grad, dots):
    """at (c × ≥ n int32: 1 + rank at a negative's column, 0 or a rank past every run
    elsewhere), w_lo, ahi (c × P int64 run bounds, ahi ≥ w_lo), d (c × n float32) →
    grad (c × n float32) = −#{runs holding the column's negative}; dots[r] = Σ_j
    grad[r, j]·d[r, j] in float64."""
    c, p = w_lo.shape
    cover = np.zeros(n + 2, dtype=np.float32)
    for r in range(c):
        cover[:] = 0.0
        lo_r, hi_r = w_lo[r], ahi[r]
        for i in range(p):
            cover[lo_r[i] + 1] -= 1.0
            cover[hi_r[i] + 1] += 1.0
        run = np.float32(0.0)
        for k in range(n + 2):
            run += cover[k]
            cover[k] = run
        at_r, d_r, g_r = at[r], d[r], grad[r]
        acc = 0.0
        for j in range(n):
            g = cover[at_r[j]]
            g_r[j] = g
            acc += np.float64(g) * np.float64(d_r[j])
        dots[r] = acc
