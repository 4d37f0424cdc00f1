"""Pair-margin (contrastive) family, memory-lean PyTorch path.

For anchor i and reference j (d_ij a distance, or −s_ij when cfg.negate):

    positive pair (same label, not self):  term = relu(d_ij − pos_margin) ** power
    negative pair (different label):       term = relu(neg_margin − d_ij) ** power

Per anchor, column 0 sums the positive terms and column 1 the negative ones; counts and
nonzero say how many pairs and how many terms > 0 went into each sum. With cfg.pos_keep /
cfg.neg_keep (low, high) other than (0, inf), only terms with low < term < high enter the
sums, nonzero counts those, and only they carry gradient (ThresholdReducer, fused). With
cfg.row_bounds a (B, 2) `bounds` tensor restricts each anchor's pairs (a miner's selection,
fused): a positive pair is one only when d + bound_slack > bounds[i, 0], a negative pair
only when d − bound_slack < bounds[i, 1]; counts are then the selected pairs.

The distance matrix is never held whole: anchors are processed in chunks of rows so a live
tile is chunk×N (distances computed in a metrics.Frame: centered, exactly scaled, near pairs
recomputed from the row difference). Backward recomputes each chunk's tile and turns the
per-anchor upstream gradients (B, 2) into dL/dd_ij = g_i0·∂pos_ij + g_i1·∂neg_ij, which the
frame maps to the rows (gradient 0 at a zero Euclidean distance).
"""
from __future__ import annotations

import torch

from .. import metrics
from ..configs import PairMarginConfig

# Elements of one live chunk×N tile; tests shrink it to exercise chunk boundaries.
CHUNK_ELEMS = 1 << 22


def pair_counts(q_labels, r_labels, self_offset: int):
    """(B, 2) numbers of positive and negative pairs per anchor, from the sorted reference
    labels (no B×N pass, no value-sized op: no host sync on a GPU): the self pair
    j = i + self_offset, where it exists, is neither."""
    b, n = q_labels.shape[0], r_labels.shape[0]
    sorted_labels = torch.sort(r_labels).values
    same = (torch.searchsorted(sorted_labels, q_labels, right=True)
            - torch.searchsorted(sorted_labels, q_labels, right=False))
    other = n - same
    if self_offset >= 0:
        j = torch.arange(b, device=q_labels.device) + self_offset
        exists = j < n
        self_same = exists & (r_labels[j.clamp_max(n - 1)] == q_labels)
        same = same - self_same.to(same.dtype)
        other = other - (exists & ~self_same).to(other.dtype)
    return torch.stack([same, other], 1)


def _signed_hinges(tile, same, rows: slice, cfg: PairMarginConfig, shift=None):
    """h_ij = d_ij − pos_margin for positives, neg_margin − d_ij for negatives, and −1 (an
    inactive hinge) at the self pair; d = −tile when cfg.negate. shift (B,): both margins of
    anchor i moved by shift_i."""
    d = tile.neg() if cfg.negate else tile
    if shift is None:
        h = torch.where(same, d - cfg.pos_margin, cfg.neg_margin - d)
    else:
        s = shift[rows].to(d.dtype)[:, None]
        h = torch.where(same, d - (cfg.pos_margin + s), (cfg.neg_margin + s) - d)
    if cfg.self_offset >= 0:
        anchor = torch.arange(rows.start, rows.stop, device=tile.device)
        j = anchor + cfg.self_offset
        keep = j < tile.shape[1]
        h[(anchor - rows.start)[keep], j[keep]] = -1.0
    return h


def _kept(term, same, rows: slice, cfg: PairMarginConfig):
    """The terms cfg.pos_keep / cfg.neg_keep let through (open intervals), never the self pair."""
    (pos_low, pos_high), (neg_low, neg_high) = cfg.pos_keep, cfg.neg_keep
    low = torch.where(same, pos_low, neg_low).to(term.dtype)
    high = torch.where(same, pos_high, neg_high).to(term.dtype)
    kept = (term > low) & (term < high)
    if cfg.self_offset >= 0:
        anchor = torch.arange(rows.start, rows.stop, device=term.device)
        j = anchor + cfg.self_offset
        inside = j < term.shape[1]
        kept[(anchor - rows.start)[inside], j[inside]] = False
    return kept


def _selected(tile, same, rows: slice, cfg: PairMarginConfig, bounds):
    """(the pairs inside the row bounds, as a mask, or None without cfg.row_bounds; its
    positive part). The self pair is in neither."""
    if bounds is None:
        return None, None
    d = tile.neg() if cfg.negate else tile
    b = bounds[rows].to(d.dtype)
    pos_sel = same & ((d + cfg.bound_slack) > b[:, 0:1])
    sel = torch.where(same, pos_sel, (d - cfg.bound_slack) < b[:, 1:2])
    if cfg.self_offset >= 0:
        anchor = torch.arange(rows.start, rows.stop, device=tile.device)
        j = anchor + cfg.self_offset
        inside = j < tile.shape[1]
        sel[(anchor - rows.start)[inside], j[inside]] = False
        pos_sel = sel & same
    return sel, pos_sel


def _check_bounds(cfg: PairMarginConfig, bounds):
    if cfg.row_bounds != (bounds is not None):
        raise ValueError("cfg.row_bounds and a bounds tensor come together")
    return None if bounds is None else bounds.detach()


def forward(q, r, q_labels, r_labels, cfg: PairMarginConfig, shift=None, bounds=None):
    frame = metrics.Frame(q, r, cfg.kind)
    b, n = q.shape[0], r.shape[0]
    bounds = _check_bounds(cfg, bounds)
    values = torch.zeros(b, 2, dtype=frame.q.dtype, device=q.device)
    nonzero = torch.zeros(b, 2, dtype=torch.int64, device=q.device)
    counts = None if bounds is None else torch.zeros(b, 2, dtype=torch.int64, device=q.device)
    for rows in metrics.chunks(b, n, CHUNK_ELEMS):
        tile, _ = frame.tile(*frame.rows(rows))
        same = q_labels[rows, None] == r_labels[None, :]
        sel, pos_sel = _selected(tile, same, rows, cfg, bounds)
        term = _signed_hinges(tile, same, rows, cfg, shift).clamp_min_(0)
        if cfg.power == 2:
            term.mul_(term)
        if cfg.filtered:
            active = _kept(term, same, rows, cfg)
        else:
            active = term > 0
        if sel is not None:
            active &= sel
            counts[rows, 0] = metrics.row_counts(pos_sel)
            counts[rows, 1] = metrics.row_counts(sel) - counts[rows, 0]
        if cfg.filtered or sel is not None:
            term = torch.where(active, term, 0.0)
        pos_sum = torch.where(same, term, 0.0).sum(1)
        values[rows, 0] = pos_sum
        values[rows, 1] = term.sum(1) - pos_sum
        nz_pos = metrics.row_counts(active & same)
        nonzero[rows, 0] = nz_pos
        nonzero[rows, 1] = metrics.row_counts(active) - nz_pos
    if counts is None:
        counts = pair_counts(q_labels, r_labels, cfg.self_offset)
    return values, counts, nonzero, ()


def backward(grad_values, q, r, q_labels, r_labels, cfg: PairMarginConfig, saved, shift=None, bounds=None):
    """(∂L/∂q, ∂L/∂r), and ∂L/∂shift (B,) as a third output when shift is given."""
    bounds = _check_bounds(cfg, bounds)
    frame = metrics.Frame(q, r, cfg.kind)
    b, n = q.shape[0], r.shape[0]
    g = grad_values.to(frame.q.dtype)
    sign = -1.0 if cfg.negate else 1.0  # d(signed distance)/d(tile)
    # d term/d d = +slope for positives (h = d − m), −slope for negatives (h = m − d)
    g_pos, g_neg = sign * g[:, 0:1], -sign * g[:, 1:2]
    grad_q = torch.zeros_like(frame.q)
    grad_r = torch.zeros_like(frame.r)
    grad_shift = None if shift is None else torch.zeros(b, dtype=frame.q.dtype, device=q.device)
    for rows in metrics.chunks(b, n, CHUNK_ELEMS):
        x, x_sq, x_abs = frame.rows(rows)
        tile, near = frame.tile(x, x_sq, x_abs)
        same = q_labels[rows, None] == r_labels[None, :]
        h = _signed_hinges(tile, same, rows, cfg, shift)
        if cfg.filtered:
            term = h.clamp_min(0) ** cfg.power
        slope = (h > 0).to(h.dtype) if cfg.power == 1 else h.clamp_min_(0).mul_(2.0)
        if cfg.filtered:
            slope = torch.where(_kept(term, same, rows, cfg), slope, 0.0)
        if bounds is not None:
            slope = torch.where(_selected(tile, same, rows, cfg, bounds)[0], slope, 0.0)
        if shift is not None:  # ∂h/∂shift_i = −1 on positives, +1 on negatives
            pos_slope = torch.where(same, slope, 0.0).sum(1)
            grad_shift[rows] = g[rows, 1] * (slope.sum(1) - pos_slope) - g[rows, 0] * pos_slope
        grad_tile = slope.mul_(torch.where(same, g_pos[rows], g_neg[rows]))
        gq, gr = frame.tile_backward(grad_tile, x, tile, near, x_abs)
        grad_q[rows] = gq
        grad_r += gr
    if shift is not None:
        return grad_q.to(q.dtype), grad_r.to(r.dtype), grad_shift.to(shift.dtype)
    return grad_q.to(q.dtype), grad_r.to(r.dtype)
