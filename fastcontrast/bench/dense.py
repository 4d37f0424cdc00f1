"""The dense eager PyTorch code a user would write for each benchmark loss.

Full B×N distance / logit matrices from one matmul, boolean label masks, and for the
pytorch-metric-learning triplet miner filters and batch-all a B×N×N triplet tensor (that
is what the straightforward code does). These are the "dense" baselines of the timing
tables and the functions `torch.compile` is applied to; they compute the same numbers as
the named loss (the unit tests of the losses check fastcontrast against the exact
references, the benchmark records each implementation's loss value side by side).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _acc(t):
    """Half-precision matrices are reduced in float32 (what careful user code does)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _distances(x, y):
    """Euclidean distances of L2-normalized rows (PML's default LpDistance), one matmul."""
    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    sq = (2 - 2 * x @ y.T).clamp_min(0)
    return torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))


def _masks(labels):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _avg_nonzero(terms):
    nonzero = (terms > 0).sum()
    return terms.sum() / nonzero.clamp_min(1)


def contrastive(emb, labels, pos_margin=0.0, neg_margin=1.0):
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    t_pos = torch.where(pos, F.relu(d - pos_margin), 0.0)
    t_neg = torch.where(neg, F.relu(neg_margin - d), 0.0)
    return _avg_nonzero(t_pos) + _avg_nonzero(t_neg)


def triplet_filtered(emb, labels, filter_="all", margin=0.05, miner_margin=0.2):
    """TripletMarginMiner(filter_) + TripletMarginLoss, as a B×B×B tensor;
    filter_ "batch_all" keeps every valid triplet."""
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    d_ap, d_an = d[:, :, None], d[:, None, :]
    valid = pos[:, :, None] & neg[:, None, :]
    t = d_an - d_ap
    keep = {
        "batch_all": valid,
        "all": valid & (t <= miner_margin),
        "hard": valid & (t <= 0),
        "semihard": valid & (t > 0) & (t <= miner_margin),
        "easy": valid & (t > miner_margin),
    }[filter_]
    terms = torch.where(keep, F.relu(d_ap - d_an + margin), 0.0)
    return _avg_nonzero(terms)


def triplet_batch_hard(emb, labels, margin=0.05):
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    hardest_pos = torch.where(pos, d, float("-inf")).max(1).values
    hardest_neg = torch.where(neg, d, float("inf")).min(1).values
    ok = pos.any(1) & neg.any(1)
    terms = torch.where(ok, F.relu(hardest_pos - hardest_neg + margin), 0.0)
    return _avg_nonzero(terms)


def triplet_semihard_tfa(emb, labels, margin=1.0):
    """TF Addons rule: per positive pair the nearest negative farther than the positive,
    else the farthest negative; mean over positive pairs. B×B×B."""
    x = _acc(emb)
    sq = (x.pow(2).sum(1, keepdim=True) + x.pow(2).sum(1) - 2 * x @ x.T).clamp_min(0)
    d = torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))
    pos, neg = _masks(labels)
    d_ap, d_an = d[:, :, None], d[:, None, :]
    farther = neg[:, None, :] & (d_an > d_ap)
    nearest_farther = torch.where(farther, d_an, float("inf")).min(2).values
    farthest = torch.where(neg, d, float("-inf")).max(1, keepdim=True).values.expand_as(d)
    chosen = torch.where(farther.any(2), nearest_farther, farthest)
    terms = torch.where(pos, F.relu(d - chosen + margin), 0.0)
    return terms.sum() / pos.sum().clamp_min(1)


def _cosine_logits(q, r, temperature):
    return _acc(F.normalize(q, dim=1) @ F.normalize(r, dim=1).T) / temperature


def ntxent(emb, labels, temperature=0.07):
    """PML NTXentLoss: per positive pair softplus(LSE over the anchor's negatives − l_ap)."""
    logits = _cosine_logits(emb, emb, temperature)
    pos, neg = _masks(labels)
    lse_neg = torch.logsumexp(torch.where(neg, logits, float("-inf")), dim=1, keepdim=True)
    lse_neg = torch.where(neg.any(1, keepdim=True), lse_neg, torch.full_like(lse_neg, float("-inf")))
    terms = F.softplus(lse_neg - logits)
    return torch.where(pos, terms, 0.0).sum() / pos.sum().clamp_min(1)


def supcon(emb, labels, temperature=0.1):
    logits = _cosine_logits(emb, emb, temperature)
    pos, _ = _masks(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    n_pos = pos.sum(1)
    per_anchor = -torch.where(pos, log_prob, 0.0).sum(1) / n_pos.clamp_min(1)
    has = n_pos > 0
    return per_anchor.sum() / has.sum().clamp_min(1)


def npair(emb, labels):
    """PML NPairsLoss: one (anchor, positive) pair per label, cross-entropy of normalized
    dot products against the pair index."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    first = torch.ones_like(sorted_labels, dtype=torch.bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    start = torch.nonzero(first).flatten()
    counts = torch.diff(torch.cat([start, start.new_tensor([len(labels)])]))
    start = start[counts >= 2]
    anchors, positives = emb[order[start]], emb[order[start + 1]]
    logits = _acc(F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T)
    return F.cross_entropy(logits, torch.arange(len(start), device=emb.device))


def info_nce(query, keys, temperature=0.07):
    logits = _cosine_logits(query, keys, temperature)
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def clip(image, text, temperature=0.07):
    """open_clip ClipLoss on normalized features: both directions' cross-entropy, averaged."""
    logits = _cosine_logits(image, text, temperature)
    target = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def siglip(image, text, scale=10.0, bias=-10.0):
    """open_clip SigLipLoss on normalized features: −Σ log σ((2I − 1)·logits) / B."""
    logits = _acc(F.normalize(image, dim=1) @ F.normalize(text, dim=1).T) * scale + bias
    z = 2 * torch.eye(len(image), dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(z * logits).sum() / len(image)


def ntxent_membank(out0, out1, bank, temperature=0.07):
    """lightly NTXentLoss with a memory bank: [positive | bank] logits, cross-entropy to 0
    (lightly clones the bank each call; the enqueue, B rows, is left out)."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    negatives = bank.clone().detach().to(out0.dtype)
    logits = _acc(torch.cat([(out0 * out1).sum(1, keepdim=True), out0 @ negatives.T], 1)) / temperature
    return F.cross_entropy(logits, torch.zeros(len(out0), dtype=torch.long, device=out0.device))


def _masked_lse(x, mask, empty):
    lse = torch.logsumexp(torch.where(mask, x, float("-inf")), dim=1)
    return torch.where(mask.any(1), lse, torch.full_like(lse, empty))


def multi_similarity(emb, labels, alpha=2.0, beta=50.0, base=0.5):
    """PML MultiSimilarityLoss (cosine): mean over anchors of the two log(1 + Σ e^…) terms."""
    s = _cosine_logits(emb, emb, 1.0)
    pos, neg = _masks(labels)
    lp = _masked_lse(-alpha * (s - base), pos, float("-inf"))
    ln = _masked_lse(beta * (s - base), neg, float("-inf"))
    return (F.softplus(lp) / alpha + F.softplus(ln) / beta).mean()


def multi_similarity_mined(emb, labels, epsilon=0.1, alpha=2.0, beta=50.0, base=0.5):
    """PML MultiSimilarityMiner(epsilon) + MultiSimilarityLoss (cosine): the mined masks
    (positives with s − ε < max_n s, negatives with s + ε > min_p s), then the loss on them;
    0 when at most one pair of each kind is mined (PML's early exit)."""
    s = _cosine_logits(emb, emb, 1.0)
    pos, neg = _masks(labels)
    sd = s.detach()
    if bool(pos.any()) and bool(neg.any()):
        max_neg = torch.where(neg, sd, float("-inf")).amax(1, keepdim=True)
        min_pos = torch.where(pos, sd, float("inf")).amin(1, keepdim=True)
        pos, neg = pos & (sd - epsilon < max_neg), neg & (sd + epsilon > min_pos)
    else:
        pos, neg = pos & False, neg & False
    if pos.sum() <= 1 and neg.sum() <= 1:
        return s.sum() * 0
    lp = _masked_lse(-alpha * (s - base), pos, float("-inf"))
    ln = _masked_lse(beta * (s - base), neg, float("-inf"))
    return (F.softplus(lp) / alpha + F.softplus(ln) / beta).mean()


def contrastive_pair_margin(emb, labels, miner_pos=0.2, miner_neg=0.8, pos_margin=0.0, neg_margin=1.0):
    """PML PairMarginMiner(miner_pos, miner_neg) + ContrastiveLoss (normalized Euclidean): the
    positives with d > miner_pos and negatives with d < miner_neg, each kind's hinge terms
    averaged over the non-zero ones; 0 when at most one pair of each kind is mined."""
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    pos, neg = pos & (d.detach() > miner_pos), neg & (d.detach() < miner_neg)
    if pos.sum() <= 1 and neg.sum() <= 1:
        return d.sum() * 0
    t_pos = torch.where(pos, F.relu(d - pos_margin), 0.0)
    t_neg = torch.where(neg, F.relu(neg_margin - d), 0.0)
    return _avg_nonzero(t_pos) + _avg_nonzero(t_neg)


def circle(emb, labels, m=0.4, gamma=80.0):
    """PML CircleLoss (cosine, α detached), averaged over the anchors with a loss > 0."""
    s = _cosine_logits(emb, emb, 1.0)
    pos, neg = _masks(labels)
    a = -gamma * F.relu(1 + m - s.detach()) * (s - (1 - m))
    b = gamma * F.relu(s.detach() + m) * (s - m)
    per = F.softplus(_masked_lse(a, pos, 0.0) + _masked_lse(b, neg, 0.0))
    per = torch.where(pos.any(1) & neg.any(1), per, 0.0)
    return _avg_nonzero(per)


def generalized_lifted(emb, labels, neg_margin=1.0, pos_margin=0.0):
    """PML GeneralizedLiftedStructureLoss (normalized Euclidean), mean over anchors."""
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    return F.relu(_masked_lse(d - pos_margin, pos, 0.0) + _masked_lse(neg_margin - d, neg, 0.0)).mean()


def lifted(emb, labels, neg_margin=1.0, pos_margin=0.0):
    """PML LiftedStructureLoss (normalized Euclidean): per positive pair (a, p) the LSE over
    the negatives of rows a and p, mean over positive pairs."""
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    row = _masked_lse(neg_margin - d, neg, float("-inf"))
    union = torch.logaddexp(row[:, None], row[None, :])
    union = torch.where(torch.isneginf(union), 0.0, union)
    per = F.relu(union + d - pos_margin) ** 2 / 2
    return torch.where(pos, per, 0.0).sum() / pos.sum().clamp_min(1)


def margin(emb, labels, margin=0.2, beta=None):
    """PML MarginLoss over every triplet, from per-pair hinges weighted by the other side's
    count, DivisorReducer over the non-zero terms. β defaults to PML's: 1.2 stored in float32."""
    beta = float(torch.tensor(1.2)) if beta is None else beta
    d = _acc(_distances(emb, emb))
    pos, neg = _masks(labels)
    n_pos, n_neg = pos.sum(1, keepdim=True).to(d.dtype), neg.sum(1, keepdim=True).to(d.dtype)
    hp = torch.where(pos, F.relu(d - beta + margin), 0.0)
    hn = torch.where(neg, F.relu(beta - d + margin), 0.0)
    total = (hp * n_neg).sum() + (hn * n_pos).sum()
    divisor = ((hp > 0) * n_neg).sum() + ((hn > 0) * n_pos).sum()
    return total / divisor.clamp_min(1)


def step_for(loss: str):
    """The dense function of a benchmark loss name: f(inputs dict) -> scalar."""
    filters = {"triplet-all": "all", "triplet-hard": "hard", "triplet-semihard": "semihard",
               "triplet-easy": "easy", "triplet-batch-all": "batch_all"}
    if loss in filters:
        f = filters[loss]
        return lambda x: triplet_filtered(x["emb"], x["labels"], f)
    table = {
        "contrastive": lambda x: contrastive(x["emb"], x["labels"]),
        "triplet-batch-hard": lambda x: triplet_batch_hard(x["emb"], x["labels"]),
        "triplet-semihard-tfa": lambda x: triplet_semihard_tfa(x["emb"], x["labels"]),
        "ntxent": lambda x: ntxent(x["emb"], x["labels"]),
        "ntxent-simclr": lambda x: ntxent(x["emb"], x["labels"]),
        "supcon": lambda x: supcon(x["emb"], x["labels"]),
        "npair": lambda x: npair(x["emb"], x["labels"]),
        "info-nce": lambda x: info_nce(x["emb"], x["keys"]),
        "clip": lambda x: clip(x["emb"], x["keys"]),
        "siglip": lambda x: siglip(x["emb"], x["keys"]),
        "ntxent-membank": lambda x: ntxent_membank(x["emb"], x["keys"], x["bank"]),
        "multi-similarity": lambda x: multi_similarity(x["emb"], x["labels"]),
        "multi-similarity-mined": lambda x: multi_similarity_mined(x["emb"], x["labels"]),
        "contrastive-pair-margin": lambda x: contrastive_pair_margin(x["emb"], x["labels"]),
        "circle": lambda x: circle(x["emb"], x["labels"]),
        "lifted": lambda x: lifted(x["emb"], x["labels"]),
        "generalized-lifted": lambda x: generalized_lifted(x["emb"], x["labels"]),
        "margin": lambda x: margin(x["emb"], x["labels"]),
    }
    return table[loss]
