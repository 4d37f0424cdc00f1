"""Training loops: stage 1 (contrastive pretraining), stage 2 (linear classifier on the
frozen encoder), and the cross-entropy baseline; plus time and peak-memory measurement."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import models
from .data import Dataset
from .losses import BASELINE, LossFn


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    classifier_epochs: int = 20
    classifier_batch_size: int = 32
    classifier_lr: float = 1e-3
    max_steps: int | None = None  # cap on optimizer steps per stage (smoke runs)
    hidden: int = 256
    projection_dim: int = 128
    activation: str = "relu"
    eval_batch_size: int = 4096
    progress: bool = True


@dataclass
class RunResult:
    accuracy: float
    stage1_s: float
    stage2_s: float
    peak_bytes: int  # stage 1 (or the baseline's training)
    stage2_peak_bytes: int
    final_loss: float
    steps: int
    test_embedding: np.ndarray | None = field(default=None, repr=False)


class PeakMemory:
    """Peak memory of one configuration. CUDA: peak allocated bytes. CPU: peak resident set
    size above the level at the start, sampled every 2 ms from /proc/self/statm."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        release_freed_memory()
        self.start = current_rss()
        self._peak_rss = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._peak_rss = max(self._peak_rss, current_rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self._stop.set()
            self._thread.join()
            self._peak_rss = max(self._peak_rss, current_rss())
            self.peak = max(0, self._peak_rss - self.start)
        return False


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the process-wide peak is the best available
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_freed_memory() -> None:
    """Make freed memory visible to the RSS measurement: serve large blocks with mmap (so
    freeing them returns them to the system) and trim the heap. glibc only; else a no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB (fixed, not adaptive)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches covering all n examples; a last batch of one is dropped
    (no pair can be formed from it)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) >= 2:
            yield idx


def steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def fit(params, step_fn, n: int, batch_size: int, lr: float, epochs: int,
        max_steps: int | None, generator: torch.Generator, desc: str, progress: bool) -> tuple[float, int]:
    """Adam over `epochs` shuffled passes; step_fn(idx) returns the loss of a batch."""
    optimizer = torch.optim.Adam(params, lr=lr)
    total = epochs * steps_per_epoch(n, batch_size)
    if max_steps is not None:
        total = min(total, max_steps)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    step, loss_value = 0, float("nan")
    try:
        while step < total:
            for idx in batches(n, batch_size, generator):
                loss = step_fn(idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step % 10 == 0 or step == total:
                    loss_value = float(loss.detach())
                    bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                bar.update(1)
                if step >= total:
                    break
    finally:
        bar.close()
    return loss_value, step


@torch.no_grad()
def embed(net: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    net.eval()
    out = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    net.train()
    return out


@torch.no_grad()
def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def run_one(loss_name: str, loss_fn: LossFn | None, data: Dataset, batch_size: int, lr: float,
            seed: int, settings: TrainSettings, device: torch.device,
            keep_embedding: bool = False, label: str = "") -> RunResult:
    """One seed of one configuration: both stages (or the baseline) and the test accuracy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.as_tensor(data.x_train, device=device)
    y_train = torch.as_tensor(data.y_train, device=device)
    x_test = torch.as_tensor(data.x_test, device=device)
    y_test = torch.as_tensor(data.y_test, device=device)
    n, s = len(y_train), settings
    bs = min(batch_size, n)

    # Memory is measured per stage: stage 1 (training with the loss, or the baseline's
    # training) is what differs between losses; stage 2 is the same linear probe for all.
    t0 = time.perf_counter()
    if loss_name == BASELINE:
        net = models.Baseline(data.num_features, data.num_classes, s.hidden, s.activation).to(device)
        with PeakMemory(device) as memory1:
            final, steps = fit(net.parameters(),
                               lambda idx: F.cross_entropy(net(x_train[idx]), y_train[idx]),
                               n, bs, lr, s.epochs, s.max_steps, gen, f"{label} cross-entropy",
                               s.progress)
            sync(device)
        t1 = time.perf_counter()
        with PeakMemory(device) as memory2:
            acc = accuracy(embed(net, x_test, s.eval_batch_size), y_test)
        t2 = time.perf_counter()
        emb = embed(net.encoder, x_test, s.eval_batch_size) if keep_embedding else None
    else:
        enc = models.encoder(data.num_features, s.hidden, s.activation).to(device)
        proj = models.projector(s.hidden, s.projection_dim, s.activation).to(device)
        with PeakMemory(device) as memory1:
            final, steps = fit(list(enc.parameters()) + list(proj.parameters()),
                               lambda idx: loss_fn(proj(enc(x_train[idx])), y_train[idx]),
                               n, bs, lr, s.epochs, s.max_steps, gen, f"{label} stage 1",
                               s.progress)
            sync(device)
        t1 = time.perf_counter()
        with PeakMemory(device) as memory2:
            # stage 2: the encoder is frozen, so its outputs are computed once
            r_train = embed(enc, x_train, s.eval_batch_size)
            r_test = embed(enc, x_test, s.eval_batch_size)
            clf = nn.Linear(s.hidden, data.num_classes).to(device)
            fit(clf.parameters(), lambda idx: F.cross_entropy(clf(r_train[idx]), y_train[idx]),
                n, min(s.classifier_batch_size, n), s.classifier_lr, s.classifier_epochs,
                s.max_steps, gen, f"{label} stage 2", s.progress)
            acc = accuracy(embed(clf, r_test, s.eval_batch_size), y_test)
            sync(device)
        t2 = time.perf_counter()
        emb = embed(nn.Sequential(enc, proj), x_test, s.eval_batch_size) if keep_embedding else None

    if not np.isfinite(final):
        final = float("nan")
    return RunResult(accuracy=acc, stage1_s=t1 - t0, stage2_s=t2 - t1, peak_bytes=memory1.peak,
                     stage2_peak_bytes=memory2.peak,
                     final_loss=final, steps=steps,
                     test_embedding=None if emb is None else emb.float().cpu().numpy())


def warm_up(loss_fn: LossFn | None, data: Dataset, settings: TrainSettings,
            device: torch.device) -> None:
    """A few untimed steps so that one-time costs (imports, allocator pools, thread start-up)
    are not charged to the first configuration measured."""
    from dataclasses import replace

    quiet = replace(settings, max_steps=2, progress=False)
    name = BASELINE if loss_fn is None else "warm-up"
    run_one(name, loss_fn, data, 32, 1e-3, 0, quiet, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
