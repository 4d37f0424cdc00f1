"""Wall time of the grouped triplet sweep's stages on the CPU, at one or more thread counts.

Semi-hard with pytorch-metric-learning semantics and batch-all (the setup of
bench/triplet_grouped_cpu.py: D = 128, 10 classes, normalized Euclidean, forward + backward),
each (threads, mode) in a fresh process with OMP_NUM_THREADS set. The stages are timed on the
calling thread with perf_counter around the functions that make them, no profiler:

    tile       `_torch/triplet._tile`: the distance tile (one matmul, the near-band screen, sqrt)
    backward   `_torch/triplet._tile_backward`: the gradient's two matmuls and row / column sums
    pieces     `triplet_rows.run`: a tile's compiled pieces (packing, row sort, sweep), on
               torch.get_num_threads() threads
    piece ops  `_torch/triplet._grouped_chunk`: the torch ops that prepare each piece
    rest       the step's wall time minus those four

and one B×D·D×B matmul in the same process is the yardstick.

    python bench/triplet_stages_cpu.py --threads 1,2 --out bench/results/cpu-...-stages
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import torch
import fastcontrast as fc
from fastcontrast._torch import triplet as tt, triplet_rows
B, mining, repeats = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
spent = {}
def timed(owner, name, stage):
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)
timed(tt, "_tile", "tile"); timed(tt, "_tile_backward", "backward")
timed(triplet_rows, "run", "pieces"); timed(tt, "_grouped_chunk", "piece ops")
gen = torch.Generator().manual_seed(0)
def inputs(b):
    return torch.randn(b, 128, generator=gen).requires_grad_(), torch.randint(0, 10, (b,), generator=gen)
def step(x, y):
    x.grad = None
    fc.triplet_margin_loss(x, y, mining=mining, margin=0.05, miner_margin=0.2, distance="euclidean",
                           normalize=True, backend="torch").backward()
step(*inputs(256))
x, y = inputs(B)
runs = []
for _ in range(repeats):
    spent.clear()
    t = time.perf_counter()
    step(x, y)
    total = time.perf_counter() - t
    runs.append(dict(spent, total=total, rest=total - sum(spent.values())))
a = torch.randn(B, 128, generator=gen)
a @ a.T
mm = []
for _ in range(5):
    t = time.perf_counter(); a @ a.T; mm.append(time.perf_counter() - t)
best = min(runs, key=lambda r: r["total"])
print(json.dumps(dict(stages=best, all_totals=[r["total"] for r in runs], matmul_seconds=min(mm),
                      threads=torch.get_num_threads())))
"""

STAGES = ("tile", "backward", "pieces", "piece ops", "rest")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS values (default: %(default)s)")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--modes", default="semihard,batch_all")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps; the fastest one is reported")
    ap.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    rows = []
    for threads in args.threads.split(","):
        for mining in args.modes.split(","):
            env = dict(os.environ, OMP_NUM_THREADS=threads, PYTHONPATH=here)
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.size), mining, str(args.repeats)],
                                 env=env, cwd=here, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res.update(mining=mining, B=args.size, omp_num_threads=int(threads))
            rows.append(res)
            print(json.dumps(res), flush=True)
    import torch
    meta = dict(commit=head, machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                python=platform.python_version(), torch=torch.__version__)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    lines = [f"# Grouped triplet sweep on the CPU, stage wall times ({head})", "",
             f"{meta['cpus']} CPUs (shared), torch {meta['torch']}; B = {args.size}, D = 128, 10 classes, forward + "
             f"backward, fresh process per row, the fastest of {args.repeats} steps; stages timed on the calling "
             "thread (see bench/triplet_stages_cpu.py).", "",
             "| threads | mining | step | " + " | ".join(STAGES) + " | yardstick matmul | step / matmul |",
             "|---" * (len(STAGES) + 5) + "|"]
    for r in rows:
        s = r["stages"]
        lines.append(f"| {r['omp_num_threads']} | {r['mining']} | {s['total']:.3f} s | "
                     + " | ".join(f"{s.get(k, 0.0):.3f} s" for k in STAGES)
                     + f" | {r['matmul_seconds'] * 1e3:.1f} ms | {s['total'] / r['matmul_seconds']:.1f}× |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
