"""Argument checks shared by every public entry point.

Every check runs before any computation and raises ValueError/TypeError naming the
argument, so a user sees `embeddings must be finite` rather than a NaN loss or a kernel
crash three frames down.
"""
from __future__ import annotations

import functools
import numbers
import os

import torch

REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# When the checks that read input values run — NaN/Inf in embeddings, a tensor temperature's
# range, explicit indices inside their row range. They need the tensor's values on the host:
# free on the CPU, a device synchronization on a GPU (a stall of every training step).
#   "auto"    check tensors that are not on a CUDA device (the default)
#   "always"  check every tensor, CUDA too (debugging: a clear error at the first bad batch)
#   "never"   never check (non-finite input then gives NaN/Inf results, as PyTorch ops do; an
#             index out of range fails in the indexing op itself, on CUDA as a device-side assert)
CHECK_FINITE_MODES = ("auto", "always", "never")
CHECK_FINITE_ENV = "FASTCONTRAST_CHECK_FINITE"
_check_finite = None


def set_check_finite(mode: str) -> None:
    """Choose, for this process, when loss inputs are checked for NaN/Inf (and, with the same
    rule, when explicit indices are checked against their row range).

    "auto" checks tensors that are not on a CUDA device (no host sync on GPU), "always" checks
    every tensor, "never" none; the default comes from FASTCONTRAST_CHECK_FINITE, else "auto".

    Args:
        mode (str): "auto", "always" or "never".

    Returns:
        None.

    Raises:
        ValueError: an unknown mode.

    Example:
        >>> import fastcontrast as fc
        >>> fc.set_check_finite("always")
        >>> fc.set_check_finite("auto")
    """
    global _check_finite
    check_choice(mode, "mode", CHECK_FINITE_MODES)
    _check_finite = mode


def check_finite_mode() -> str:
    if _check_finite is not None:
        return _check_finite
    mode = os.environ.get(CHECK_FINITE_ENV, "auto").strip().lower() or "auto"
    if mode not in CHECK_FINITE_MODES:
        raise ValueError(f"environment variable {CHECK_FINITE_ENV} must be one of "
                         f"{', '.join(CHECK_FINITE_MODES)}; got {mode!r}")
    return mode


def _values_checked(x: torch.Tensor) -> bool:
    """Whether a check that reads x's values runs now (never while torch.compile traces: a
    data-dependent branch would split the graph)."""
    if _compiling():
        return False
    mode = check_finite_mode()
    return mode == "always" or (mode == "auto" and x.device.type != "cuda")


def index_range_ok(t: torch.Tensor, size: int) -> bool:
    """Whether the integer tensor t lies in [0, size): True without reading it where
    _values_checked says no (then an index out of range fails in the indexing op itself)."""
    if t.numel() == 0 or not _values_checked(t):
        return True
    low, high = torch.stack(torch.aminmax(t.detach())).tolist()
    return low >= 0 and high < size


def check_disjoint_pairs(pos: torch.Tensor, neg: torch.Tensor) -> None:
    """indices_tuple as boolean B×N pair masks: no pair both positive and negative (read
    where _values_checked allows)."""
    if _values_checked(pos) and bool((pos & neg).any()):
        raise ValueError("indices_tuple: a pair is listed both as positive and as negative")


def check_tensor(x, name: str) -> None:
    """A dense tensor with data: not sparse, not a meta tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor: it has a shape but no values to compute a loss of")


def check_embeddings(x: torch.Tensor, name: str = "embeddings") -> None:
    check_tensor(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero columns: the embedding dimension must be >= 1")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")
    # min and max propagate NaN and expose ±Inf: one reduction, no B×D boolean tensor.
    if _values_checked(x):
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
    check_tensor(labels, name)
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


def check_query_keys(query, keys, labels=None, ref_labels=None):
    """Validate the (query, keys[, labels, ref_labels]) inputs of the paired losses (InfoNCE,
    SigLIP): without labels query i's positive is key i, so keys must be at least as many."""
    check_embeddings(query, "query")
    check_embeddings(keys, "keys")
    check_pair(query, keys, "query", "keys")
    if (labels is None) != (ref_labels is None):
        raise ValueError("labels and ref_labels must be given together")
    if labels is not None:
        check_labels(labels, query.shape[0], "labels", "query", query.device)
        check_labels(ref_labels, keys.shape[0], "ref_labels", "keys", keys.device)
    elif keys.shape[0] < query.shape[0]:
        raise ValueError(f"keys has {keys.shape[0]} rows but query has {query.shape[0]}: "
                         "query i's positive is key i")


def check_positive(value, name: str, allow_tensor: bool = False, dtype: torch.dtype | None = None) -> None:
    """A strictly positive finite number (temperature, scale); with `dtype`, also one whose
    value and reciprocal are normal numbers of that dtype's compute dtype (1/τ multiplies
    every logit). A tensor's value is read only where _values_checked allows (no sync on CUDA)."""
    if isinstance(value, torch.Tensor):
        if not allow_tensor:
            raise TypeError(f"{name} must be a number, got a tensor")
        check_tensor(value, name)
        if value.is_complex() or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real number, got a tensor of {value.dtype}")
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        if not _values_checked(value):
            return
        v = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (v > 0) or v != v or v == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    if dtype is not None:
        info = torch.finfo(_compute(dtype))
        if v < info.tiny or v > info.max or 1.0 / v > info.max:
            raise ValueError(f"{name}={v} is outside the range {_compute(dtype)} computes in "
                             f"(it and 1/{name} must lie in [{info.tiny:.3g}, {info.max:.3g}])")


def _compute(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_fits(value: float, name: str, dtype: torch.dtype, power: int = 1) -> None:
    """A margin whose power-th power is a finite number of the compute dtype of `dtype`."""
    limit = torch.finfo(_compute(dtype)).max ** (1.0 / power) / 2.0
    if abs(value) > limit:
        what = f"{name}**{power}" if power > 1 else name
        raise ValueError(f"{name}={value} is too large: {what} overflows {_compute(dtype)} "
                         f"(|{name}| must be at most {limit:.3g})")


def full_precision(fn):
    """Runs fn with autocast off: a loss computes in its own accumulation dtype (float32 for
    16-bit inputs) whatever autocast region it is called from, and returns float32."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        active = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
        if not active:
            return fn(*args, **kwargs)
        with _autocast_off(active):
            return fn(*args, **kwargs)
    return wrapper


class _autocast_off:
    def __init__(self, devices):
        self.contexts = [torch.autocast(device_type=d, enabled=False) for d in devices]

    def __enter__(self):
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.contexts):
            c.__exit__(*exc)
        return False


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
