"""Dense references of the similarity-softmax losses, written from SEMANTICS.md.

Plain loops and full matrices, float64-capable; for tests only. Each function states one
library's convention:

    softmax_values      the seam's per-anchor values (SoftmaxConfig variants)
    pml_ntxent          pytorch-metric-learning NTXentLoss
    pml_supcon          pytorch-metric-learning SupConLoss
    pml_npairs          pytorch-metric-learning NPairsLoss
    supcontrast         the SupContrast reference SupConLoss (features [B, V, D])
    simclr_ntxent       the SimCLR paper's NT-Xent (row i pairs with row i + B/2)
    sohn_npair          Sohn's multi-class N-pair loss with the L2 penalty
    tfa_npairs          TF Addons npairs_loss (similarity matrix in, soft targets)
    info_nce            InfoNCE / CLIP (query i ↔ key i; symmetric option)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(x, y, distance="cosine", normalize=None):
    """Dense similarity matrix: dot / cosine, or minus a (squared) Euclidean distance
    computed from differences."""
    if normalize is None:
        normalize = distance == "cosine"
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    if distance in ("dot", "cosine"):
        return x @ y.T
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if distance == "squared_euclidean":
        return -sq
    if distance == "euclidean":
        pos = sq > 0
        return -(torch.where(pos, sq, torch.ones_like(sq)).sqrt() * pos)
    raise ValueError(distance)


def softmax_values(sim, q_labels, r_labels, variant, temperature, self_offset=0):
    """Per-anchor values of SoftmaxConfig from a dense similarity matrix, one row at a time."""
    b, n = sim.shape
    logits = sim / temperature
    out = []
    for i in range(b):
        valid = [j for j in range(n) if self_offset < 0 or j != i + self_offset]
        pos = [j for j in valid if q_labels[i] == r_labels[j]]
        neg = [j for j in valid if q_labels[i] != r_labels[j]]
        row = logits[i]
        if variant == "supcon":
            if not pos:
                out.append(row.sum() * 0)
                continue
            out.append(torch.logsumexp(row[valid], 0) - row[pos].mean())
        else:
            total = row.sum() * 0
            if neg:
                for p in pos:
                    # −log(e^{l_p} / (e^{l_p} + Σ_n e^{l_n}))
                    total = total + torch.logsumexp(torch.cat([row[p:p + 1], row[neg]]), 0) - row[p]
            out.append(total)
    return torch.stack(out)


def _all_pairs(labels, ref_labels, exclude_self):
    same = labels[:, None] == ref_labels[None, :]
    pos = same.clone()
    if exclude_self:
        pos.fill_diagonal_(False)
    return pos, ~same


def pml_ntxent(embeddings, labels, temperature=0.07, distance="cosine", normalize=None,
               ref_emb=None, ref_labels=None):
    """Mean over positive pairs (a, p) of −log(e^{l_ap} / (e^{l_ap} + Σ_{n∈Neg(a)} e^{l_an}))."""
    exclude_self = ref_emb is None
    if ref_emb is None:
        ref_emb, ref_labels = embeddings, labels
    logits = similarity(embeddings, ref_emb, distance, normalize) / temperature
    pos, neg = _all_pairs(labels, ref_labels, exclude_self)
    terms = []
    for a, p in pos.nonzero().tolist():
        negs = logits[a][neg[a]]
        both = torch.cat([logits[a, p:p + 1], negs])
        terms.append(torch.logsumexp(both, 0) - logits[a, p])
    if not terms or not bool(neg.any()):
        return embeddings.sum() * 0
    return torch.stack(terms).mean()


def pml_supcon(embeddings, labels, temperature=0.1, distance="cosine", normalize=None,
               ref_emb=None, ref_labels=None):
    """Per anchor with positives: −mean_p (l_ap − LSE_{j∈pos∪neg} l_aj); average of the
    anchors whose loss is > 0; 0 if the batch has no positive or no negative pair."""
    exclude_self = ref_emb is None
    if ref_emb is None:
        ref_emb, ref_labels = embeddings, labels
    logits = similarity(embeddings, ref_emb, distance, normalize) / temperature
    pos, neg = _all_pairs(labels, ref_labels, exclude_self)
    if not bool(pos.any()) or not bool(neg.any()):
        return embeddings.sum() * 0
    losses = []
    for a in range(logits.shape[0]):
        if not bool(pos[a].any()):
            continue
        lse = torch.logsumexp(logits[a][pos[a] | neg[a]], 0)
        loss = -(logits[a][pos[a]] - lse).mean()
        if loss > 0:
            losses.append(loss)
    return torch.stack(losses).mean() if losses else embeddings.sum() * 0


def pml_npairs(embeddings, labels, distance="dot", normalize=True):
    """First same-label pair per label (row-major), then cross-entropy of
    sim(anchors, positives) against arange; mean."""
    pos, _ = _all_pairs(labels, labels, True)
    chosen = {}
    for a, p in pos.nonzero().tolist():
        chosen.setdefault(int(labels[a]), (a, p))
    if not chosen:
        return embeddings.sum() * 0
    a_idx = [chosen[k][0] for k in sorted(chosen)]
    p_idx = [chosen[k][1] for k in sorted(chosen)]
    sim = similarity(embeddings[a_idx], embeddings[p_idx], distance, normalize)
    return F.cross_entropy(sim, torch.arange(len(a_idx)))


def supcontrast(features, labels=None, mask=None, temperature=0.07, contrast_mode="all",
                base_temperature=0.07):
    """features [B, V, D] (not normalized here). Anchors: all B·V views ("all") or view 0
    ("one"); contrast set: all views but the anchor itself; loss_i = −(τ/τ_base)·mean over
    positives of (s_ip/τ − LSE_{j≠i} s_ij/τ), 0 without positives; mean over anchors."""
    b, v, _ = features.shape
    views = features.transpose(0, 1).reshape(b * v, -1)  # view-major: row = view·B + sample
    sample = torch.arange(b).repeat(v)
    if mask is None:
        ids = torch.arange(b) if labels is None else labels
        mask = (ids[:, None] == ids[None, :]).to(features.dtype)
    anchors = range(b * v) if contrast_mode == "all" else range(b)
    logits = views @ views.T / temperature
    out = []
    for i in anchors:
        others = [j for j in range(b * v) if j != i]
        positives = [j for j in others if mask[sample[i], sample[j]] > 0]
        if not positives:
            out.append(logits[i].sum() * 0)
            continue
        lse = torch.logsumexp(logits[i][others], 0)
        out.append(-(temperature / base_temperature) * (logits[i][positives] - lse).mean())
    return torch.stack(out).mean()


def simclr_ntxent(embeddings, temperature=0.5):
    """2N rows, row i's positive is row (i + N) mod 2N, cosine similarity:
    mean_i −log(e^{s_i,j(i)/τ} / Σ_{k≠i} e^{s_ik/τ})."""
    n2 = embeddings.shape[0]
    logits = similarity(embeddings, embeddings, "cosine") / temperature
    out = []
    for i in range(n2):
        others = [k for k in range(n2) if k != i]
        out.append(torch.logsumexp(logits[i][others], 0) - logits[i, (i + n2 // 2) % n2])
    return torch.stack(out).mean()


def sohn_npair(anchors, positives, l2_reg=0.0):
    """(1/N) Σ_i log(1 + Σ_{j≠i} exp(f_iᵀf_j⁺ − f_iᵀf_i⁺)) + 0.25·λ·(mean‖f‖² + mean‖f⁺‖²)."""
    sim = anchors @ positives.T
    n = sim.shape[0]
    terms = [torch.log1p(sum(torch.exp(sim[i, j] - sim[i, i]) for j in range(n) if j != i)
                         if n > 1 else sim[i, i] * 0) for i in range(n)]
    penalty = 0.25 * l2_reg * ((anchors ** 2).sum(1).mean() + (positives ** 2).sum(1).mean())
    return torch.stack(terms).mean() + penalty


def tfa_npairs(y_true, y_pred):
    """Soft targets = row-normalized label equality; softmax cross-entropy per row; mean."""
    y = y_true.reshape(-1)
    target = (y[:, None] == y[None, :]).to(y_pred.dtype)
    target = target / target.sum(1, keepdim=True)
    return -(target * torch.log_softmax(y_pred, 1)).sum(1).mean()


def info_nce(query, keys, temperature=0.07, symmetric=False, distance="cosine", normalize=None):
    """Cross-entropy of sim(query, keys)/τ rows against arange (keys beyond the queries are
    negatives only); symmetric: the mean of both directions."""
    logits = similarity(query, keys, distance, normalize) / temperature
    targets = torch.arange(query.shape[0])
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, targets))
    return loss
