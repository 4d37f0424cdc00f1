"""The seam between a loss Function and its implementations.

Each loss family has one autograd Function (fastcontrast/<family>.py). It calls one of two
implementation modules with the same interface:

    fastcontrast/_torch/<family>.py   the memory-lean PyTorch path (chunked over anchors)
    fastcontrast/kernels/<family>.py  the Triton launchers

    forward(q, r, q_labels, r_labels, cfg, **family_tensors) -> (outputs..., saved)
    backward(grad_outputs..., q, r, q_labels, r_labels, cfg, saved, **family_tensors) -> grads

q (B×D) are anchors, r (N×D) references, both already normalized if the metric says so and
in their input dtype; labels are int64. The configs below are frozen, hashable and hold no
tensors, so they can be passed through autograd and torch.compile as constants. Signs are
resolved before the seam: the softmax family always sees a similarity (s = −d for distance
kinds), the margin families always a distance (d = −s for similarity kinds, with
`negate=True`), so an implementation never branches on loss conventions.

`self_offset`: anchor i and reference i + self_offset are the same sample and that pair is
skipped (0 when the references are the batch itself; a rank's row offset in distributed
use); −1 disables self-exclusion.

`saved` is what backward needs beyond the inputs, kept small: O(B) row statistics (the
kernels recompute every tile in backward), or for the PyTorch path at most one chunk×N
tile — when the whole problem fits in one chunk it keeps that chunk's gradient tile rather
than recompute it, which stays within the same O(chunk·N) memory bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SoftmaxConfig:
    """Similarity-softmax family. Logits l_ij = s_ij / τ, s = q·r ("dot") or −d (distances).

    variant "supcon": value_i = LSE_{j valid} l_ij − mean_{p∈P_i} l_ip  (0 when P_i is empty)
    variant "ntxent": value_i = Σ_{p∈P_i} softplus(LSE_{n∈Neg_i} l_in − l_ip)  (0 with no negatives)
    variant "dcl":    value_i = [Neg_i ≠ ∅]·LSE_{n∈Neg_i} l_in − mean_{p∈P_i} l_ip  (mean 0 when P_i is
                      empty; decoupled contrastive learning, and a bank-only LSE)
    variant "sigmoid": value_i = Σ_{j valid} softplus(−z_ij (l_ij + b)), z = ±1 on P_i / Neg_i (SigLIP;
                      the bias b is a tensor passed beside the temperature)
    Outputs: values (B,) differentiable, n_pos (B,) int64 (|P_i|), not differentiable.
    """

    kind: str = "dot"  # "dot" | "sqeuclidean" | "euclidean"
    variant: str = "supcon"
    self_offset: int = 0
    precision: str = "ieee"  # tl.dot input precision on GPU: "ieee" | "tf32"
    # ≥ 0: a promise that the labels make reference i + positive_offset the only positive of
    # query i (InfoNCE, N-pair); an implementation may use it instead of comparing labels.
    positive_offset: int = -1
    # True: a promise that no reference shares a label with any query and none is excluded
    # (every pair is a negative: a memory bank); "dcl" is then a plain LSE per row.
    all_negative: bool = False
    # True: a reference whose label is negative is absent — in no set, as if it were not there —
    # and every other label is ≥ 0 (N-pair's fixed-size column set, whose number of real
    # columns is known on the device only). The Triton kernels only.
    masked_refs: bool = False
    # The pair-weighted variants (both backends; "lifted" on Triton is _lifted_triton.py), with
    # l = s_ij (τ = 1), a on positive pairs, b on negative pairs, LSE₀ a log-sum-exp that is 0
    # over an empty set:
    #   "ms"       a = scale_pos·(shift_pos − l), b = scale_neg·(l − shift_neg),
    #              value_i = softplus(LSE_P a)/scale_pos + softplus(LSE_N b)/scale_neg
    #   "circle"   a = −scale_pos·relu(2 − shift_pos − l̄)·(l − shift_pos),
    #              b = scale_neg·relu(l̄ + shift_neg)·(l − shift_neg)  (l̄ = l, no gradient),
    #              value_i = softplus(LSE_P a + LSE_N b), 0 unless P_i and N_i are both non-empty
    #   "glifted"  a = shift_pos − l, b = l − shift_neg, value_i = relu(LSE₀_P a + LSE₀_N b)
    #   "lifted"   per positive pair (i, p): relu(LSE₀_{N_i ∪ N_p} b + a_ip)² / 2, with N_p the
    #              negatives of anchor row p (none when p ≥ B); value_i sums them over p
    scale_pos: float = 1.0
    scale_neg: float = 1.0
    shift_pos: float = 0.0
    shift_neg: float = 0.0
    # row_bounds (the pair-weighted variants but "lifted"): a (B, 2) tensor `bounds` comes
    # beside the inputs and restricts each anchor's pairs (a miner's selection, fused): a
    # positive pair counts only when l_ij − bound_slack < bounds[i, 0], a negative pair only
    # when l_ij + bound_slack > bounds[i, 1]; pairs left out are in neither P_i nor N_i.
    # Multi-Similarity mining is bounds = (max_n l_in, min_p l_ip), bound_slack = ε.
    row_bounds: bool = False
    bound_slack: float = 0.0


@dataclass(frozen=True)
class PairMarginConfig:
    """Pair-margin (contrastive) family, d = distance (or −s when negate).

    pos term = relu(d − pos_margin) ** power,  neg term = relu(neg_margin − d) ** power
    (power 1: pytorch-metric-learning; power 2 with pos_margin 0: Hadsell et al.)
    Outputs per anchor, column 0 positives, column 1 negatives:
      values (B, 2) differentiable sums of terms, counts (B, 2) pairs, nonzero (B, 2) terms > 0.
    """

    kind: str = "euclidean"
    negate: bool = False
    pos_margin: float = 0.0
    neg_margin: float = 1.0
    power: int = 1
    self_offset: int = 0
    precision: str = "ieee"
    # Which terms count, per column: a term enters values and nonzero only when
    # low < term < high (pytorch-metric-learning's ThresholdReducer on the pair losses; low
    # may be -inf). The default (0, inf) is no filter: every term > 0, i.e. the plain sums.
    pos_keep: tuple[float, float] = (0.0, math.inf)
    neg_keep: tuple[float, float] = (0.0, math.inf)
    # row_bounds: a (B, 2) tensor `bounds` comes beside the inputs and restricts each
    # anchor's pairs (a miner's selection, fused): a positive pair is one only when
    # d_ij + bound_slack > bounds[i, 0], a negative pair only when d_ij − bound_slack <
    # bounds[i, 1]; the others are no pair at all (not in counts, nonzero or values).
    row_bounds: bool = False
    bound_slack: float = 0.0

    @property
    def filtered(self) -> bool:
        return self.pos_keep != (0.0, math.inf) or self.neg_keep != (0.0, math.inf)


@dataclass(frozen=True)
class TripletConfig:
    """Triplet family, d = distance (or −s when negate), t = d_an − d_ap, h = d_ap − d_an + margin.

    mining:
      "batch_all"     every (a, p, n)                          term relu(h) (softplus(h) if smooth)
      "all" | "hard" | "semihard" | "easy": pytorch-metric-learning TripletMarginMiner filters
                      on t with miner_margin (all: t ≤ mm, hard: t ≤ 0, semihard: 0 < t ≤ mm,
                      easy: t > mm), then the same term on the kept triplets
      "batch_hard"    per anchor: farthest positive, nearest negative (lowest index on ties)
      "semihard_tfa"  per positive pair: nearest negative with d_an > d_ap, else the farthest
                      negative (TF Addons / FaceNet); term relu(h)
    swap: d_an → min(d_an, d_pn) in the term (not in the mining filter).
    hard_fallback (batch_hard only): "drop" — anchors lacking a positive or a negative give no
      term (PML BatchHardMiner); "tfa" — no positive → d_ap = 0, no negative → d_an = max_j d_aj,
      every anchor gives a term (TF Addons triplet_hard_loss).
    term_keep (low, high): only the terms with low < term < high enter values and nonzero
      (pytorch-metric-learning's ThresholdReducer; low may be -inf, then terms equal to 0 count
      too). The default (0, inf) is no filter: values sums every term, nonzero counts those > 0.
      For relu on the sorted path a window on d_an: low ≥ 0 keeps d_an < fl(x + fl(m − low)),
      high > 0 keeps d_an > fl(x + fl(m − high)), high ≤ 0 keeps nothing.
    Outputs per anchor: values (B,) differentiable sums of terms, counts (B,) int64 number of
      terms, nonzero (B,) int64 number of terms > 0 (of terms inside term_keep).
    """

    kind: str = "euclidean"
    negate: bool = False
    mining: str = "batch_all"
    margin: float = 0.05
    miner_margin: float = 0.2
    swap: bool = False
    smooth: bool = False
    hard_fallback: str = "drop"
    self_offset: int = 0
    precision: str = "ieee"
    term_keep: tuple[float, float] = (0.0, math.inf)

    @property
    def filtered(self) -> bool:
        return self.term_keep != (0.0, math.inf)
