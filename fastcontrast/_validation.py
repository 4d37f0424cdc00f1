"""Argument checks shared by every public entry point.

Every check runs before any computation and raises ValueError/TypeError naming the
argument, so a user sees `embeddings must be finite` rather than a NaN loss or a kernel
crash three frames down.
"""
from __future__ import annotations

import numbers

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_embeddings(x: torch.Tensor, name: str = "embeddings") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero columns: the embedding dimension must be >= 1")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    # skipped while torch.compile traces (a data-dependent branch would split the graph).
    # min and max propagate NaN and expose ±Inf: one reduction, no B×D boolean tensor.
    if not _compiling():
        bounds = torch.stack(torch.aminmax(x.detach()))
        if not bool(torch.isfinite(bounds).all()):
            raise ValueError(f"{name} contains NaN or Inf")


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def check_labels(labels: torch.Tensor, n: int, name: str = "labels",
                 emb_name: str = "embeddings", device: torch.device | None = None) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {emb_name} has {n} rows")
    if device is not None and labels.device != device:
        raise ValueError(f"{name} is on {labels.device} but {emb_name} is on {device}")


def check_pair(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    """Two embedding tensors that are compared with each other."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{y_name} has dimension {y.shape[1]} but {x_name} has {x.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"{y_name} is on {y.device} but {x_name} is on {x.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"{y_name} has dtype {y.dtype} but {x_name} has {x.dtype}")


def check_query_ref(embeddings, labels, ref_emb=None, ref_labels=None):
    """Validate the (embeddings, labels[, ref_emb, ref_labels]) quadruple every loss takes."""
    check_embeddings(embeddings, "embeddings")
    check_labels(labels, embeddings.shape[0], "labels", "embeddings", embeddings.device)
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    if ref_emb is not None:
        check_embeddings(ref_emb, "ref_emb")
        check_pair(embeddings, ref_emb, "embeddings", "ref_emb")
        check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb", ref_emb.device)


def check_positive(value, name: str, allow_tensor: bool = False) -> None:
    """A strictly positive number (temperature, scale)."""
    if isinstance(value, torch.Tensor):
        if not allow_tensor:
            raise TypeError(f"{name} must be a number, got a tensor")
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        v = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (v > 0) or v != v or v == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def check_real(value, name: str, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_reduction(reduction: str) -> None:
    check_choice(reduction, "reduction", REDUCTIONS)
