"""Dense references for the pair-margin (max-margin contrastive) family.

Distances come from explicit differences (B×N×D), so they are exact for duplicates and
readable; nothing here is on the fast path.

    pml_contrastive   pytorch-metric-learning ContrastiveLoss:
                      pos term relu(d − pos_margin), neg term relu(neg_margin − d)
                      (for a similarity s: relu(pos_margin − s), relu(s − neg_margin)),
                      each set averaged over its non-zero terms, the two averages added.
    hadsell           the squared form: relu(d − pos_margin)², relu(neg_margin − d)²,
                      pos_margin 0 being Hadsell, Chopra & LeCun (2006).
    tfa_contrastive   TF Addons contrastive_loss(y_true, y_pred=distances, margin):
                      y·d² + (1 − y)·relu(margin − d)², one value per entry (not reduced).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SIMILARITIES = ("dot", "cosine")


def matrix(q, r, distance: str, normalize: bool | None = None):
    """Dense query×reference matrix of a user-facing metric name."""
    if normalize is None:
        normalize = distance == "cosine"
    if normalize:
        q, r = F.normalize(q, dim=1), F.normalize(r, dim=1)
    if distance in SIMILARITIES:
        return q @ r.T
    sq = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    if distance == "squared_euclidean":
        return sq
    # sqrt with gradient 0 at 0
    positive = sq > 0
    return torch.where(positive, sq.where(positive, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def pair_masks(labels, ref_labels, exclude_self: bool):
    same = labels[:, None] == ref_labels[None, :]
    not_self = torch.ones_like(same)
    if exclude_self:
        n = min(same.shape)
        not_self[torch.arange(n), torch.arange(n)] = False
    return same & not_self, ~same & not_self


def pair_terms(mat, pos, neg, pos_margin, neg_margin, power, similarity: bool):
    """Dense term matrices (B×N) for positives and negatives (zero outside the masks)."""
    d = -mat if similarity else mat
    pm, nm = (-pos_margin, -neg_margin) if similarity else (pos_margin, neg_margin)
    t_pos = F.relu(d - pm) ** power
    t_neg = F.relu(nm - d) ** power
    zero = torch.zeros((), dtype=mat.dtype)
    return torch.where(pos, t_pos, zero), torch.where(neg, t_neg, zero)


def per_anchor(embeddings, labels, pos_margin=0.0, neg_margin=1.0, power=1, distance="euclidean",
               normalize=None, ref_emb=None, ref_labels=None):
    """(values, counts, nonzero), each B×2 (column 0 positives, 1 negatives)."""
    exclude_self = ref_emb is None
    r = embeddings if ref_emb is None else ref_emb
    rl = labels if ref_labels is None else ref_labels
    mat = matrix(embeddings, r, distance, normalize)
    pos, neg = pair_masks(labels, rl, exclude_self)
    t_pos, t_neg = pair_terms(mat, pos, neg, pos_margin, neg_margin, power, distance in SIMILARITIES)
    values = torch.stack([t_pos.sum(1), t_neg.sum(1)], 1)
    counts = torch.stack([pos.sum(1), neg.sum(1)], 1)
    nonzero = torch.stack([(t_pos > 0).sum(1), (t_neg > 0).sum(1)], 1)
    return values, counts, nonzero


def _avg(total, denom):
    return total / denom if denom > 0 else total * 0


def reduce(values, counts, nonzero, reduction="mean", average="avg_nonzero"):
    if reduction == "none":
        return values.sum(1)
    if reduction == "sum":
        return values.sum()
    denom = nonzero if average == "avg_nonzero" else counts
    return _avg(values[:, 0].sum(), int(denom[:, 0].sum())) + _avg(values[:, 1].sum(), int(denom[:, 1].sum()))


def contrastive(embeddings, labels, pos_margin=0.0, neg_margin=1.0, power=1, distance="euclidean",
                normalize=None, ref_emb=None, ref_labels=None, reduction="mean", average="avg_nonzero"):
    """fastcontrast.contrastive_loss without indices_tuple, densely."""
    v, c, nz = per_anchor(embeddings, labels, pos_margin, neg_margin, power, distance, normalize,
                          ref_emb, ref_labels)
    return reduce(v, c, nz, reduction, average)


def pml_contrastive(embeddings, labels, pos_margin=0.0, neg_margin=1.0, distance="euclidean",
                    normalize=True, ref_emb=None, ref_labels=None):
    """PML ContrastiveLoss with AvgNonZero (its default reducer); default distance is the
    normalized Euclidean one."""
    return contrastive(embeddings, labels, pos_margin, neg_margin, 1, distance, normalize,
                       ref_emb, ref_labels)


def hadsell(embeddings, labels, margin=1.0, distance="euclidean", normalize=None, ref_emb=None,
            ref_labels=None, average="mean"):
    """Squared contrastive loss: positives d², negatives relu(margin − d)²; by default each set
    averaged over its pairs and the two averages added."""
    return contrastive(embeddings, labels, 0.0, margin, 2, distance, normalize, ref_emb, ref_labels,
                       "mean", average)


def pairs(embeddings, indices_tuple, pos_margin=0.0, neg_margin=1.0, power=1, distance="euclidean",
          normalize=None, ref_emb=None, average="avg_nonzero"):
    """The loss on explicit pairs (a1, p, a2, n) or triplets (a, p, n) → pairs (a, p, a, n)."""
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        indices_tuple = (a, p, a, n)
    a1, p, a2, n = indices_tuple
    r = embeddings if ref_emb is None else ref_emb
    mat = matrix(embeddings, r, distance, normalize)
    sim = distance in SIMILARITIES
    d_pos, d_neg = mat[a1, p], mat[a2, n]
    if sim:
        t_pos, t_neg = F.relu(pos_margin - d_pos) ** power, F.relu(d_neg - neg_margin) ** power
    else:
        t_pos, t_neg = F.relu(d_pos - pos_margin) ** power, F.relu(neg_margin - d_neg) ** power
    if average == "avg_nonzero":
        return _avg(t_pos.sum(), int((t_pos > 0).sum())) + _avg(t_neg.sum(), int((t_neg > 0).sum()))
    return _avg(t_pos.sum(), len(t_pos)) + _avg(t_neg.sum(), len(t_neg))


def tfa_contrastive(y_true, y_pred, margin=1.0):
    """TF Addons contrastive_loss: y_pred are distances, y_true 1 (similar) or 0."""
    y = y_true.to(y_pred.dtype)
    return y * y_pred ** 2 + (1 - y) * F.relu(margin - y_pred) ** 2
