"""Test-wide set-up.

Without a GPU the Triton kernels run in the interpreter: TRITON_INTERPRET must be set
before triton is imported, so it is set here, first. With a GPU, the real kernels run.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Tolerances by compute dtype, stated once: (rtol, atol).
TOL = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (2e-4, 2e-5),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


def assert_close(actual, expected, dtype=None, rtol=None, atol=None, msg=""):
    dtype = dtype or (expected.dtype if isinstance(expected, torch.Tensor) else torch.float64)
    r, a = TOL[dtype]
    torch.testing.assert_close(
        torch.as_tensor(actual).double().cpu(), torch.as_tensor(expected).double().cpu(),
        rtol=r if rtol is None else rtol, atol=a if atol is None else atol, msg=msg or None)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def devices():
    """CPU always; CUDA when present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def triton_available():
    from fastcontrast.backend import triton_import_error
    return triton_import_error() is None
