"""The argument checks shared by the TF Addons functions that take a dense y_pred."""
from __future__ import annotations

import torch


def check_targets_and_scores(y_true, y_pred, what: str = "a torch.Tensor") -> None:
    """Types, dtypes, devices and finiteness of (y_true, y_pred); each function checks shapes."""
    if not isinstance(y_pred, torch.Tensor):
        raise TypeError(f"y_pred must be {what}, got {type(y_pred).__name__}")
    if not y_pred.is_floating_point():
        raise TypeError(f"y_pred must be a floating-point tensor, got {y_pred.dtype}")
    if not isinstance(y_true, torch.Tensor):
        raise TypeError(f"y_true must be a torch.Tensor, got {type(y_true).__name__}")
    if y_true.is_complex():
        raise TypeError(f"y_true must be real, got {y_true.dtype}")
    if y_true.device != y_pred.device:
        raise ValueError(f"y_true is on {y_true.device} but y_pred is on {y_pred.device}")
    if not bool(torch.isfinite(y_pred).all()):
        raise ValueError("y_pred contains NaN or Inf")
