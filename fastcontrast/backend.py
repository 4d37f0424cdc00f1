"""Which implementation computes a loss: the Triton kernels or the PyTorch path.

`backend="auto" | "triton" | "torch"` on every functional call and module; the process-wide
default comes from the environment variable FASTCONTRAST_BACKEND (default "auto").

- "auto": Triton for CUDA tensors when Triton imports, PyTorch otherwise.
- "triton": the Triton kernels, or a clear RuntimeError when they cannot run. Under
  TRITON_INTERPRET=1 (set before triton is imported) they run on CPU tensors, which is how
  CI tests them.
- "torch": the memory-lean PyTorch path.
"""
from __future__ import annotations

import functools
import os

import torch

from ._validation import check_choice

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "FASTCONTRAST_BACKEND"


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_import_error() -> str | None:
    """None when triton imports, otherwise the reason it does not."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}"
    return None


def default_backend() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"environment variable {ENV_VAR} must be one of {', '.join(BACKENDS)}; got {value!r}")
    return value


def resolve_backend(backend: str | None, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The implementation ("triton" or "torch") that computes a loss of tensors on `device`.

    None or "auto" picks the Triton kernels for CUDA tensors when triton imports and the
    PyTorch path otherwise (float64 always the PyTorch path); the default comes from the
    environment variable FASTCONTRAST_BACKEND.

    Args:
        backend (str or None): "auto", "triton", "torch" or None (the environment's default).
        device (torch.device): where the embeddings are.
        dtype (torch.dtype or None, default None): the embeddings' dtype, when known.

    Returns:
        str: "triton" or "torch".

    Raises:
        ValueError: an unknown backend name.
        TypeError: "triton" asked for float64 embeddings.
        RuntimeError: "triton" asked for but triton does not import, or the tensors are on CPU
            without TRITON_INTERPRET=1.

    Example:
        >>> import torch, fastcontrast as fc
        >>> fc.resolve_backend("auto", torch.device("cpu"))
        'torch'
    """
    if backend is None:
        backend = default_backend()
    check_choice(backend, "backend", BACKENDS)
    if backend == "torch":
        return "torch"
    if dtype == torch.float64:
        if backend == "auto":
            return "torch"
        raise TypeError("backend='triton' takes float32, float16 or bfloat16 embeddings, got torch.float64; "
                        "use backend='torch' (or 'auto') for float64")
    if backend == "auto":
        # checked in this order so that CPU work never pays for importing triton
        return "triton" if (device.type == "cuda" and triton_import_error() is None) else "torch"
    triton_ok = triton_import_error() is None
    # explicit "triton"
    if not triton_ok:
        raise RuntimeError(f"backend='triton' was asked for but triton does not import ({triton_import_error()})")
    if device.type == "cuda" or (device.type == "cpu" and interpreter_enabled()):
        return "triton"
    raise RuntimeError(
        f"backend='triton' needs CUDA tensors (got {device.type}); on CPU set TRITON_INTERPRET=1 "
        "before importing triton to run the kernels in the interpreter, or use backend='torch'"
    )
