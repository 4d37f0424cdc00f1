"""Keras' loss-object conventions for the TF Addons class forms.

tf.keras.losses.Loss(reduction, name) is called as loss(y_true, y_pred, sample_weight=None)
and does, in this order (Keras 2, the Keras TF Addons 0.23 runs on):

1. values = the loss function's output (one value per entry for contrastive_loss, a
   single scalar per batch for the triplet and N-pairs losses);
2. sample_weight (default 1) is aligned with values: a scalar weight is used as is; a weight
   whose rank exceeds the values' rank by one loses its last axis, which must have size 1
   (so a [B] weight vector against a scalar batch loss is an error unless B = 1, while a
   [B, 1] weight broadcasts, giving B weighted copies of the scalar); a weight one rank
   short gains a trailing axis of size 1;
3. weighted = values · weight, broadcast;
4. reduction: "none" returns weighted, "sum" its sum, "sum_over_batch_size" its sum divided
   by its number of elements (0 when empty); "auto" means "sum_over_batch_size".

(Keras' Model.fit/evaluate expand a [B] sample_weight to [B, 1] when y_pred is 2-D before
they call the loss object, so under fit a per-sample weight vector reaches a scalar batch
loss as the broadcasting [B, 1] case; pass sample_weight[:, None] for the same result here.)

`KerasLoss` implements that for every class here; the per-batch arithmetic runs in float32
for fp16/bf16 values (float64 stays float64) and the result has the values' dtype.
"""
from __future__ import annotations

import numbers

import torch

REDUCTIONS = ("auto", "none", "sum", "sum_over_batch_size")


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str):
        raise TypeError(f"reduction must be a string, got {type(reduction).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {reduction!r}")
    return reduction


def check_name(name, optional: bool):
    if name is None and optional:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a string{' or None' if optional else ''}, got {type(name).__name__}")
    return name


def _weight_tensor(sample_weight, like: torch.Tensor) -> torch.Tensor:
    if isinstance(sample_weight, torch.Tensor):
        if sample_weight.is_complex() or sample_weight.dtype == torch.bool:
            raise TypeError(f"sample_weight must be real numbers, got {sample_weight.dtype}")
        if sample_weight.device != like.device:
            raise ValueError(f"sample_weight is on {sample_weight.device} but y_pred is on {like.device}")
        w = sample_weight
    elif isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        w = torch.tensor(float(sample_weight), device=like.device)
    else:
        raise TypeError(f"sample_weight must be a number or a torch.Tensor, got {type(sample_weight).__name__}")
    w = w.to(torch.float64 if like.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("sample_weight contains NaN or Inf")
    return w


def align_weights(values_shape, sample_weight, like: torch.Tensor):
    """Step 2 of the module docstring: the checked, aligned weight tensor (in `like`'s compute
    dtype) and the shape of the weighted values. Needs only the values' shape, so it runs
    before the loss is computed."""
    compute = torch.float64 if like.dtype == torch.float64 else torch.float32
    if sample_weight is None:
        return torch.ones((), dtype=compute, device=like.device), torch.Size(values_shape)
    w = _weight_tensor(sample_weight, like).to(compute)
    rank = len(values_shape)
    if w.dim() > 0:
        if w.dim() - rank == 1:
            if w.shape[-1] != 1:
                raise ValueError(f"sample_weight has shape {tuple(w.shape)}: one axis more than the loss values "
                                 f"{tuple(values_shape)}, so Keras squeezes its last axis, which must have size 1")
            w = w.squeeze(-1)
        elif rank - w.dim() == 1:
            w = w.unsqueeze(-1)
    try:
        shape = torch.broadcast_shapes(torch.Size(values_shape), w.shape)
    except RuntimeError:
        raise ValueError(f"sample_weight of shape {tuple(w.shape)} does not broadcast against the loss "
                         f"values of shape {tuple(values_shape)}") from None
    return w, shape


def reduce_weighted(values: torch.Tensor, w: torch.Tensor, shape, reduction: str) -> torch.Tensor:
    """Steps 3–4: values · w, then the reduction; computed in w's dtype, returned in values'."""
    weighted = values.to(w.dtype) * w
    if reduction == "none":
        out = weighted
    elif reduction == "sum":
        out = weighted.sum()
    else:  # "sum_over_batch_size" and "auto"
        n = shape.numel()
        out = weighted.sum() / n if n else weighted.sum() * 0
    return out.to(values.dtype)


def apply_weights(values: torch.Tensor, sample_weight, reduction: str) -> torch.Tensor:
    """Steps 2–4 of the module docstring on `values` (the loss function's output)."""
    w, shape = align_weights(values.shape, sample_weight, values)
    return reduce_weighted(values, w, shape, check_reduction(reduction))


class KerasLoss(torch.nn.Module):
    """Base of the TF Addons class forms: name, reduction, get_config/from_config and the
    sample-weighted call. Subclasses define `values(y_true, y_pred)`, `values_shape(y_pred)`
    (the shape of what values returns, known before computing it) and `_fn_config()`."""

    def __init__(self, reduction: str, name, name_optional: bool):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.name = check_name(name, name_optional)

    def values(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def values_shape(self, y_pred):
        return ()  # one scalar per batch

    def _fn_config(self) -> dict:
        return {}

    def forward(self, y_true, y_pred, sample_weight=None):
        """loss(y_true, y_pred, sample_weight=None), with Keras' weighting and reduction."""
        if isinstance(y_pred, torch.Tensor) and y_pred.is_floating_point():
            w, shape = align_weights(self.values_shape(y_pred), sample_weight, y_pred)
        else:
            w = shape = None  # the loss function raises the TypeError naming y_pred
        values = self.values(y_true, y_pred)
        if w is None:
            w, shape = align_weights(values.shape, sample_weight, values)
        return reduce_weighted(values, w, shape, self.reduction)

    def get_config(self) -> dict:
        """Keras' config: reduction and name, then the loss function's own arguments."""
        return {"reduction": self.reduction, "name": self.name, **self._fn_config()}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)
