"""Dense references for the triplet family (tests only: they build B×N×N tensors).

`triplet_terms` states every mining mode of configs.TripletConfig directly: all triplets
(a, p, n) at once, a boolean `kept` cube, the term, per-anchor sums. The TF Addons
functions restate triplet_semihard_loss / triplet_hard_loss on a dense matrix the way
SEMANTICS.md describes them (row minimum / maximum fallbacks included), independently of
the config semantics, so the compat layer is checked against TF Addons' own rules. Between
exactly equal distances the lowest index is selected (fastcontrast's tie rule); TF's min/max
gradients would split between such ties instead, the values are the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..configs import TripletConfig


def distance_matrix(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Dense "dot" / "sqeuclidean" / "euclidean" between rows, from differences (duplicates
    give exactly 0), with a zero-safe square root (gradient 0 at 0)."""
    if kind == "dot":
        return x @ y.T
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if kind == "sqeuclidean":
        return sq
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def masks(q_labels, r_labels, self_offset: int):
    """(pos, neg): same label / other label; the self pair (i, i + self_offset) is neither."""
    same = q_labels[:, None] == r_labels[None, :]
    valid = torch.ones_like(same)
    if self_offset >= 0:
        b, n = same.shape
        valid = torch.arange(n)[None, :] != (torch.arange(b) + self_offset)[:, None]
    return same & valid, ~same & valid


def _term(h, smooth):
    return F.softplus(h) if smooth else F.relu(h)


def triplet_terms(q, r, q_labels, r_labels, cfg: TripletConfig):
    """Per-anchor (values, counts, nonzero) of configs.TripletConfig, densely."""
    d = distance_matrix(q, r, cfg.kind)
    d_rr = distance_matrix(r, r, cfg.kind) if cfg.swap else None
    if cfg.negate:
        d = -d
        d_rr = -d_rr if d_rr is not None else None
    pos, neg = masks(q_labels, r_labels, cfg.self_offset)
    if cfg.mining == "batch_hard":
        return _batch_hard(d, d_rr, pos, neg, cfg)
    if cfg.mining == "semihard_tfa":
        return _semihard_tfa(d, d_rr, pos, neg, cfg)
    x = d[:, :, None]                       # d_ap, axes (a, p, n)
    z = d[:, None, :]                       # d_an
    t = z - x
    mm = cfg.miner_margin
    keep = {
        "batch_all": torch.ones_like(t, dtype=torch.bool),
        "all": t <= mm,
        "hard": (t <= mm) & (t <= 0),
        "semihard": (t > 0) & (t <= mm),
        "easy": t > mm,
    }[cfg.mining] & pos[:, :, None] & neg[:, None, :]
    e = torch.minimum(z, d_rr[None, :, :]) if cfg.swap else z
    term = torch.where(keep, _term(x - e + cfg.margin, cfg.smooth), torch.zeros_like(t))
    return term.sum((1, 2)), keep.sum((1, 2)), ((term > 0) & keep).sum((1, 2))


def _first_arg(values, mask, largest):
    """Index of the largest/smallest masked value, lowest index on ties."""
    fill = float("-inf") if largest else float("inf")
    v = torch.where(mask, values, torch.full_like(values, fill))
    return v.argmax(1) if largest else v.argmin(1)


def _batch_hard(d, d_rr, pos, neg, cfg):
    rows = torch.arange(d.shape[0])
    p = _first_arg(d, pos, True)
    n = _first_arg(d, neg, False)
    has_p, has_n = pos.any(1), neg.any(1)
    d_ap, d_an = d[rows, p], d[rows, n]
    if cfg.hard_fallback == "drop":
        valid = has_p & has_n
    else:  # "tfa": no positive → d_ap = 0; no negative → the row maximum
        valid = torch.ones_like(has_p)
        d_ap = torch.where(has_p, d_ap, torch.zeros_like(d_ap))
        far = d.argmax(1)
        n = torch.where(has_n, n, far)
        d_an = d[rows, n]
    if cfg.swap:
        d_an = torch.where(has_p, torch.minimum(d_an, d_rr[p, n]), d_an)
    term = torch.where(valid, _term(d_ap - d_an + cfg.margin, cfg.smooth), torch.zeros_like(d_ap))
    return term, valid.long(), (term > 0).long()


def _semihard_tfa(d, d_rr, pos, neg, cfg):
    b, n = d.shape
    values = torch.zeros(b, dtype=d.dtype)
    nonzero = torch.zeros(b, dtype=torch.long)
    for a in range(b):
        negs = neg[a].nonzero()[:, 0]
        for p in pos[a].nonzero()[:, 0].tolist():
            if len(negs) == 0:
                d_an = torch.zeros((), dtype=d.dtype)
            else:
                above = negs[d[a, negs] > d[a, p]]
                if len(above):
                    k = above[d[a, above].argmin()]
                else:
                    k = negs[d[a, negs].argmax()]
                d_an = d[a, k]
                if cfg.swap:
                    d_an = torch.minimum(d_an, d_rr[p, k])
            term = _term(d[a, p] - d_an + cfg.margin, cfg.smooth)
            values[a] = values[a] + term
            nonzero[a] += int(term > 0)
    return values, pos.sum(1), nonzero


# ----------------------------------------------------------------------------- TF Addons

def tfa_distance(emb: torch.Tensor, metric: str) -> torch.Tensor:
    """TF Addons' pairwise distances: "L2", "squared-L2", "angular" (1 − cos, ≥ 0); zero
    diagonal for the L2 kinds."""
    if metric == "angular":
        u = F.normalize(emb, dim=1)
        return (1.0 - u @ u.T).clamp_min(0.0)
    d = distance_matrix(emb, emb, "euclidean" if metric == "L2" else "sqeuclidean")
    return d * (1 - torch.eye(len(emb), dtype=d.dtype))


def tfa_triplet_semihard_loss(labels, emb, margin=1.0, metric="L2"):
    """Mean over all positive pairs (a, p), a ≠ p, of relu(margin + d_ap − d_an*), where d_an*
    is the smallest negative distance strictly above d_ap, else the largest negative
    distance, else (no negative at all) the row minimum. NaN-free: 0 without positive pairs."""
    d = tfa_distance(emb, metric)
    same = labels[:, None] == labels[None, :]
    b = len(labels)
    total, pairs = torch.zeros((), dtype=d.dtype), 0
    for a in range(b):
        negs = (~same[a]).nonzero()[:, 0]
        for p in range(b):
            if p == a or not same[a, p]:
                continue
            pairs += 1
            above = negs[d[a, negs] > d[a, p]]
            if len(above):
                d_an = d[a, above[d[a, above].argmin()]]
            elif len(negs):
                d_an = d[a, negs[d[a, negs].argmax()]]
            else:
                d_an = d[a, d[a].argmin()]
            total = total + F.relu(margin + d[a, p] - d_an)
    return total / pairs if pairs else total


def tfa_triplet_hard_loss(labels, emb, margin=1.0, soft=False, metric="L2"):
    """Mean over all anchors of relu(max_p d_ap − min_n d_an + margin) (log1p(exp(·)) without
    the margin when soft); no positive → the row minimum; no negative → the row maximum."""
    d = tfa_distance(emb, metric)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos, neg = same & ~eye, ~same
    rows = torch.arange(len(labels))
    row_min, row_max = d[rows, d.argmin(1)], d[rows, d.argmax(1)]
    hard_p = torch.where(pos.any(1), d[rows, torch.where(pos, d, torch.full_like(d, -torch.inf)).argmax(1)], row_min)
    hard_n = torch.where(neg.any(1), d[rows, torch.where(neg, d, torch.full_like(d, torch.inf)).argmin(1)], row_max)
    loss = torch.log1p(torch.exp(hard_p - hard_n)) if soft else F.relu(hard_p - hard_n + margin)
    return loss.mean()
