"""Per-rank forward+backward time of a global-batch loss at world size W (gloo, CPU)
against one process computing the same loss on the whole global batch.

    OMP_NUM_THREADS=1 python bench/distributed_scaling.py --world 2 --batch 2048 \
        --out bench/results/distributed-cpu.json

Every process uses one thread, so W ranks use W cores and the single process one core:
the ratio per-rank / single measures the work sharing (ideal 1/W) plus the cost of the
gathers and all-reduces. Per repetition the ranks start together (barrier) and the slowest
rank's time counts; the median over repetitions is reported. "compute" is the same share
timed without communication (terms against references already at hand), which separates
the work sharing from the collectives. "share alone" times rank 0's share in the parent
process while nothing else runs: the work sharing without communication or the ranks
contending for the machine's cores and memory.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LOSSES = {
    "supcon": lambda: __import__("fastcontrast").SupConLoss(temperature=0.1, backend="torch"),
    "contrastive": lambda: __import__("fastcontrast").ContrastiveLoss(neg_margin=1.0, backend="torch"),
    "triplet-semihard": lambda: __import__("fastcontrast").TripletMarginLoss(mining="semihard", backend="torch"),
    "triplet-batch_hard": lambda: __import__("fastcontrast").TripletMarginLoss(mining="batch_hard", backend="torch"),
}


def make_batch(batch, dim, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g), torch.randint(0, classes, (batch,), generator=g)


def shares(batch, world):
    """Rows per rank: batch // world each, the remainder to rank 0."""
    base = [batch // world] * world
    base[0] += batch - sum(base)
    return base


def time_single(loss_name, x, y, reps, warmup):
    loss_fn = LOSSES[loss_name]()
    times = []
    for i in range(warmup + reps):
        emb = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss_fn(emb, y).backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_share_alone(loss_name, x, y, world, reps, warmup):
    """Rank 0's share (its anchors against the whole batch) in this one process, with no
    other rank running: the work sharing without communication or contention."""
    loss = LOSSES[loss_name]()
    rows = shares(x.shape[0], world)[0]
    times = []
    for i in range(warmup + reps):
        emb, refs = x[:rows].clone().requires_grad_(True), x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        loss.reduce(loss.terms(emb, y[:rows], refs, y, self_offset=0)).backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _rank_main(rank, world, port, loss_name, batch, dim, classes, reps, warmup, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=300))
    from fastcontrast.distributed import GlobalBatchLoss
    x, y = make_batch(batch, dim, classes)
    sizes = shares(batch, world)
    start = sum(sizes[:rank])
    x, y = x[start:start + sizes[rank]], y[start:start + sizes[rank]]
    loss = LOSSES[loss_name]()
    loss_fn = GlobalBatchLoss(loss)
    all_x, all_y = make_batch(batch, dim, classes)
    times, compute = [], []
    for i in range(warmup + reps):
        # the wrapped loss: gathers, this rank's share, all-reduces, backward
        emb = x.clone().requires_grad_(True)
        dist.barrier()
        t0 = time.perf_counter()
        loss_fn(emb, y).backward()
        elapsed = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        # the same share without any communication (references already at hand)
        emb, refs = x.clone().requires_grad_(True), all_x.clone().requires_grad_(True)
        dist.barrier()
        t0 = time.perf_counter()
        loss.reduce(loss.terms(emb, y, refs, all_y, self_offset=start)).backward()
        alone = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(alone, op=dist.ReduceOp.MAX)
        if i >= warmup:
            times.append(float(elapsed))
            compute.append(float(alone))
    if rank == 0:
        queue.put((times, compute))
    dist.destroy_process_group()


def time_world(loss_name, world, batch, dim, classes, reps, warmup):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_rank_main, args=(world, port, loss_name, batch, dim, classes, reps, warmup, queue),
                       nprocs=world, join=True, start_method="spawn")
    return queue.get()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--batch", type=int, default=2048, help="global batch size")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--losses", default="supcon,contrastive,triplet-semihard")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=None, help="results JSON (default: print only)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()

    from fastcontrast.bench.report import machine_info, versions
    records = []
    for name in args.losses.split(","):
        x, y = make_batch(args.batch, args.dim, args.classes)
        single = time_single(name, x, y, args.reps, args.warmup)
        alone = time_share_alone(name, x, y, args.world, args.reps, args.warmup)
        per_rank, compute = time_world(name, args.world, args.batch, args.dim, args.classes, args.reps,
                                       args.warmup)
        rec = {"loss": name, "batch": args.batch, "dim": args.dim, "classes": args.classes,
               "world": args.world, "rank_sizes": shares(args.batch, args.world),
               "single_s": statistics.median(single), "per_rank_s": statistics.median(per_rank),
               "per_rank_compute_s": statistics.median(compute),
               "share_alone_s": statistics.median(alone), "share_alone_all_s": alone,
               "single_all_s": single, "per_rank_all_s": per_rank, "per_rank_compute_all_s": compute}
        rec["ratio"] = rec["per_rank_s"] / rec["single_s"]
        rec["compute_ratio"] = rec["per_rank_compute_s"] / rec["single_s"]
        rec["share_alone_ratio"] = rec["share_alone_s"] / rec["single_s"]
        records.append(rec)
        print(f"{name:20s} B={args.batch} single {rec['single_s'] * 1e3:9.1f} ms   "
              f"per rank (W={args.world}) {rec['per_rank_s'] * 1e3:9.1f} ms   ratio {rec['ratio']:.3f} "
              f"(ideal {1 / args.world:.3f}; without communication {rec['compute_ratio']:.3f}; "
              f"share alone {rec['share_alone_ratio']:.3f})", flush=True)
    doc = {"schema": "fastcontrast-distributed-scaling/1",
           "command": "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(), "versions": versions(),
           "settings": {"backend": "gloo", "device": "cpu", "threads_per_process": 1,
                        "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()},
           "records": records}
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
