"""The SupContrast reference SupConLoss (Khosla et al.), computed by fastcontrast.

    criterion = SupConLoss(temperature=0.07, contrast_mode="all", base_temperature=0.07)
    loss = criterion(features, labels=None, mask=None)     # features [B, V, D]

Same conventions as the reference (after its December 2023 fix):
- the B·V views form the contrast set; anchors are all views ("all") or view 0 of each
  sample ("one"); each anchor is compared with every view but itself;
- positives: views with the same label (`labels`), the other views of the same sample
  (neither given: SimCLR), or an explicit B×B `mask` (mask[i, j] weighs sample j as a
  positive of sample i; it may be asymmetric);
- loss_i = −(τ/τ_base) · mean_{p∈P(i)} (s_ip/τ − LSE_{j≠i} s_ij/τ), s = dot product (the
  features are NOT normalized here); an anchor without positives gives 0 but still counts
  in the mean over anchors.
With labels (or neither) the computation is fastcontrast's chunked softmax (memory
O(chunk·B·V)); an explicit `mask` can express any relation, so that case builds the dense
(B·V)×(B·V) logits. Features with more than three dimensions are flattened after the
second, as in the reference. The result has the features' dtype.
"""
from __future__ import annotations

import torch

from .._validation import check_choice, check_embeddings, check_positive
from ..metrics import compute_dtype
from ..softmax import _temperature_tensor, softmax_values

__all__ = ["SupConLoss"]

CONTRAST_MODES = ("all", "one")


def _label_ids(labels: torch.Tensor, b: int, device) -> torch.Tensor:
    """Any numeric labels → int64 ids with the same equalities."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    labels = labels.reshape(-1)
    if labels.shape[0] != b:
        raise ValueError(f"labels has {labels.shape[0]} entries but features has {b} samples")
    if labels.is_complex():
        raise TypeError(f"labels must be real, got {labels.dtype}")
    if labels.device != device:
        raise ValueError(f"labels is on {labels.device} but features is on {device}")
    if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
        raise ValueError("labels contains NaN or Inf")
    return torch.unique(labels, return_inverse=True)[1].long()


class SupConLoss(torch.nn.Module):
    """SupConLoss(temperature=0.07, contrast_mode="all", base_temperature=0.07)."""

    def __init__(self, temperature=0.07, contrast_mode="all", base_temperature=0.07, backend=None):
        super().__init__()
        check_positive(temperature, "temperature", allow_tensor=True)
        check_positive(base_temperature, "base_temperature")
        check_choice(contrast_mode, "contrast_mode", CONTRAST_MODES)
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = float(base_temperature)
        self.backend = backend

    def forward(self, features, labels=None, mask=None):
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() < 3:
            raise ValueError(f"features must be [batch, n_views, ...], got shape {tuple(features.shape)}")
        if labels is not None and mask is not None:
            raise ValueError("give labels or mask, not both")
        b, v = features.shape[0], features.shape[1]
        views = features.reshape(b, v, -1).transpose(0, 1).reshape(b * v, -1)  # row = view·B + sample
        check_embeddings(views, "features")
        if mask is not None:
            return self._with_mask(views, b, v, mask).to(features.dtype)
        ids = (torch.arange(b, device=features.device) if labels is None
               else _label_ids(labels, b, features.device))
        view_ids = ids.repeat(v)
        anchors = views if self.contrast_mode == "all" else views[:b]
        values, _ = softmax_values(anchors, views, view_ids[:anchors.shape[0]], view_ids, kind="dot",
                                   variant="supcon", self_offset=0, temperature=self.temperature,
                                   backend=self.backend)
        scale = self._scale(values)
        return (scale * values.mean()).to(features.dtype)

    def _scale(self, like):
        return _temperature_tensor(self.temperature, like) / self.base_temperature

    def _with_mask(self, views, b, v, mask):
        """Dense path for an explicit B×B positive mask (weights allowed)."""
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.shape != (b, b):
            raise ValueError(f"mask must have shape [batch, batch] = [{b}, {b}], got {tuple(mask.shape)}")
        if mask.device != views.device:
            raise ValueError(f"mask is on {mask.device} but features is on {views.device}")
        cd = compute_dtype(views.dtype)
        x = views.to(cd)
        n_anchor = b * v if self.contrast_mode == "all" else b
        logits = x[:n_anchor] @ x.T / _temperature_tensor(self.temperature, x)
        others = torch.ones_like(logits, dtype=torch.bool)
        others[torch.arange(n_anchor), torch.arange(n_anchor)] = False
        weights = mask.to(cd).repeat(n_anchor // b, v) * others
        lse = logits.masked_fill(~others, float("-inf")).logsumexp(1, keepdim=True)
        total = weights.sum(1)
        pos_mean = (weights * (logits - lse)).sum(1) / torch.where(total < 1e-6, torch.ones_like(total), total)
        return -(self._scale(x) * pos_mean).mean()
