"""The README's DDP example (tests/distributed/ddp_example.py) runs and trains, started as
torchrun starts it (process group from the environment)."""
import math

from . import ddp_example
from ._ranks import run_ranks_env


def _worker(rank, world):
    history = ddp_example.main(steps=12, verbose=False)
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < history[0], history


def test_ddp_example_two_ranks():
    run_ranks_env(_worker, 2)
