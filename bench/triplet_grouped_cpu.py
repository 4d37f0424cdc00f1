"""CPU benchmark of the triplet family's PyTorch path: this checkout against an older commit.

Semi-hard with pytorch-metric-learning semantics (miner margin 0.2, loss margin 0.05,
normalized Euclidean) and batch-all by default (--modes: any mining, with +smooth or +swap),
D = 128, 10 classes, forward + backward. Every case runs in a fresh process; the older commit
is exported with `git archive` into a temporary folder and imported from there. In the same
process, one B×D·D×B matmul is timed: the ratio loss time / matmul time is a yardstick that
does not depend much on the machine.

    OMP_NUM_THREADS=1 python bench/triplet_grouped_cpu.py --old aeaf219 --out bench/results/cpu-...

Peak RSS is the process's maximum resident set size (before the matmul is timed) minus the
RSS after imports and input creation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, statistics, sys, time
import torch
import fastcontrast as fc
B, (mining, *options), repeats = int(sys.argv[1]), sys.argv[2].split("+"), int(sys.argv[3])
gen = torch.Generator().manual_seed(0)
def inputs(b):
    x = torch.randn(b, 128, generator=gen).requires_grad_()
    return x, torch.randint(0, 10, (b,), generator=gen)
def step(x, y):
    loss = fc.triplet_margin_loss(x, y, mining=mining, margin=0.05, miner_margin=0.2,
                                  distance="euclidean", normalize=True, backend="torch",
                                  **{option: True for option in options})
    loss.backward()
    return float(loss.detach())
step(*inputs(256))                                  # warm-up at a small size
x, y = inputs(B)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times, cpu = [], []
for _ in range(repeats):
    x.grad = None
    t, c = time.perf_counter(), time.process_time()
    value = step(x, y)
    times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a = torch.randn(B, 128, generator=gen)
a @ a.T
mm, mm_cpu = [], []
for _ in range(5):
    t, c = time.perf_counter(), time.process_time()
    a @ a.T
    mm.append(time.perf_counter() - t); mm_cpu.append(time.process_time() - c)
print(json.dumps(dict(seconds=statistics.median(times), all_seconds=times, matmul_seconds=min(mm),
                      cpu_seconds=statistics.median(cpu), matmul_cpu_seconds=min(mm_cpu),
                      peak_rss_mib=(peak - rss0) / 1024, loss=value)))
"""


def run_case(src: str, b: int, mining: str, repeats: int, timeout: float):
    env = dict(os.environ, PYTHONPATH=src)
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(b), mining, str(repeats)], env=env, cwd=src,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="aeaf219", help="commit to compare with (default: %(default)s)")
    ap.add_argument("--sizes", default="2048,8192", help="batch sizes run by both (default: %(default)s)")
    ap.add_argument("--new-only-sizes", default="16384", help="batch sizes run by this checkout only")
    ap.add_argument("--modes", default="semihard,batch_all",
                    help="mining modes, each optionally with +smooth and/or +swap (e.g. batch_all+smooth)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed steps per case (default: 3 up to B = 2048, 2 up to 8192, else 1)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old_dir = tempfile.mkdtemp(prefix="fastcontrast-old-")
    archive = subprocess.run(["git", "-C", here, "archive", args.old], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", old_dir], input=archive, check=True)
    head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    rows = []
    plan = [(b, m, impl) for b in map(int, args.sizes.split(",")) for m in args.modes.split(",")
            for impl in ("old", "new")]
    plan += [(b, m, "new") for b in map(int, filter(None, args.new_only_sizes.split(","))) for m in args.modes.split(",")]
    for b, mining, impl in plan:
        repeats = args.repeats or (3 if b <= 2048 else (2 if b <= 8192 else 1))
        res = run_case(old_dir if impl == "old" else here, b, mining, repeats, args.timeout)
        res.update(B=b, mining=mining, impl=impl, commit=args.old if impl == "old" else head)
        if "seconds" in res:
            res["ratio_to_matmul"] = res["seconds"] / res["matmul_seconds"]
            res["cpu_ratio_to_matmul"] = res["cpu_seconds"] / res["matmul_cpu_seconds"]
        rows.append(res)
        print(json.dumps(res), flush=True)
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"), python=platform.python_version())
    import torch
    meta["torch"] = torch.__version__
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    lines = [f"# Triplet PyTorch path, CPU: {args.old} (old) vs {head} (new)", "",
             f"OMP_NUM_THREADS={meta['omp_num_threads']}, {meta['cpus']} CPUs (shared), torch {meta['torch']}; "
             "D = 128, 10 classes, forward + backward, fresh process per case, median time; CPU = process "
             "CPU time (less sensitive to other jobs on a shared machine than wall time).", "",
             "| mining | B | impl | wall | CPU | matmul wall / CPU | wall / matmul | CPU / matmul CPU | peak RSS (MiB) | loss |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" in r:
            lines.append(f"| {r['mining']} | {r['B']} | {r['impl']} | {r['seconds']:.3f} s | {r['cpu_seconds']:.3f} s"
                         f" | {r['matmul_seconds'] * 1e3:.1f} / {r['matmul_cpu_seconds'] * 1e3:.1f} ms"
                         f" | {r['ratio_to_matmul']:.1f}× | {r['cpu_ratio_to_matmul']:.1f}× | {r['peak_rss_mib']:.0f}"
                         f" | {r['loss']:.6f} |")
        else:
            lines.append(f"| {r['mining']} | {r['B']} | {r['impl']} | {r['error']} | | | | | | |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
