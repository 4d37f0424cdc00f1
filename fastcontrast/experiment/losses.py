"""The stage-1 losses of the study, built from fastcontrast's public API.

Two conventions (`--semantics`):

"tfa" (default): the losses exactly as the original experiment computed them with
TensorFlow Addons on L2-normalized projections z:
    max-margin   Hadsell et al.: y·d² + (1 − y)·relu(m − d)², d Euclidean, mean over ALL
                 pairs (positive and negative pooled), m = --margin (1.0)
    semihard     FaceNet / tfa.losses.triplet_semihard_loss: for every positive pair the
                 nearest negative farther than the positive (else the farthest negative),
                 relu(d_ap − d_an + m), mean over all positive pairs
    hard         tfa.losses.triplet_hard_loss: per anchor the farthest positive and the
                 nearest negative, mean over all anchors
    batch-all    every valid triplet, mean over the non-zero ones (Hermans et al.; the
                 original had no batch-all run)
    npair        tfa.losses.npairs_loss on S = z zᵀ: cross-entropy of each row of S
                 (self included) against the label-equality distribution (self included)
    supcon       supervised NT-Xent (Khosla et al.), cosine, τ = --temperature (0.5),
                 scaled by τ / --base-temperature (0.07) as in the original
    nt-xent      supervised NT-Xent in its per-pair form (pytorch-metric-learning's NTXentLoss):
                 one term per positive pair (a, p), −log(e^{s_ap/τ} / (e^{s_ap/τ} +
                 Σ_{n∈Neg(a)} e^{s_an/τ})), cosine s, mean over positive pairs; unlike
                 SupCon, the anchor's other positives stay out of the denominator. Not one
                 of the blog's losses (it is not in the default --losses); same τ as supcon,
                 unscaled
"pml": pytorch-metric-learning's conventions (ContrastiveLoss with power 1 and
    average-of-non-zero; TripletMarginMiner "semihard"/"hard" filters with
    --miner-margin; Sohn's N-pair with one pair per class; the same SupCon).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BASELINE = "cross-entropy"

# CLI name -> title used in tables and plots
TITLES = {
    "max-margin": "Max-margin contrastive",
    "triplet-semihard": "Triplet, semi-hard mining",
    "triplet-hard": "Triplet, hard mining",
    "triplet-batch-all": "Triplet, batch-all",
    "npair": "Multi-class N-pair",
    "supcon": "Supervised NT-Xent (SupCon)",
    "nt-xent": "NT-Xent, per positive pair",
    BASELINE: "Cross-entropy MLP (baseline)",
}
LOSS_NAMES = tuple(TITLES)
# The losses of the original study (the default --losses); "all" adds the others.
BLOG_LOSSES = tuple(n for n in LOSS_NAMES if n != "nt-xent")
# Losses with a temperature: --temperatures sweeps these, the others run once.
TEMPERATURE_LOSSES = ("supcon", "nt-xent")
CONTRASTIVE_LOSSES = tuple(n for n in LOSS_NAMES if n != BASELINE)
SEMANTICS = ("tfa", "pml")


@dataclass(frozen=True)
class LossSettings:
    semantics: str = "tfa"
    margin: float = 1.0
    miner_margin: float = 0.2
    temperature: float = 0.5
    base_temperature: float = 0.07
    backend: str | None = None

    def __post_init__(self):
        for name in ("margin", "miner_margin", "temperature", "base_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"LossSettings.{name} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"LossSettings.{name} must be a finite number > 0, got {value!r}")


def build_loss(name: str, s: LossSettings) -> LossFn:
    """The stage-1 loss `name` as a function of (z, labels)."""
    import fastcontrast as fc

    tfa = s.semantics == "tfa"
    common = {"distance": "euclidean", "normalize": False, "backend": s.backend}

    if name == "max-margin":
        if not tfa:
            return lambda z, y: fc.contrastive_loss(z, y, pos_margin=0.0, neg_margin=s.margin,
                                                    power=1, average="avg_nonzero", **common)
        module = fc.ContrastiveLoss(pos_margin=0.0, neg_margin=s.margin, power=2, **common)

        def pooled_mean(z, y):
            # one mean over positive and negative pairs together, as TF Addons takes it
            terms = module.terms(z, y, None, None)
            total = terms.counts.sum()
            return module.reduce(terms, denominators=[total] * len(terms.parts()))

        return pooled_mean

    if name == "triplet-semihard":
        if tfa:
            return lambda z, y: fc.triplet_margin_loss(z, y, margin=s.margin, mining="semihard_tfa",
                                                       average="mean", **common)
        return lambda z, y: fc.triplet_margin_loss(z, y, margin=s.margin, mining="semihard",
                                                   miner_margin=s.miner_margin, **common)

    if name == "triplet-hard":
        if tfa:
            return lambda z, y: fc.triplet_margin_loss(z, y, margin=s.margin, mining="batch_hard",
                                                       hard_fallback="tfa", average="mean", **common)
        return lambda z, y: fc.triplet_margin_loss(z, y, margin=s.margin, mining="hard",
                                                   miner_margin=s.miner_margin, **common)

    if name == "triplet-batch-all":
        return lambda z, y: fc.triplet_margin_loss(z, y, margin=s.margin, mining="batch_all",
                                                   average="avg_nonzero", **common)

    if name == "npair":
        if tfa:
            # Softmax over every column of z zᵀ, self included, against the label-equality
            # distribution (self included): a SupCon at τ = 1 whose reference set is the
            # batch itself without self-exclusion.
            return lambda z, y: fc.supcon_loss(z, y, ref_emb=z, ref_labels=y.clone(),
                                               temperature=1.0, distance="dot", backend=s.backend)
        return lambda z, y: fc.npair_loss(z, y, distance="dot", normalize=False, backend=s.backend)

    if name == "supcon":
        scale = s.temperature / s.base_temperature if tfa else 1.0
        return lambda z, y: scale * fc.supcon_loss(z, y, temperature=s.temperature,
                                                   distance="cosine", backend=s.backend)

    if name == "nt-xent":
        return lambda z, y: fc.nt_xent_loss(z, y, temperature=s.temperature, form="pair",
                                            distance="cosine", backend=s.backend)

    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(CONTRASTIVE_LOSSES)}")
