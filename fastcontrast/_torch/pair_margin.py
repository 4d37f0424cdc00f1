"""Pair-margin (contrastive) family, memory-lean PyTorch path.

For anchor i and reference j (d_ij a distance, or −s_ij when cfg.negate):

    positive pair (same label, not self):  term = relu(d_ij − pos_margin) ** power
    negative pair (different label):       term = relu(neg_margin − d_ij) ** power

Per anchor, column 0 sums the positive terms and column 1 the negative ones; counts and
nonzero say how many pairs and how many terms > 0 went into each sum.

The distance matrix is never held whole: anchors are processed in chunks of rows so a live
tile is chunk×N. Backward recomputes each chunk's tile and turns the per-anchor upstream
gradients (B, 2) into dL/dd_ij = g_i0·∂pos_ij + g_i1·∂neg_ij, then metrics.pairwise_backward
maps it to the rows (gradient 0 at a zero Euclidean distance).
"""
from __future__ import annotations

import torch

from .. import metrics
from ..configs import PairMarginConfig

# Elements of one live chunk×N tile; tests shrink it to exercise chunk boundaries.
CHUNK_ELEMS = 1 << 22


def _masks(q_labels, r_labels, rows: slice, n: int, self_offset: int):
    """(positive, negative) masks of a chunk; the self pair j = i + self_offset is neither."""
    same = q_labels[rows, None] == r_labels[None, :]
    if self_offset < 0:
        return same, ~same
    anchor = torch.arange(rows.start, rows.stop, device=same.device)
    not_self = torch.arange(n, device=same.device)[None, :] != (anchor[:, None] + self_offset)
    return same & not_self, ~same & not_self


def _hinges(tile, cfg: PairMarginConfig):
    """(pos hinge, neg hinge) before relu, as functions of the signed distance."""
    d = -tile if cfg.negate else tile
    return d - cfg.pos_margin, cfg.neg_margin - d


def _term(h, power: int):
    h = h.clamp_min(0)
    return h if power == 1 else h * h


def _term_slope(h, power: int):
    """d term / d h, 0 where the hinge is inactive."""
    if power == 1:
        return (h > 0).to(h.dtype)
    return 2.0 * h.clamp_min(0)


def _prepare(q, r):
    cdt = metrics.compute_dtype(q.dtype)
    qc = q.to(cdt)
    rc = qc if r is q else r.to(cdt)
    return qc, rc, (qc * qc).sum(1), (rc * rc).sum(1)


def forward(q, r, q_labels, r_labels, cfg: PairMarginConfig):
    qc, rc, q_sq, r_sq = _prepare(q, r)
    b, n = q.shape[0], r.shape[0]
    values = torch.zeros(b, 2, dtype=qc.dtype, device=q.device)
    counts = torch.zeros(b, 2, dtype=torch.int64, device=q.device)
    nonzero = torch.zeros(b, 2, dtype=torch.int64, device=q.device)
    for rows in metrics.chunks(b, n, CHUNK_ELEMS):
        tile = metrics.pairwise(qc[rows], rc, cfg.kind, q_sq[rows], r_sq)
        pos, neg = _masks(q_labels, r_labels, rows, n, cfg.self_offset)
        h_pos, h_neg = _hinges(tile, cfg)
        for col, mask, h in ((0, pos, h_pos), (1, neg, h_neg)):
            term = torch.where(mask, _term(h, cfg.power), torch.zeros((), dtype=h.dtype, device=h.device))
            values[rows, col] = term.sum(1)
            counts[rows, col] = mask.sum(1)
            nonzero[rows, col] = (term > 0).sum(1)
    return values, counts, nonzero, ()


def backward(grad_values, q, r, q_labels, r_labels, cfg: PairMarginConfig, saved):
    qc, rc, q_sq, r_sq = _prepare(q, r)
    b, n = q.shape[0], r.shape[0]
    g = grad_values.to(qc.dtype)
    grad_q = torch.zeros_like(qc)
    grad_r = torch.zeros_like(rc)
    sign = -1.0 if cfg.negate else 1.0  # d(signed distance)/d(tile)
    for rows in metrics.chunks(b, n, CHUNK_ELEMS):
        tile = metrics.pairwise(qc[rows], rc, cfg.kind, q_sq[rows], r_sq)
        pos, neg = _masks(q_labels, r_labels, rows, n, cfg.self_offset)
        h_pos, h_neg = _hinges(tile, cfg)
        zero = torch.zeros((), dtype=tile.dtype, device=tile.device)
        # d term/d d: +slope for positives (h = d − m), −slope for negatives (h = m − d)
        grad_tile = (torch.where(pos, _term_slope(h_pos, cfg.power), zero) * g[rows, 0:1]
                     - torch.where(neg, _term_slope(h_neg, cfg.power), zero) * g[rows, 1:2]) * sign
        gq, gr = metrics.pairwise_backward(grad_tile, qc[rows], rc, cfg.kind, tile)
        grad_q[rows] = gq
        grad_r += gr
    return grad_q.to(q.dtype), grad_r.to(r.dtype)
