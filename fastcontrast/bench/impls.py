"""Implementations timed side by side on every case.

    fastcontrast-torch   fastcontrast, backend="torch" (the memory-lean PyTorch path)
    fastcontrast-triton  fastcontrast, backend="triton" (fused kernels; CUDA only)
    dense-eager          the dense PyTorch code a user would write (fastcontrast.bench.dense)
    dense-compile        torch.compile of dense-eager (GPU by default; on CPU only when
                         FASTCONTRAST_BENCH_COMPILE_CPU=1, it needs a C++ compiler)
    pml                  pytorch-metric-learning 2.x, where it has the loss
    matmul               one (B×D)·(D×N) torch.matmul: the throughput yardstick of the
                         softmax family (not a loss; no backward)

An implementation is built once per case: `impl.build(case)` returns `step(inputs)`, which
computes the loss (the forward); `measure.run_step` adds the backward. A module path
"package.module:NAME" or a file path "path/to/file.py:NAME" naming an `Impl` object also
works wherever an implementation name is expected (that is how tests plug in stand-ins).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

from .cases import Case

SUBJECT, BASELINE, YARDSTICK = "subject", "baseline", "yardstick"


@dataclass(frozen=True)
class Impl:
    name: str
    role: str                                      # subject | baseline | yardstick
    build: Callable[[Case], Callable]              # case -> step(inputs) -> loss | None
    why_not: Callable[[Case], str | None] = lambda case: None   # reason it cannot run, or None
    imports: tuple[str, ...] = ()                  # modules the memory baseline preloads
    summary: str = ""


# ---------------------------------------------------------------- fastcontrast --------

_PML_TRIPLET = dict(margin=0.05, miner_margin=0.2, distance="euclidean", normalize=True)
_FC_CALLS = {
    "contrastive": ("contrastive_loss", dict(distance="euclidean", normalize=True)),
    "triplet-all": ("triplet_margin_loss", dict(mining="all", **_PML_TRIPLET)),
    "triplet-hard": ("triplet_margin_loss", dict(mining="hard", **_PML_TRIPLET)),
    "triplet-semihard": ("triplet_margin_loss", dict(mining="semihard", **_PML_TRIPLET)),
    "triplet-easy": ("triplet_margin_loss", dict(mining="easy", **_PML_TRIPLET)),
    "triplet-batch-all": ("triplet_margin_loss", dict(mining="batch_all", **_PML_TRIPLET)),
    "triplet-batch-hard": ("triplet_margin_loss", dict(mining="batch_hard", **_PML_TRIPLET)),
    "triplet-semihard-tfa": ("triplet_margin_loss", dict(mining="semihard_tfa", margin=1.0,
                                                         distance="euclidean", normalize=False,
                                                         average="mean")),
    "ntxent": ("nt_xent_loss", dict(temperature=0.07)),
    "ntxent-simclr": ("nt_xent_loss", dict(temperature=0.07)),
    "supcon": ("supcon_loss", dict(temperature=0.1)),
    "npair": ("npair_loss", dict(distance="dot", normalize=True)),
    "info-nce": ("info_nce_loss", dict(temperature=0.07)),
    "clip": ("info_nce_loss", dict(temperature=0.07, symmetric=True)),
    "siglip": ("siglip_loss", dict(logit_scale=10.0, logit_bias=-10.0)),
    "multi-similarity": ("multi_similarity_loss", dict(alpha=2.0, beta=50.0, base=0.5)),
    "circle": ("circle_loss", dict(m=0.4, gamma=80.0)),
    "lifted": ("lifted_structure_loss", dict(distance="euclidean", normalize=True)),
    "generalized-lifted": ("generalized_lifted_structure_loss", dict(distance="euclidean", normalize=True)),
    "margin": ("margin_loss", dict(margin=0.2, beta=1.2000000476837158, distance="euclidean",
                                   normalize=True)),  # 1.2 as PML stores it (float32)
}


# a miner and a loss, as pytorch-metric-learning users call them (fastcontrast: compat.pml's,
# whose loss fuses the miner's lazy selection)
_MINED = {
    "multi-similarity-mined": (lambda m: m.MultiSimilarityMiner(epsilon=0.1),
                               lambda l, **kw: l.MultiSimilarityLoss(**kw)),
    "contrastive-pair-margin": (lambda m: m.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
                                lambda l, **kw: l.ContrastiveLoss(**kw)),
}


def _mined(losses, miners, case: Case, **loss_options):
    make_miner, make_loss = _MINED[case.loss]
    miner, loss = make_miner(miners), make_loss(losses, **loss_options)
    return lambda x: loss(x["emb"], x["labels"], miner(x["emb"], x["labels"]))


def _cross_batch_memory(losses, miners, case: Case, **loss_options):
    """step(inputs) of a CrossBatchMemory case built from a `losses` and a `miners` module
    (pytorch-metric-learning's or fastcontrast.compat.pml): on the first step the memory is
    filled with the inputs' memory rows; every step then enqueues the batch, as in training."""
    xbm = losses.CrossBatchMemory(losses.TripletMarginLoss(margin=0.05, **loss_options),
                                  embedding_size=case.D, memory_size=case.n_ref,
                                  miner=miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"))

    def step(x):
        if not xbm.has_been_filled:
            xbm.embedding_memory = x["memory_emb"].clone()
            xbm.label_memory = x["memory_labels"].clone()
            xbm.queue_idx, xbm.has_been_filled = 0, True
        return xbm(x["emb"], x["labels"])
    return step


def _fastcontrast(backend: str):
    def build(case: Case):
        import fastcontrast as fc

        if case.spec.memory:
            from ..compat.pml import losses, miners
            return _cross_batch_memory(losses, miners, case, backend=backend)
        if case.loss == "ntxent-membank":
            return _fastcontrast_membank(case, backend)
        if case.loss in _MINED:
            from ..compat.pml import losses, miners
            return _mined(losses, miners, case, backend=backend)
        fname, kwargs = _FC_CALLS[case.loss]
        fn = getattr(fc, fname)
        if case.spec.two_inputs:
            return lambda x: fn(x["emb"], x["keys"], backend=backend, **kwargs)
        return lambda x: fn(x["emb"], x["labels"], backend=backend, **kwargs)
    return build


def _fastcontrast_membank(case: Case, backend: str):
    """compat.lightly.NTXentLoss with its bank set to the case's bank at the first step
    (later steps use the bank as the loss updates it, as in training)."""
    from ..compat.lightly import NTXentLoss

    loss = NTXentLoss(temperature=0.07, memory_bank_size=(case.n_ref, case.D), backend=backend)

    def step(x):
        if not getattr(step, "loaded", False):
            loss.memory_bank.bank = x["bank"].detach().clone()
            step.loaded = True
        return loss(x["emb"], x["keys"])
    return step


def _triton_why_not(case: Case):
    from ..backend import interpreter_enabled, triton_import_error
    if case.device != "cuda" and not interpreter_enabled():
        return "needs CUDA (or TRITON_INTERPRET=1: the interpreter, as the GPU-run rehearsal uses)"
    return triton_import_error()


# ---------------------------------------------------------------- dense / compile -----

def _dense_why_not(case: Case):
    return "no dense form (a memory-bank wrapper)" if case.spec.memory else None


def _dense(case: Case):
    from .dense import step_for
    return step_for(case.loss)


def _compiled(case: Case):
    import torch

    from .dense import step_for
    return torch.compile(step_for(case.loss), dynamic=False)


def _compile_why_not(case: Case):
    if case.spec.memory:
        return _dense_why_not(case)
    if case.device == "cpu" and os.environ.get("FASTCONTRAST_BENCH_COMPILE_CPU", "0") in ("", "0"):
        return "GPU only (set FASTCONTRAST_BENCH_COMPILE_CPU=1 to compile on CPU)"
    return None


# ---------------------------------------------------------------- PML -----------------

_PML_FILTERS = {"triplet-all": "all", "triplet-hard": "hard", "triplet-semihard": "semihard",
                "triplet-easy": "easy"}
_PML_LOSSES = {"contrastive", "xbm-triplet-semihard", "triplet-batch-all", "triplet-batch-hard", "ntxent",
               "ntxent-simclr", "supcon", "npair", *_PML_FILTERS,
               "multi-similarity", "circle", "lifted", "generalized-lifted", "margin", *_MINED}


def _pml(case: Case):
    from pytorch_metric_learning import losses, miners

    if case.spec.memory:
        return _cross_batch_memory(losses, miners, case)
    if case.loss in _MINED:
        return _mined(losses, miners, case)
    if case.loss in _PML_FILTERS:
        miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets=_PML_FILTERS[case.loss])
        loss = losses.TripletMarginLoss(margin=0.05)
        return lambda x: loss(x["emb"], x["labels"], miner(x["emb"], x["labels"]))
    if case.loss == "triplet-batch-hard":
        miner, loss = miners.BatchHardMiner(), losses.TripletMarginLoss(margin=0.05)
        return lambda x: loss(x["emb"], x["labels"], miner(x["emb"], x["labels"]))
    loss = {
        "contrastive": lambda: losses.ContrastiveLoss(),
        "triplet-batch-all": lambda: losses.TripletMarginLoss(margin=0.05),
        "ntxent": lambda: losses.NTXentLoss(temperature=0.07),
        "ntxent-simclr": lambda: losses.NTXentLoss(temperature=0.07),
        "supcon": lambda: losses.SupConLoss(temperature=0.1),
        "npair": lambda: losses.NPairsLoss(),
        "multi-similarity": lambda: losses.MultiSimilarityLoss(),
        "circle": lambda: losses.CircleLoss(),
        "lifted": lambda: losses.LiftedStructureLoss(),
        "generalized-lifted": lambda: losses.GeneralizedLiftedStructureLoss(),
        "margin": lambda: losses.MarginLoss(),
    }[case.loss]()
    return lambda x: loss(x["emb"], x["labels"])


def _pml_why_not(case: Case):
    if case.loss not in _PML_LOSSES:
        return "pytorch-metric-learning has no such loss"
    if importlib.util.find_spec("pytorch_metric_learning") is None:
        return "pytorch-metric-learning is not installed"
    return None


# ---------------------------------------------------------------- matmul --------------

def _matmul(case: Case):
    def step(x):
        other = x.get("keys", x["emb"])
        x["emb"].detach() @ other.detach().T
        return None
    return step


def _matmul_why_not(case: Case):
    return None if case.spec.flops_per_pair else "only for the softmax family (FLOP yardstick)"


IMPLS: dict[str, Impl] = {impl.name: impl for impl in [
    Impl("fastcontrast-torch", SUBJECT, _fastcontrast("torch"), imports=("fastcontrast",),
         summary="fastcontrast, PyTorch path"),
    Impl("fastcontrast-triton", SUBJECT, _fastcontrast("triton"), _triton_why_not,
         imports=("fastcontrast", "triton"), summary="fastcontrast, Triton kernels"),
    Impl("dense-eager", BASELINE, _dense, _dense_why_not, summary="dense eager PyTorch"),
    Impl("dense-compile", BASELINE, _compiled, _compile_why_not, summary="torch.compile(dense)"),
    Impl("pml", BASELINE, _pml, _pml_why_not,
         imports=("pytorch_metric_learning.losses", "pytorch_metric_learning.miners"),
         summary="pytorch-metric-learning"),
    Impl("matmul", YARDSTICK, _matmul, _matmul_why_not, summary="one torch.matmul B×D·D×N"),
]}


def get_impl(name: str) -> Impl:
    """An implementation by registry name, or an `Impl` object named "module:ATTR" /
    "path/file.py:ATTR"."""
    if name in IMPLS:
        return IMPLS[name]
    if ":" not in name:
        raise ValueError(f"unknown implementation {name!r}; known: {', '.join(IMPLS)} "
                         "(or 'module:NAME' / 'file.py:NAME' naming an Impl)")
    where, attr = name.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"_bench_impl_{abs(hash(where))}", where)
            if spec is None or spec.loader is None:
                raise ImportError(f"no loader for {where!r}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except (ImportError, OSError) as exc:
        raise ValueError(f"cannot load implementation {name!r}: {exc}") from None
    impl = getattr(module, attr, None)
    if not isinstance(impl, Impl):
        raise ValueError(f"{name!r} does not name a fastcontrast.bench.impls.Impl")
    return impl
