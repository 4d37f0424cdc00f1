"""Small dense losses with the terms()/reduce() interface, independent of the real families,
to test the distributed machinery on its own."""
from __future__ import annotations

import torch

from fastcontrast._reduce import LossTerms, reduce_terms


def _self_mask(b, n, self_offset, device):
    mask = torch.zeros(b, n, dtype=torch.bool, device=device)
    if self_offset >= 0:
        rows = torch.arange(b, device=device)
        mask[rows, rows + self_offset] = True
    return mask


class _Base(torch.nn.Module):
    def __init__(self, reduction="mean", average="mean"):
        super().__init__()
        self.reduction, self.average = reduction, average

    def reduce(self, terms, denominators=None):
        return reduce_terms(terms, self.reduction, self.average, denominators)

    def forward(self, embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None):
        if ref_emb is None:
            return self.reduce(self.terms(embeddings, labels, embeddings, labels, 0))
        return self.reduce(self.terms(embeddings, labels, ref_emb, ref_labels, -1))


class PairStandIn(_Base):
    """Two parts: positives d², negatives relu(margin − d²)²; d² squared Euclidean."""

    def __init__(self, margin=2.0, **kw):
        super().__init__(**kw)
        self.margin = margin

    def terms(self, embeddings, labels, ref_emb, ref_labels, self_offset=0):
        d = torch.cdist(embeddings, ref_emb) ** 2
        valid = ~_self_mask(len(labels), len(ref_labels), self_offset, d.device)
        pos = (labels[:, None] == ref_labels[None, :]) & valid
        neg = (labels[:, None] != ref_labels[None, :]) & valid
        pos_t = torch.where(pos, d, 0 * d)
        neg_t = torch.where(neg, torch.relu(self.margin - d) ** 2, 0 * d)
        values = torch.stack([pos_t.sum(1), neg_t.sum(1)], 1)
        counts = torch.stack([pos.sum(1), neg.sum(1)], 1)
        nonzero = torch.stack([(pos_t > 0).sum(1), (neg_t > 0).sum(1)], 1)
        return LossTerms(values, counts, nonzero)


class SoftmaxStandIn(_Base):
    """SupCon-like: LSE over valid refs minus mean positive logit; anchors without positives
    give no term (count 0)."""

    def __init__(self, temperature=0.5, **kw):
        super().__init__(**kw)
        self.temperature = torch.nn.Parameter(torch.tensor(temperature, dtype=torch.float64))

    def terms(self, embeddings, labels, ref_emb, ref_labels, self_offset=0):
        q = torch.nn.functional.normalize(embeddings, dim=1)
        r = torch.nn.functional.normalize(ref_emb, dim=1)
        logits = q @ r.T / self.temperature
        valid = ~_self_mask(len(labels), len(ref_labels), self_offset, q.device)
        pos = (labels[:, None] == ref_labels[None, :]) & valid
        lse = torch.logsumexp(logits.masked_fill(~valid, float("-inf")), 1)
        n_pos = pos.sum(1)
        mean_pos = torch.where(pos, logits, 0 * logits).sum(1) / n_pos.clamp_min(1)
        has = n_pos > 0
        values = torch.where(has, lse - mean_pos, 0 * lse)
        return LossTerms(values, has.long(), has.long())
