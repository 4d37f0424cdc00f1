"""Stand-in implementations for testing the measuring code without the real losses.

Named on the command line / in probe specs as "<this file>:NAME"; each child process loads
this file by path.
"""
import os
import signal
import time

import numpy as np

from fastcontrast.bench.impls import BASELINE, SUBJECT, Impl

MB = 10**6


def _alloc(n_bytes):
    def build(case):
        def step(inputs):
            block = np.ones(n_bytes // 8)          # written, hence resident
            assert block.sum() == n_bytes // 8
            return None
        return step
    return build


def _matmul(repeat):
    def build(case):
        def step(inputs):
            x = inputs["emb"]
            loss = 0
            for _ in range(repeat):
                loss = loss + (x @ x.T).square().mean()
            return loss
        return step
    return build


def _sleep(seconds):
    def build(case):
        def step(inputs):
            time.sleep(seconds)
        return step
    return build


def _numpy_oom(case):
    def step(inputs):
        np.ones(2**40 // 8)                         # 1 TiB: refused under the cap
    return step


def _torch_oom(case):
    import torch

    def step(inputs):
        torch.empty(2**40, dtype=torch.uint8).fill_(1)
    return step


def _killed(case):
    def step(inputs):
        os.kill(os.getpid(), signal.SIGKILL)        # what the kernel's OOM killer does
    return step


def _grows(case):
    """Fits at B <= 32, out of memory above: exercises the sweep's stop-after-OOM rule."""
    def step(inputs):
        if case.B > 32:
            np.ones(2**40 // 8)
        return inputs["emb"].square().sum()
    return step


ALLOC_200MB = Impl("alloc-200mb", SUBJECT, _alloc(200 * MB))
FAST = Impl("fast-standin", SUBJECT, _matmul(1))
SLOW = Impl("slow-standin", BASELINE, _matmul(4))
GROWS = Impl("grows-standin", BASELINE, _grows)
SLEEPS = Impl("sleeps", SUBJECT, _sleep(600))
NUMPY_OOM = Impl("numpy-oom", SUBJECT, _numpy_oom)
TORCH_OOM = Impl("torch-oom", SUBJECT, _torch_oom)
KILLED = Impl("killed", SUBJECT, _killed)


def _interrupts(case):
    def step(inputs):
        if case.B > 32:
            raise KeyboardInterrupt   # what SIGTERM (e.g. `timeout`) turns into in the CLI
        return inputs["emb"].sum()
    return step


INTERRUPTS = Impl("interrupts", BASELINE, _interrupts)


def _raises_oom(case):
    def step(inputs):
        raise MemoryError("simulated: cannot allocate")   # safe in the test process itself
    return step


RAISES_OOM = Impl("raises-oom", SUBJECT, _raises_oom)
