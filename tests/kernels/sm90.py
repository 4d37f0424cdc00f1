"""Building kernels for an H100 (sm_90) target on a machine without a GPU.

The interpreter skips what only a GPU build checks (tl.dot shapes and operand types,
constexpr globals, loop-carried types, register use); Triton's CUDA pipeline (TTIR → PTX →
cubin with the ptxas it ships) runs without a GPU. The kernels must be built in a process
without TRITON_INTERPRET (in the test process they are interpreter objects): a test gives
`run_script` a script that imports its kernels and calls `build_all`.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_TOOLCHAIN = 3  # exit status of a script whose triton has no CUDA backend


def build_all(builds, floats=("near_tol",)):
    """builds: (kernel, pointer types by argument name, constexprs by name, launch options);
    each is compiled by fastcontrast.bench.sm90.compile_for_sm90 (signature from names)."""
    from triton.backends import backends

    from fastcontrast.bench.sm90 import compile_for_sm90

    if "nvidia" not in backends:
        print("this triton has no CUDA backend")
        sys.exit(NO_TOOLCHAIN)
    for kernel, pointers, constexprs, options in builds:
        compile_for_sm90(kernel, pointers, constexprs, options, floats)
    print("compiled", len(builds))


def run_script(script: str) -> str:
    """Runs a build script in a fresh process; its stdout. Skips when the toolchain is missing."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode == NO_TOOLCHAIN:
        pytest.skip(proc.stdout.strip())
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("no ptxas in this triton installation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
