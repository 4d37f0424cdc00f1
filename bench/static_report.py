"""The sm_90 static report of the benchmarked kernel variants, made on a machine without a GPU:
per kernel, registers, stack (spill) bytes, shared memory, the main loop's instruction count
and mix, and whether the TTGIR is software-pipelined (fastcontrast/bench/sm90.py).

    .venv/bin/python bench/static_report.py [--out bench/results]   (writes sm90-static-<triton>.json
                                                                      and prints a markdown table)

Regenerate it whenever a kernel changes; tests/kernels/test_static_report.py fails on a stack
spill in these configurations. (Under TRITON_INTERPRET=1 nothing can be built: run it plainly.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Arguments Triton's launcher specializes as multiples of 16 at the benchmark shape (B = N =
# 16384, D = 128: aligned pointers, row strides 128): the softmax rows and the yardstick are
# built with them marked, as they run (vectorized, asynchronous row loads).
SOFTMAX_DIVISIBLE = ("*", "M", "N", "stride_q", "stride_r", "stride_gq", "stride_gr")


def variants():
    """(name, kernel, pointer types, constexprs, options) at the benchmark shapes (D = 128);
    options may carry "divisible" (compile_for_sm90's argument, not a launch option)."""
    import torch
    from fastcontrast.kernels import pair_margin as pm
    from fastcontrast.kernels import softmax as sm

    cuda = torch.device("cuda")
    out = []
    for variant_name, variant in (("supcon", 0), ("ntxent", 1)):
        b = sm.default_blocks(128, torch.bfloat16, cuda, variant_name)
        ptrs = {"q_ptr": "*bf16", "r_ptr": "*bf16", "grad_q_ptr": "*bf16", "grad_r_ptr": "*bf16",
                "q_lab_ptr": "*i32", "r_lab_ptr": "*i32", "r_count_ptr": "*i32", "label_start_ptr": "*i32",
                "n_pos_ptr": "*i64"}
        opts = dict(num_warps=b.num_warps, num_stages=b.num_stages, divisible=SOFTMAX_DIVISIBLE)
        if variant_name == "supcon":
            out.append(_yardstick(b, opts))
        common = dict(D=128, KIND=0, VARIANT=variant, PRECISION="ieee")
        out.append((f"softmax fwd {variant_name} dot bf16", sm._softmax_fwd_kernel, ptrs,
                    dict(common, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, BLOCK_D=b.fwd_d, MASKED_REFS=False), opts))
        if variant_name == "ntxent":  # its positive pass over label-sorted rows (a second launch)
            out.append(("softmax fwd ntxent positive pass dot bf16", sm._ntxent_positive_kernel,
                        dict(ptrs, q_order_ptr="*i32", self_ptr="*i32"),
                        dict(D=128, KIND=0, PRECISION="ieee", BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, BLOCK_D=b.fwd_d),
                        opts))
        if variant_name == "supcon":
            bwd = dict(common, SYMMETRIC=False, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_D=b.bwd_d,
                       BLOCK_DO=b.block_do, ROW_BOUNDS=False, MASKED_REFS=False)
            out.append(("softmax bwd_q supcon dot bf16", sm._softmax_bwd_q_kernel, ptrs,
                        dict(bwd, TAU_GRAD=True, BIAS_GRAD=False), opts))
            out.append(("softmax bwd_r supcon dot bf16", sm._softmax_bwd_r_kernel, ptrs, bwd, opts))
            out.append(("softmax bwd one-pass supcon dot bf16", sm._softmax_bwd_kernel,
                        dict(ptrs, turn_ptr="*i32"), dict(bwd, TAU_GRAD=True, BIAS_GRAD=False), opts))
            # D = 1024: the one-pass kernel computes each tile once for its eight 128-wide gradient
            # chunks; the per-chunk kernels recompute the full-D tile in each chunk's programs
            wide = sm.default_blocks(1024, torch.bfloat16, cuda, variant_name)
            bwd_wide = dict(common, D=1024, SYMMETRIC=False, BLOCK_M=wide.bwd_m, BLOCK_N=wide.bwd_n,
                            BLOCK_D=wide.bwd_d, BLOCK_DO=wide.block_do, ROW_BOUNDS=False,
                            MASKED_REFS=False)
            wide_opts = dict(num_warps=wide.num_warps, num_stages=wide.num_stages, divisible=SOFTMAX_DIVISIBLE)
            out.append(("softmax bwd one-pass supcon dot bf16 D=1024", sm._softmax_bwd_kernel,
                        dict(ptrs, turn_ptr="*i32"), dict(bwd_wide, TAU_GRAD=True, BIAS_GRAD=False), wide_opts))
            out.append(("softmax bwd_q supcon dot bf16 D=1024", sm._softmax_bwd_q_kernel, ptrs,
                        dict(bwd_wide, TAU_GRAD=True, BIAS_GRAD=False), wide_opts))
            out.append(("softmax bwd_r supcon dot bf16 D=1024", sm._softmax_bwd_r_kernel, ptrs, bwd_wide,
                        wide_opts))
    for dtype, ty, label, precision in ((torch.bfloat16, "*bf16", "bf16", "ieee"),
                                        (torch.float32, "*fp32", "fp32", "ieee"),
                                        (torch.float32, "*fp32", "tf32", "tf32")):
        b = pm.default_blocks(128, dtype, cuda, precision)
        ptrs = {"q_ptr": ty, "r_ptr": ty, "grad_q_ptr": ty, "grad_r_ptr": ty, "q_lab_ptr": "*i32",
                "r_lab_ptr": "*i32", "counts_ptr": "*i64", "nonzero_ptr": "*i64"}
        opts = dict(num_warps=b.num_warps, num_stages=b.num_stages)
        common = dict(D=128, KIND=2, NEGATE=False, POWER=1, FILTERED=False, PRECISION=precision, HAS_SHIFT=False,
                      BLOCK_D=b.block_d, ROW_BOUNDS=False)
        bwd = dict(common, BLOCK_M=b.bwd_m, BLOCK_N=b.bwd_n, BLOCK_DO=b.block_do)
        out.append((f"pair-margin fwd euclidean {label}", pm._pair_margin_fwd_kernel, ptrs,
                    dict(common, BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n), opts))
        out.append((f"pair-margin bwd_q euclidean {label}", pm._pair_margin_bwd_q_kernel, ptrs, bwd, opts))
        out.append((f"pair-margin bwd_r euclidean {label}", pm._pair_margin_bwd_r_kernel, ptrs, bwd, opts))
    out.extend(triplet_variants())
    return out


def triplet_variants():
    """The triplet kernels at their GPU launch settings (kernels/triplet.py: the distance tiles
    and warps of _tile_blocks per input type, SEARCH_BLOCK lanes and 4 warps for the
    sorted-path searches at N = 65536)."""
    import torch
    from fastcontrast.kernels import triplet as kt

    cuda = torch.device("cuda")
    opts = dict(num_warps=4, num_stages=3)
    out = []
    for dtype, ty, label, precision in ((torch.bfloat16, "*bf16", "bf16", "ieee"),
                                        (torch.float32, "*fp32", "fp32", "ieee"),
                                        (torch.float32, "*fp32", "tf32", "tf32")):
        tile_ptrs = {"q_ptr": ty, "r_ptr": ty, "q_lab_ptr": "*i32", "r_lab_ptr": "*i32"}
        for kernel, name, extra in ((kt._distance_rows_kernel, "distance rows", {}),
                                    (kt._batch_hard_kernel, "batch-hard",
                                     dict(p_idx_ptr="*i64", n_idx_ptr="*i64", f_idx_ptr="*i64"))):
            bm, bn, bd, warps = kt._tile_blocks(cuda, dtype, precision, "rows" if extra == {} else "batch_hard")
            out.append((f"triplet {name} euclidean {label}", kernel, dict(tile_ptrs, **extra),
                        dict(KIND=2, NEGATE=False, PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd),
                        dict(num_warps=warps, num_stages=3,
                             divisible=("*", "M", "N", "D", "row_end", "stride_q", "stride_r"))))
    search = dict(LOG_N=17, BLOCK=kt.SEARCH_BLOCK)   # N = 65536
    grouped = dict(r_perm_ptr="*i32", start_ptr="*i32", end_ptr="*i32")   # kernels/triplet._grouping
    out.append(("triplet window fwd semihard", kt._window_forward_kernel,
                dict(prefix_ptr="*fp64", n_neg_ptr="*i32", n_pos_ptr="*i32", values_ptr="*fp64", counts_ptr="*i64",
                     nonzero_ptr="*i64"),
                dict(MODE=3, KEEP=0, COLS=kt.WINDOW_COLS, **search), opts))
    out.append(("triplet window weights semihard", kt._window_weights_kernel,
                dict(n_pos_ptr="*i32", n_neg_ptr="*i32", **grouped),
                dict(MODE=3, KEEP=0, KIND=2, NEGATE=False, **search),
                opts))
    return out


# Triplet configurations whose launches are counted at B = N = 65536 (D = 128, bf16 inputs).
TRIPLET_LAUNCH_CASES = {
    "semihard": dict(mining="semihard", margin=0.2, miner_margin=0.2),
    "batch_all": dict(mining="batch_all", margin=0.2),
    "all smooth": dict(mining="all", smooth=True, margin=0.2),
    "semihard_tfa": dict(mining="semihard_tfa", margin=0.2),
    "batch_hard": dict(mining="batch_hard", margin=0.2),
}
# the kernels of the compiled triplet rows, by row-name prefix
TRIPLET_ROW_KERNELS = {"triplet distance rows": "_distance_rows_kernel", "triplet batch-hard": "_batch_hard_kernel",
                       "triplet window fwd": "_window_forward_kernel",
                       "triplet window weights": "_window_weights_kernel"}


def triplet_launches(fields: dict, B: int = 65536, D: int = 128, dtype=None) -> dict:
    """The Triton launches of one forward and one backward call of kernels/triplet.py at
    B = N, from its own launch code run on meta tensors (the kernels are recorded, not run;
    tiles as on the GPU): {"fwd"/"bwd": [(kernel name, grid), ...]}. The torch ops between
    them (sorts, prefix sums, matmuls) are not counted."""
    from unittest import mock

    import torch
    from fastcontrast.configs import TripletConfig
    from fastcontrast.kernels import triplet as kt

    calls = []

    class Recorder:
        def __init__(self, kernel):
            self.name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                calls.append((self.name, tuple(int(g) for g in grid)))
            return launch

    gpu_tiles = kt._tile_blocks
    meta = torch.device("meta")
    q = torch.empty((B, D), dtype=dtype or torch.bfloat16, device=meta)
    labels = torch.empty((B,), dtype=torch.int32, device=meta)
    cfg = TripletConfig(**fields)
    codes = kt._codes(cfg)
    out = {}
    with mock.patch.object(kt._host, "launchable", Recorder), \
            mock.patch.object(kt, "_tile_blocks", lambda device, *a, **k: gpu_tiles(torch.device("cuda"), *a, **k)), \
            mock.patch.object(kt.metrics, "pairwise_backward",   # matmuls (its near-pair fix-up needs data)
                              lambda coef, x, y, kind: (torch.empty_like(x), torch.empty_like(y))):
        values, counts, nonzero, *saved = kt._fwd_impl(q, None, labels, None, *codes, 0.0, kt.CHUNK_ELEMENTS)
        out["fwd"], calls[:] = list(calls), []
        kt._bwd_impl(torch.empty((B,), device=meta), q, None, labels, None, *saved, *codes, 0.0, kt.CHUNK_ELEMENTS)
        out["bwd"] = list(calls)
    return out


def programs(grid) -> int:
    n = 1
    for g in grid:
        n *= g
    return n


def triplet_launch_summary(B: int = 65536) -> list[dict]:
    """Per case and direction: Triton launches per call and, per kernel, its launches and the
    fewest / most programs of one launch."""
    rows = []
    for case, fields in TRIPLET_LAUNCH_CASES.items():
        for direction, calls in triplet_launches(fields, B).items():
            kernels = {}
            for name, grid in calls:
                k = kernels.setdefault(name, dict(launches=0, min_programs=None, max_programs=0))
                k["launches"] += 1
                n = programs(grid)
                k["min_programs"] = n if k["min_programs"] is None else min(k["min_programs"], n)
                k["max_programs"] = max(k["max_programs"], n)
            rows.append(dict(case=case, direction=direction, B=B, launches=len(calls), kernels=kernels))
    return rows


def triplet_launch_table(summary: list[dict]) -> str:
    lines = ["| case | pass | Triton launches per call | kernel: launches × programs per launch (fewest–most) |",
             "|---|---|---|---|"]
    for row in summary:
        per = "; ".join(f"{name.strip('_')}: {k['launches']} × {k['min_programs']}"
                        + (f"–{k['max_programs']}" if k["max_programs"] != k["min_programs"] else "")
                        for name, k in row["kernels"].items())
        lines.append(f"| {row['case']} | {row['direction']} | {row['launches']} | {per} |")
    return "\n".join(lines)


YARDSTICK = "yardstick: bf16 QKᵀ + online LSE"


def _yardstick(b, opts):
    """bench/yardstick.py at the softmax forward's tile (BLOCK_M×BLOCK_N, one D step of 128)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import yardstick

    return (f"{YARDSTICK} {b.fwd_m}x{b.fwd_n}", yardstick.lse_tile_kernel, {"q_ptr": "*bf16", "r_ptr": "*bf16"},
            dict(BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, BLOCK_D=128), opts)


def ntxent_visits(labels, block_m: int = 128, block_n: int = 64) -> tuple[int, int]:
    """(tiles the NT-Xent positive pass visits, tiles the LSE pass visits) over all anchor blocks
    (kernels/softmax._ntxent_positive_kernel's range rule: the sorted anchor block with
    labels first … last visits the block_n-aligned tiles covering the sorted columns
    [start(first), end(last))), for anchors = references with these labels (each anchor has
    negatives)."""
    import torch

    y = torch.sort(torch.as_tensor(labels)).values
    n = y.numel()
    counts = torch.bincount(y)
    start = torch.cumsum(counts, 0) - counts
    visits = 0
    for m0 in range(0, n, block_m):
        first, last = int(y[m0]), int(y[min(m0 + block_m, n) - 1])
        lo = int(start[first]) // block_n * block_n
        visits += -(-int(start[last] + counts[last] - lo) // block_n)
    lse_tiles = -(-n // block_n) * -(-n // block_m)
    return visits, lse_tiles


# label sets for the NT-Xent per-tile estimate (B = N): SimCLR's two views per label and ten
# balanced classes, interleaved
NTXENT_LABELS = {"views (2 rows per label)": lambda n: [i // 2 for i in range(n)],
                 "10 classes": lambda n: [(i * 7919) % 10 for i in range(n)]}


def ntxent_per_tile(doc: dict, sizes=(16384, 4096)) -> list[dict]:
    """NT-Xent's forward per tile of work (one LSE-pass tile): the LSE loop's body plus the
    positive pass's body times its visits per LSE tile (static counts, not a measurement)."""
    rows = {r["kernel"]: r for r in doc["kernels"]}
    (stick,) = [r for r in doc["kernels"] if r["kernel"].startswith(YARDSTICK)]
    lse = rows["softmax fwd ntxent dot bf16"]
    pos = rows["softmax fwd ntxent positive pass dot bf16"]
    b = lse["constexprs"]
    out = []
    for n in sizes:
        for name, make in NTXENT_LABELS.items():
            visits, lse_tiles = ntxent_visits(make(n), b["BLOCK_M"], b["BLOCK_N"])
            share = visits / lse_tiles
            per_tile = lse["main_loop_instructions"] + share * pos["main_loop_instructions"]
            out.append(dict(labels=name, B=n, positive_tiles=visits, lse_tiles=lse_tiles,
                            positive_tiles_per_lse_tile=round(share, 4),
                            instructions_per_tile=round(per_tile, 1),
                            vs_yardstick=round(per_tile / stick["main_loop_instructions"], 2)))
    return out


def ntxent_table(doc: dict) -> str:
    lines = ["| NT-Xent forward, B = N | labels | positive-pass tiles per LSE tile | instr per tile of work | "
             "× yardstick |", "|---|---|---|---|---|"]
    for r in doc["ntxent_per_tile"]:
        lines.append(f"| {r['B']} | {r['labels']} | {r['positive_tiles_per_lse_tile']} | "
                     f"{r['instructions_per_tile']} | {r['vs_yardstick']} |")
    return "\n".join(lines)


def build() -> dict:
    import triton
    from fastcontrast.bench.sm90 import compile_for_sm90, resource_report

    rows = []
    for name, kernel, ptrs, constexprs, opts in variants():
        opts = dict(opts)
        divisible = opts.pop("divisible", ())
        compiled = compile_for_sm90(kernel, ptrs, constexprs, opts,
                                    floats=("near_tol", "pos_margin", "neg_margin", "margin", "mm", "pos_low",
                                            "pos_high", "neg_low", "neg_high", "scale", "c_keep_hi", "c_keep_lo",
                                            "bound_slack"),
                                    divisible=divisible)
        rows.append(dict(kernel=name, constexprs={k: v for k, v in constexprs.items()}, **opts,
                         divisible=list(divisible), **resource_report(compiled)))
    (stick,) = [r for r in rows if r["kernel"].startswith(YARDSTICK)]
    for r in rows:
        if r["kernel"].startswith("softmax"):
            r["vs_yardstick"] = round(r["main_loop_instructions"] / stick["main_loop_instructions"], 2)
    launches = triplet_launch_summary()
    for r in rows:
        for prefix, kernel in TRIPLET_ROW_KERNELS.items():
            if r["kernel"].startswith(prefix):
                r["programs_per_launch_b65536"] = min(row["kernels"][kernel]["min_programs"] for row in launches
                                                      if kernel in row["kernels"])
    doc = {"triton": triton.__version__, "target": "sm_90", "kernels": rows, "triplet_launches_b65536": launches}
    doc["ntxent_per_tile"] = ntxent_per_tile(doc)
    return doc


def yardstick_table(doc: dict) -> str:
    """The softmax kernels' loop bodies against the yardstick's (loop instructions per tile)."""
    (stick,) = [r for r in doc["kernels"] if r["kernel"].startswith(YARDSTICK)]
    lines = [f"| kernel (triton {doc['triton']}, sm_90) | loop instr | × {stick['kernel']} "
             f"({stick['main_loop_instructions']}) |", "|---|---|---|"]
    for r in doc["kernels"]:
        if "vs_yardstick" in r:
            lines.append(f"| {r['kernel']} | {r['main_loop_instructions']} | {r['vs_yardstick']} |")
    return "\n".join(lines)


def table(doc: dict) -> str:
    head = ("| kernel (triton " + doc["triton"] + ", sm_90) | regs | stack B | smem B | loop instr | HGMMA | "
            "ISETP | LOP3 | MUFU | LDL/STL | pipelined |")
    lines = [head, "|" + "---|" * 11]
    for r in doc["kernels"]:
        mix = r["main_loop_mix"]
        lines.append(f"| {r['kernel']} | {r['registers']} | {r['stack_bytes']} | {r['shared_bytes']} | "
                     f"{r['main_loop_instructions']} | {mix.get('HGMMA', 0) + mix.get('HMMA', 0)} | "
                     f"{mix.get('ISETP', 0)} | {mix.get('LOP3', 0)} | {mix.get('MUFU', 0)} | "
                     f"{r['spill_instructions']} | {'yes' if r['pipelined'] else 'no'} |")
    return "\n".join(lines)


def triplet_programs_table(doc: dict) -> str:
    """The compiled triplet rows with the fewest programs of one of their launches at B = 65536."""
    lines = ["| kernel | regs | stack B | LDL/STL | programs per launch at B = 65536 (fewest) |",
             "|---|---|---|---|---|"]
    for r in doc["kernels"]:
        if "programs_per_launch_b65536" in r:
            lines.append(f"| {r['kernel']} | {r['registers']} | {r['stack_bytes']} | {r['spill_instructions']} | "
                         f"{r['programs_per_launch_b65536']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter builds nothing", file=sys.stderr)
        return 2
    doc = build()
    path = Path(args.out) / f"sm90-static-triton{doc['triton']}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    print()
    print(yardstick_table(doc))
    print()
    print(ntxent_table(doc))
    print()
    print(triplet_programs_table(doc))
    print()
    print(triplet_launch_table(doc["triplet_launches_b65536"]))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
