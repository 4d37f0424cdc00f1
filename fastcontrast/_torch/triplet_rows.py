"""Compiled row passes of the triplet sweep on the CPU (numba; optional).

The grouped sweep of `_torch/triplet.py` spends most of its CPU time not in the sort or the
matmuls but in about a dozen elementwise torch passes over chunk × N buffers (cumulative
counts, their scatter, int64 copies of them, the coverage's gather to columns, the float64
row dots). The two functions here do the same work in one pass per row each, with the same
integer and float results:

    merged_counts   a sorted merged row of packed keys → at[r, position] = the number of
                    negatives up to and including that entry (a negative's column gets
                    1 + its rank, a bound's slot the negatives before it)
    cover_columns   the active runs [w_lo, ahi) of a row's positives → the difference array
                    cover (−1 after w_lo, +1 after ahi), its prefix sum read at every
                    column's 1 + rank (∂v/∂d_an, 0 off the negatives), and Σ_j grad·d in
                    float64 (exact products; one sum per row, in column order)

Used when numba imports and FASTCONTRAST_NUMBA is not "0"; otherwise the torch passes run.
Compiled on first use and cached beside this file where that is writable.
"""
from __future__ import annotations

import os

try:
    if os.environ.get("FASTCONTRAST_NUMBA", "1") == "0":
        raise ImportError("disabled by FASTCONTRAST_NUMBA=0")
    import numba
    import numpy as np
except ImportError:          # numba missing or disabled: the torch passes are used
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    _LOW_MASK = (1 << 30) - 1
    _NEG_LOW = 1 << 30          # a negative's low word: tie class 1 << 30 | position

    @numba.njit(cache=True, nogil=True)
    def pack_keys(v, position, tie_word, nonneg, high, key, j0):
        """key[r, j0 + k] (c × W int64) = the order-preserving int32 of v[r, k] (float32,
        −0.0 as +0.0; with nonneg its bits, else the magnitude bits of negatives flipped) in
        the high word (index `high` of the int32 pair) and tie_word | (position + k) in the
        low word (as unsigned: it orders ties inside the int64 key)."""
        words = key.view(np.int32)
        floats = key.view(np.float32)
        c, w = v.shape
        for r in range(c):
            for k in range(w):
                at = 2 * (j0 + k)
                floats[r, at + high] = v[r, k] + np.float32(0.0)
                if not nonneg:
                    b = words[r, at + high]
                    words[r, at + high] = b ^ ((b >> 31) & 0x7FFFFFFF)
                words[r, at + 1 - high] = tie_word | np.int32(position + k)

    @numba.njit(cache=True, nogil=True)
    def merged_counts(key, out):
        """key (c × W int64, each row sorted; low 32 bits = tie class << 30 | position),
        out (c × total int32): out[r, position] = negatives among key[r, :k + 1]."""
        c, w = key.shape
        for r in range(c):
            count = np.int32(0)
            for k in range(w):
                low = np.int32(key[r, k] & 0xFFFFFFFF)
                count += np.int32(low >= _NEG_LOW)
                out[r, low & _LOW_MASK] = count

    @numba.njit(cache=True, nogil=True)
    def cover_columns(at, n, w_lo, ahi, d, grad, dots):
        """at (c × ≥ n int32: 1 + rank at a negative's column, 0 or a rank past every run
        elsewhere), w_lo, ahi (c × P int64 run bounds, ahi ≥ w_lo), d (c × n float32) →
        grad (c × n float32) = −#{runs holding the column's negative}; dots[r] = Σ_j
        grad[r, j]·d[r, j] in float64."""
        c, p = w_lo.shape
        cover = np.zeros(n + 2, dtype=np.float32)
        for r in range(c):
            cover[:] = 0.0
            for i in range(p):
                cover[w_lo[r, i] + 1] -= 1.0
                cover[ahi[r, i] + 1] += 1.0
            run = np.float32(0.0)
            for k in range(n + 2):
                run += cover[k]
                cover[k] = run
            acc = 0.0
            for j in range(n):
                g = cover[at[r, j]]
                grad[r, j] = g
                acc += np.float64(g) * np.float64(d[r, j])
            dots[r] = acc
