"""LiftedStructureLoss on the Triton backend: the similarity-softmax kernels' "glifted"
variant for the per-row log-sum-exps over negatives, kernels/lifted.py for the per-positive-
pair pass. Every step is a kernel or a fixed-shape torch op: no host sync.

    L_x = LSE_{n∈N_x} (l_xn − m_neg)           the "glifted" forward: its LSE_N b (aux)
    v_i = Σ_{p∈P_i} relu(LSE₀(L_i, L_p) + m_pos − l_ip)² / 2      kernels/lifted.py forward

Backward: ∂L/∂l_ip = −g_i·h_ip on the positive pairs and W_x·softmax_{N_x}(b) on anchor row
x's negatives (W_x from the pairs that use L_x). kernels/lifted.py's backward gives W and the
positive pairs' gradient; the negatives' part is the "glifted" backward with g = W and
LSE_P a = +max (which makes its positive weights e^{a − LSE_P a} exactly 0 and its hinge
factor 1), so that kernel computes W_x·softmax_{N_x}(b) alone.

With row bounds (cfg.row_bounds: a fused miner selection, e.g. compat MultiSimilarityMiner)
both kernels take them: the negatives' LSEs over the kept negatives, the pair pass over the
kept positives.

Same function signatures as kernels/softmax.py's forward / backward (SoftmaxFunction's
implementation protocol); saved = (L,).
"""
from __future__ import annotations

import dataclasses

import torch

from .configs import SoftmaxConfig


def _negative_lse_config(cfg: SoftmaxConfig) -> SoftmaxConfig:
    return dataclasses.replace(cfg, variant="glifted")


def _row_bounds(cfg: SoftmaxConfig, bounds):
    """The row bounds (a fused miner selection) in float32, or None without cfg.row_bounds."""
    if not cfg.row_bounds:
        return None
    if bounds is None:
        raise ValueError("cfg.row_bounds needs a bounds tensor")
    return bounds.detach().float()


def forward(q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, bounds=None):
    """-> (values (B,) float32, n_pos (B,), saved = (L,)). bounds: the row bounds with
    cfg.row_bounds (the kernel's negatives and the pair pass's positives and negatives inside
    them)."""
    from .kernels import lifted as kernels_lifted
    from .kernels import softmax as kernels_softmax
    bounds = _row_bounds(cfg, bounds)
    one = torch.ones((), dtype=torch.float32, device=q.device)
    _, _, (_, row_lse) = kernels_softmax.forward(q, r, q_labels, r_labels, _negative_lse_config(cfg), one,
                                                 bounds=bounds)
    values, n_pos = kernels_lifted.forward(q, r, q_labels, r_labels, cfg, row_lse, bounds)
    return values, n_pos, (row_lse,)


def backward(grad_values, q, r, q_labels, r_labels, cfg: SoftmaxConfig, temperature, saved,
             needs_temperature_grad: bool, bounds=None):
    """-> (grad_q like q, grad_r like r, grad_temperature (0, Lifted has no τ) or None)."""
    from .kernels import lifted as kernels_lifted
    from .kernels import softmax as kernels_softmax
    bounds = _row_bounds(cfg, bounds)
    (row_lse,) = saved
    grad_q, grad_r, weight = kernels_lifted.backward(grad_values, q, r, q_labels, r_labels, cfg, row_lse, bounds)
    one = torch.ones((), dtype=torch.float32, device=q.device)
    no_positive_weight = torch.full_like(row_lse, torch.finfo(torch.float32).max)
    neg_q, neg_r, _ = kernels_softmax.backward(weight.float(), q, r, q_labels, r_labels, _negative_lse_config(cfg),
                                               one, (no_positive_weight, row_lse), needs_temperature_grad=False,
                                               bounds=bounds)
    grad_t = torch.zeros_like(temperature) if needs_temperature_grad else None
    return (grad_q + neg_q.float()).to(q.dtype), (grad_r + neg_r.float()).to(r.dtype), grad_t
