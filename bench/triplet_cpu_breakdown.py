"""Where the CPU time of one triplet forward + backward goes (PyTorch path, one thread).

Semi-hard with pytorch-metric-learning semantics and batch-all (as bench/triplet_grouped_cpu.py:
D = 128, 10 classes, normalized Euclidean), each mode in a fresh process. One step runs under
torch.profiler; the merged rows' sort (`_torch/triplet._sort_rows`, numpy) is marked, and the
step is split into that sort, the compiled row passes around it (`_torch/triplet_rows.py`,
numba; FASTCONTRAST_NUMBA=0 runs the torch passes instead), the distance and gradient matmuls
(aten mm / addmm), the other aten ops (the largest named) and the rest (Python and dispatch).
In the same process one B×D·D×B matmul is timed, the yardstick of the issue's target (≤ 8×),
so each part reads as a multiple of it:

    OMP_NUM_THREADS=1 python bench/triplet_cpu_breakdown.py --out bench/results/cpu-...-breakdown
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
import fastcontrast as fc
import fastcontrast._torch.triplet as tt
from torch.profiler import profile, record_function
B, mining = int(sys.argv[1]), sys.argv[2]
gen = torch.Generator().manual_seed(0)
x = torch.randn(B, 128, generator=gen).requires_grad_()
y = torch.randint(0, 10, (B,), generator=gen)
def step():
    x.grad = None
    fc.triplet_margin_loss(x, y, mining=mining, margin=0.05, miner_margin=0.2, distance="euclidean",
                           normalize=True, backend="torch").backward()
import fastcontrast._torch.triplet_rows as rows_mod
def mark(owner, name, label):
    fn = getattr(owner, name)
    def marked(*a):
        with record_function(label):
            return fn(*a)
    setattr(owner, name, marked)
mark(tt, "_sort_rows", "row sort (numpy)")
compiled = rows_mod.AVAILABLE
if compiled:
    for name in ("pack_keys", "sweep"):
        mark(rows_mod, name, "compiled passes (numba)")
step()
c = time.process_time(); step(); unprofiled = time.process_time() - c
with profile() as prof:
    c = time.process_time(); step(); total = time.process_time() - c
events = {e.key: e for e in prof.key_averages()}
self_s = lambda k: events[k].self_cpu_time_total / 1e6 if k in events else 0.0
sort_s = events["row sort (numpy)"].cpu_time_total / 1e6
compiled_s = events["compiled passes (numba)"].cpu_time_total / 1e6 if compiled else 0.0
matmul_s = sum(self_s(k) for k in ("aten::mm", "aten::addmm", "aten::addmm_"))
ops = sorted(((self_s(k), k) for k in events if k.startswith("aten::") and k not in
              ("aten::mm", "aten::addmm", "aten::addmm_")), reverse=True)
other_aten = sum(s for s, _ in ops)
a = torch.randn(B, 128, generator=gen)
a @ a.T
mm = []
for _ in range(5):
    c = time.process_time(); a @ a.T; mm.append(time.process_time() - c)
print(json.dumps(dict(B=B, mining=mining, compiled=compiled, unprofiled_s=unprofiled, total_s=total, sort_s=sort_s,
                      compiled_s=compiled_s, matmul_s=matmul_s, other_aten_s=other_aten,
                      rest_s=total - sort_s - compiled_s - matmul_s - other_aten,
                      top_ops=[(k, s) for s, k in ops[:6]], yardstick_s=min(mm))))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8192")
    ap.add_argument("--modes", default="semihard,batch_all")
    ap.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for b in map(int, args.sizes.split(",")):
        for mining in args.modes.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, str(b), mining], cwd=here, capture_output=True,
                                 text=True, env=dict(os.environ, PYTHONPATH=here))
            if out.returncode:
                raise SystemExit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    import torch
    head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    meta = dict(commit=head, machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"), python=platform.python_version(),
                torch=torch.__version__)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    y = lambda r, k: f"{r[k]:.2f} s = {r[k] / r['yardstick_s']:.1f}×"
    lines = [f"# Triplet PyTorch path, CPU time of one forward + backward by part ({head})", "",
             f"One thread, torch {meta['torch']}, {meta['cpus']} CPUs; D = 128, 10 classes; one profiled step "
             "per mode, fresh process each; × = multiples of one B×D·D×B matmul timed in the same process.", "",
             "| mining | B | yardstick matmul | step (unprofiled) | step (profiled) | row sort | compiled passes | "
             "matmuls | other aten ops | rest (Python, dispatch) | largest other ops |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        top = ", ".join(f"{k.removeprefix('aten::')} {s:.2f}" for k, s in r["top_ops"][:4])
        lines.append(f"| {r['mining']} | {r['B']} | {r['yardstick_s'] * 1e3:.0f} ms | {y(r, 'unprofiled_s')} | "
                     f"{y(r, 'total_s')} | {y(r, 'sort_s')} | "
                     f"{y(r, 'compiled_s') if r.get('compiled') else 'not used'} | {y(r, 'matmul_s')} | {y(r, 'other_aten_s')} | "
                     f"{y(r, 'rest_s')} | {top} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
