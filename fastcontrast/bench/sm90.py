"""Kernels compiled for an H100/H200 (sm_90) target on a machine without a GPU, and what their
machine code says: registers, stack (spills), shared memory, and the main loop's instruction
mix (HGMMA tensor-core ops against integer ISETP/LOP3 and MUFU special functions).

Triton's CUDA pipeline (TTIR → TTGIR → PTX → cubin, with the ptxas and cuobjdump it ships)
runs without a GPU; it must run in a process without TRITON_INTERPRET. Used by the sm_90 build
tests (tests/kernels/sm90.py) and by bench/static_report.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

TARGET_ARCH = 90


def compile_for_sm90(kernel, pointers: dict, constexprs: dict, options: dict | None = None,
                     floats=("near_tol",), divisible=()):
    """triton.compile of a @triton.jit kernel for sm_90. Signature from argument names: a
    pointer argument (…_ptr) not in `pointers` is *fp32, a scalar in `floats` fp32, any other i32.
    `divisible`: arguments marked as multiples of 16 (pointers: 16-byte aligned), as Triton's
    launcher specializes them when the values are (e.g. a row stride of 128): "*" stands for
    every pointer argument. Without it strides are unknown and row loads are not vectorized."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = pointers.get(name, "*fp32")
        else:
            sig[name] = "fp32" if name in floats else "i32"
    keyed = {(kernel.arg_names.index(name),): value for name, value in constexprs.items()}
    marked = [name for name in kernel.arg_names if sig[name] != "constexpr" and
              (name in divisible or ("*" in divisible and sig[name].startswith("*")))]
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in marked}
    return triton.compile(ASTSource(kernel, sig, keyed, attrs), target=GPUTarget("cuda", TARGET_ARCH, 32),
                          options=options or {})


def _cuobjdump() -> str:
    import triton
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


OPCLASSES = {"HGMMA": "HGMMA", "HMMA": "HMMA", "MUFU": "MUFU", "ISETP": "ISETP", "LOP3": "LOP3",
             "LDG": "LDG", "LDS": "LDS", "LDGSTS": "LDGSTS", "STG": "STG", "LDL": "LDL", "STL": "STL",
             "FFMA": "FFMA", "FMUL": "FMUL", "FADD": "FADD", "BAR": "BAR"}


def _loops(sass: list[str]):
    """(start, end) instruction ranges of backward branches: loop bodies."""
    addr = {}
    for k, line in enumerate(sass):
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/", line)
        if m:
            addr[int(m.group(1), 16)] = k
    out = []
    for k, line in enumerate(sass):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", line)
        if m:
            target = int(m.group(1), 16)
            if target in addr and addr[target] < k:
                out.append((addr[target], k))
    return out


def resource_report(compiled) -> dict:
    """Registers, stack, shared memory and the largest loop's instruction mix of a compiled
    kernel (cuobjdump -res-usage and -sass of its cubin); `pipelined`: the TTGIR has async
    copies or warp-group dots (Hopper's software pipelining)."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        res = subprocess.run([_cuobjdump(), "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_cuobjdump(), "-sass", cubin], capture_output=True, text=True, check=True).stdout
    usage = {k.lower(): int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res)}
    lines = [line for line in sass.splitlines() if re.match(r"\s*/\*[0-9a-f]{4,}\*/", line)]
    loops = _loops(lines)
    body = max(loops, key=lambda r: r[1] - r[0]) if loops else (0, len(lines) - 1)
    mix = Counter()
    for line in lines[body[0]:body[1] + 1]:
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", line)
        if m:
            op = m.group(1)
            mix[OPCLASSES.get(op, "other")] += 1
    ttgir = compiled.asm.get("ttgir", "")
    spills = sum(1 for line in lines if re.search(r"\b(LDL|STL)\b", line))
    return {"registers": usage.get("reg"), "stack_bytes": usage.get("stack", 0), "shared_bytes": usage.get("shared"),
            "local_bytes": usage.get("local", 0), "spill_instructions": spills,
            "instructions": len(lines), "loops": len(loops), "main_loop_instructions": body[1] - body[0] + 1,
            "loop_instructions": [end - start + 1 for start, end in loops],  # every loop, in code order
            "main_loop_mix": dict(sorted(mix.items())),
            "pipelined": bool(re.search(r"async_copy|warp_group_dot|async_tma", ttgir))}
