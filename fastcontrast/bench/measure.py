"""Timing one implementation on one case, inside the current process.

A timed step is forward + backward: the gradients of the inputs are cleared, the loss is
computed and `.backward()` runs. Warm-up steps run first and are not timed (they include
torch.compile's compilation and Triton's autotuning). Then `repeats` steps are timed one by
one; the median is the figure quoted.

- CPU: time.perf_counter around each step (and time.process_time: CPU seconds of all
  threads, which a busy shared machine inflates less than the wall time).
- CUDA: a pair of CUDA events around each step, read after a synchronize (the time the GPU
  spent, without Python-side launch jitter; warm-up excluded). Peak memory:
  torch.cuda.max_memory_allocated() over the timed steps minus the bytes allocated before
  them (the inputs), after torch.cuda.reset_peak_memory_stats().
"""
from __future__ import annotations

import statistics
import time

from .cases import Case, leaves, make_inputs


def run_step(step, inputs: dict):
    """One forward+backward; returns the loss value as a float (None for a yardstick)."""
    for leaf in leaves(inputs):
        leaf.grad = None
    loss = step(inputs)
    if loss is None:
        return None
    if loss.requires_grad:
        loss.backward()
    return loss


def _loss_value(loss):
    return None if loss is None else float(loss.detach().float().cpu())


def time_steps(step, inputs: dict, device: str, warmup: int = 1, repeats: int = 3,
               max_seconds: float | None = None) -> dict:
    """Warm up, then time `repeats` steps (fewer if `max_seconds` is spent, at least one).

    Returns {"times_s": [...], "time_s": median, "value": loss of the first step,
             "warmup_s": time of the warm-up steps, "peak_extra_bytes": CUDA only}.
    """
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    value = None
    t0 = time.perf_counter()
    for i in range(max(warmup, 0)):
        loss = run_step(step, inputs)
        if i == 0:
            value = _loss_value(loss)
    sync()
    warmup_s = time.perf_counter() - t0

    out = {}
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    started = time.perf_counter()
    for i in range(max(repeats, 1)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = run_step(step, inputs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t, c = time.perf_counter(), time.process_time()
            loss = run_step(step, inputs)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
        if value is None and i == 0:
            value = _loss_value(loss)
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    if cuda:
        out["peak_extra_bytes"] = int(torch.cuda.max_memory_allocated() - base)
    if cpu_times:
        # CPU seconds of all threads per step: with a busy machine the wall time grows, this not
        out["cpu_time_s"] = statistics.median(cpu_times)
    out.update(times_s=times, time_s=statistics.median(times), time_min_s=min(times), value=value,
               warmup_s=warmup_s)
    return out


def measure_in_process(case: Case, impl, warmup: int = 1, repeats: int = 3,
                       max_seconds: float | None = None) -> dict:
    """Build `impl` for `case`, make the inputs, time forward+backward."""
    step = impl.build(case)
    inputs = make_inputs(case)
    return time_steps(step, inputs, case.device, warmup, repeats, max_seconds)
