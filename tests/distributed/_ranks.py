"""Run a function on W spawned ranks of a gloo process group (CPU)."""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT = datetime.timedelta(seconds=40)
# fork: the ranks start at once with torch, fastcontrast and PML already imported (spawn
# re-imports them in every rank, seconds each on a 2-core machine). Each rank uses one thread.
# Where CUDA exists the parent may have initialized it, which a forked child cannot use: spawn.
START_METHOD = os.environ.get("FASTCONTRAST_TEST_START_METHOD",
                              "spawn" if torch.cuda.is_available() else "fork")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world, port, args):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=TIMEOUT)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn, world: int, *args) -> None:
    """fn(rank, world, *args) on `world` processes; an exception on any rank fails the call."""
    mp.start_processes(_entry, args=(fn, world, free_port(), args), nprocs=world, join=True,
                       start_method=START_METHOD)


def _env_entry(rank, fn, world, port, args):
    """As torchrun starts a rank: the process group comes from the environment (env://)."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    fn(rank, world, *args)
    # fn returned (its group destroyed): leave without running the interpreter's teardown. On a
    # loaded CI machine a rank once aborted there ("terminate called without an active
    # exception", SIGABRT: a C++ thread still joinable when static destructors ran) after
    # its work had passed. An exception in fn still fails the rank as before.
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks_env(fn, world: int, *args) -> None:
    """fn(rank, world, *args) on `world` fresh processes that initialize the group themselves,
    as torchrun starts them: spawned, never forked — a fork inherits whatever locks the test
    process's threads (compile workers, thread pools) held at that moment, and a rank of the
    DDP example once hung on one in CI."""
    mp.start_processes(_env_entry, args=(fn, world, free_port(), args), nprocs=world, join=True,
                       start_method="spawn")
