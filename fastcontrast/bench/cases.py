"""Benchmark cases: which loss, at which size, on which inputs.

A `Case` is one configuration (loss, batch B, references N, dimension D, dtype, number of
classes, device). The loss names below fix the semantics every implementation of a case
computes, so that the figures compare the same numbers:

    contrastive           pytorch-metric-learning ContrastiveLoss (normalized Euclidean)
    triplet-<filter>      TripletMarginMiner(margin=0.2, <filter>) + TripletMarginLoss(0.05),
                          filter in all / hard / semihard / easy
    triplet-batch-all     TripletMarginLoss(0.05) over every valid triplet
    triplet-batch-hard    BatchHardMiner + TripletMarginLoss(0.05)
    triplet-semihard-tfa  TF Addons triplet_semihard_loss (margin 1, Euclidean)
    ntxent                NTXentLoss(0.07) with class labels
    ntxent-simclr         NTXentLoss(0.07) with SimCLR pair labels (rows i, i + B/2 pair up),
                          numerically the SimCLR paper form
    supcon                SupConLoss(0.1)
    npair                 NPairsLoss (normalized dot product)
    info-nce              InfoNCE between B queries and N keys (labels = pair index)
    xbm-triplet-semihard  PML CrossBatchMemory(TripletMarginLoss(0.05), memory_size=N,
                          miner=TripletMarginMiner(0.2, "semihard")): a batch of B against a
                          full memory of N past embeddings (normalized Euclidean)
    clip                  open_clip ClipLoss: symmetric InfoNCE, B images and B texts, τ = 0.07
    siglip                open_clip SigLipLoss: sigmoid loss, logit scale 10, bias −10
    ntxent-membank        lightly NTXentLoss(0.07) with a MoCo memory bank of N negatives
                          (B queries, B keys; only the bank's entries are negatives)
    multi-similarity      MultiSimilarityLoss(alpha=2, beta=50, base=0.5) (cosine)
    circle                CircleLoss(m=0.4, gamma=80) (cosine)
    lifted                LiftedStructureLoss(neg_margin=1, pos_margin=0) (normalized Euclidean)
    generalized-lifted    GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0)
    margin                MarginLoss(margin=0.2, beta=1.2) over every triplet
    multi-similarity-mined
                          MultiSimilarityMiner(epsilon=0.1) + MultiSimilarityLoss() (cosine)
    contrastive-pair-margin
                          PairMarginMiner(pos_margin=0.2, neg_margin=0.8) + ContrastiveLoss()
                          (normalized Euclidean)

`SUITES` name the lists of cases that are run by `fastcontrast bench --suite` and by the
pytest-benchmark files under bench/.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

FAMILIES = ("pair_margin", "triplet", "softmax")
DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class LossSpec:
    name: str
    family: str
    labels: str = "classes"   # "classes" | "simclr" | "pairs" (query i matches key i) | "membank"
    two_inputs: bool = False  # query and key tensors (InfoNCE) instead of one batch
    memory: bool = False      # a memory of N past embeddings (CrossBatchMemory), no gradient
    flops_per_pair: int = 0   # FLOP per (anchor, reference, dim) for fwd+bwd, 0 = not counted
    summary: str = ""


LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in [
    LossSpec("contrastive", "pair_margin", summary="max-margin contrastive, PML ContrastiveLoss"),
    LossSpec("triplet-all", "triplet", summary="PML TripletMarginMiner('all') + TripletMarginLoss"),
    LossSpec("triplet-hard", "triplet", summary="PML TripletMarginMiner('hard') + TripletMarginLoss"),
    LossSpec("triplet-semihard", "triplet", summary="PML TripletMarginMiner('semihard') + TripletMarginLoss"),
    LossSpec("triplet-easy", "triplet", summary="PML TripletMarginMiner('easy') + TripletMarginLoss"),
    LossSpec("triplet-batch-all", "triplet", summary="PML TripletMarginLoss over all triplets"),
    LossSpec("triplet-batch-hard", "triplet", summary="PML BatchHardMiner + TripletMarginLoss"),
    LossSpec("triplet-semihard-tfa", "triplet", summary="TF Addons triplet_semihard_loss"),
    LossSpec("ntxent", "softmax", flops_per_pair=8, summary="PML NTXentLoss, class labels"),
    LossSpec("ntxent-simclr", "softmax", labels="simclr", flops_per_pair=8,
             summary="PML NTXentLoss, SimCLR pair labels"),
    LossSpec("supcon", "softmax", flops_per_pair=8, summary="PML SupConLoss"),
    LossSpec("npair", "softmax", flops_per_pair=8, summary="PML NPairsLoss"),
    LossSpec("info-nce", "softmax", labels="pairs", two_inputs=True, flops_per_pair=8,
             summary="InfoNCE / CLIP one direction, query vs keys"),
    LossSpec("xbm-triplet-semihard", "triplet", memory=True,
             summary="PML CrossBatchMemory + semi-hard TripletMarginMiner + TripletMarginLoss"),
    LossSpec("clip", "softmax", labels="pairs", two_inputs=True, flops_per_pair=8,
             summary="open_clip ClipLoss, symmetric InfoNCE"),
    LossSpec("siglip", "softmax", labels="pairs", two_inputs=True, flops_per_pair=8,
             summary="open_clip SigLipLoss, sigmoid loss"),
    LossSpec("ntxent-membank", "softmax", labels="membank", two_inputs=True, flops_per_pair=8,
             summary="lightly NTXentLoss with a MoCo memory bank of N negatives"),
    LossSpec("multi-similarity", "softmax", summary="PML MultiSimilarityLoss"),
    LossSpec("circle", "softmax", summary="PML CircleLoss"),
    LossSpec("lifted", "softmax", summary="PML LiftedStructureLoss"),
    LossSpec("generalized-lifted", "softmax", summary="PML GeneralizedLiftedStructureLoss"),
    LossSpec("margin", "pair_margin", summary="PML MarginLoss (all triplets)"),
    LossSpec("multi-similarity-mined", "softmax", summary="PML MultiSimilarityMiner + MultiSimilarityLoss"),
    LossSpec("contrastive-pair-margin", "pair_margin", summary="PML PairMarginMiner + ContrastiveLoss"),
]}


@dataclass(frozen=True)
class Case:
    loss: str
    B: int
    D: int = 128
    N: int | None = None      # references (InfoNCE keys); None = the batch itself
    dtype: str = "float32"
    classes: int = 10
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; known: {', '.join(DEVICES)}")
        if self.B < 2 or self.D < 1 or self.classes < 1:
            raise ValueError(f"case needs B >= 2, D >= 1, classes >= 1; got {self}")
        if self.spec.memory and self.n_ref < self.B:
            raise ValueError(f"{self.loss}: the memory (N = {self.n_ref}) must hold the batch (B = {self.B})")
        if self.spec.labels == "simclr" and self.B % 2:
            raise ValueError(f"{self.loss} pairs rows i and i + B/2: B must be even, got {self.B}")

    @property
    def spec(self) -> LossSpec:
        return LOSSES[self.loss]

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def n_ref(self) -> int:
        return self.B if self.N is None else self.N

    @property
    def name(self) -> str:
        n = "" if self.N is None else f"-N{self.N}"
        return f"{self.loss}-B{self.B}{n}-D{self.D}-{self.dtype}-{self.device}"

    @property
    def flops(self) -> int:
        """FLOP of one forward+backward counted as flops_per_pair·B·N·D (0 if not counted)."""
        return self.spec.flops_per_pair * self.B * self.n_ref * self.D

    @property
    def input_bytes(self) -> int:
        """Bytes of the inputs and their gradients (embeddings, keys, labels)."""
        item = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}[self.dtype]
        rows = self.B + (self.n_ref if self.spec.two_inputs else 0)
        memory = self.n_ref * (self.D * item + 8) if self.spec.memory else 0
        return 2 * rows * self.D * item + self.B * 8 + memory

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(name=self.name, family=self.family)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


def make_inputs(case: Case, requires_grad: bool = True) -> dict:
    """Deterministic inputs of a case: {"emb", "labels"[, "keys"][, "memory_emb",
    "memory_labels"]} on case.device; a memory holds N rows that need no gradient."""
    import torch

    dtype = getattr(torch, case.dtype)
    gen = torch.Generator().manual_seed(case.seed)
    emb = torch.randn(case.B, case.D, generator=gen, dtype=torch.float32)
    spec = case.spec
    if spec.labels == "simclr":
        labels = torch.arange(case.B // 2).repeat(2)
    elif spec.labels == "pairs":
        labels = torch.arange(case.B)
    else:
        labels = torch.randint(0, case.classes, (case.B,), generator=gen)
    out = {"emb": emb, "labels": labels}
    if spec.labels == "membank":  # B keys (the other view) and a bank of N unit vectors
        import torch.nn.functional as F
        out["keys"] = emb + 0.5 * torch.randn(case.B, case.D, generator=gen)
        out["bank"] = F.normalize(torch.randn(case.n_ref, case.D, generator=gen), dim=1).to(
            device=case.device, dtype=torch.float32)
    elif spec.two_inputs:
        keys = emb[: min(case.B, case.n_ref)].clone()
        extra = case.n_ref - keys.shape[0]
        if extra > 0:
            keys = torch.cat([keys, torch.randn(extra, case.D, generator=gen)])
        out["keys"] = keys + 0.5 * torch.randn(case.n_ref, case.D, generator=gen)
    if spec.memory:
        out["memory_emb"] = torch.randn(case.n_ref, case.D, generator=gen).to(device=case.device, dtype=dtype)
        out["memory_labels"] = torch.randint(0, case.classes, (case.n_ref,), generator=gen).to(case.device)
    for k in ("emb", "keys"):
        if k in out:
            out[k] = out[k].to(device=case.device, dtype=dtype).requires_grad_(requires_grad)
    out["labels"] = out["labels"].to(case.device)
    return out


def leaves(inputs: dict) -> list:
    return [inputs[k] for k in ("emb", "keys") if k in inputs]


# ---------------------------------------------------------------- suites -------------

@dataclass(frozen=True)
class Entry:
    """A case of a suite and the implementations to run on it (None = every applicable)."""

    case: Case
    impls: tuple[str, ...] | None = None
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


FC_TORCH = "fastcontrast-torch"
FC_TRITON = "fastcontrast-triton"
GPU_DENSE = (FC_TRITON, FC_TORCH, "dense-eager", "dense-compile")


def _cpu_headline() -> list[Entry]:
    """Issue 2, on the project's 2-core CPU: PML semantics, D=128, 10 classes."""
    out = []
    for B in (1024, 2048, 8192):
        out.append(Entry(Case("triplet-semihard", B), (FC_TORCH, "pml"), tags=("headline",)))
    out.append(Entry(Case("ntxent-simclr", 1024), (FC_TORCH, "pml"), tags=("headline",)))
    return out


def _gpu() -> list[Entry]:
    """Issues 3 and 4 on one GPU (H100 / H200). Ordered by importance: the first entries
    are the acceptance figures, so a run cut short still has them."""
    E, C = Entry, Case
    out = [
        # issue 4: semi-hard at B=2048, PML miner semantics and TF Addons semantics
        E(C("triplet-semihard", 2048, device="cuda"), (FC_TRITON, FC_TORCH, "pml", "dense-eager"),
          note="target: >= 100x faster than PML, peak extra <= 64 MiB"),
        E(C("triplet-semihard-tfa", 2048, device="cuda"), (FC_TRITON, FC_TORCH, "dense-eager"),
          note="target: peak extra <= 64 MiB"),
        # issue 3: softmax family at B = 16384 (two views of 8192), D = 128, bf16
        E(C("ntxent-simclr", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE + ("matmul",),
          note="target: >= 3x eager, >= 1.5x compile, <= 1% of eager memory, >= 70% of matmul"),
        E(C("supcon", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE + ("matmul",)),
        E(C("info-nce", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE + ("matmul",)),
        # issue 4: batch-hard and pair-margin at B=16384 vs eager and compile
        E(C("triplet-batch-hard", 16384, device="cuda"), GPU_DENSE,
          note="target: >= 3x eager, >= 1.5x compile"),
        E(C("contrastive", 16384, device="cuda"), GPU_DENSE,
          note="target: >= 3x eager, >= 1.5x compile"),
        # issue 4: semi-hard and batch-all at B=65536 under 1 s
        E(C("triplet-semihard", 65536, device="cuda"), (FC_TRITON,), note="target: < 1 s"),
        E(C("triplet-batch-all", 65536, device="cuda"), (FC_TRITON,), note="target: < 1 s"),
        E(C("triplet-semihard-tfa", 65536, device="cuda"), (FC_TRITON,)),
        # issue 3: B = N = 262144 (the dense fp32 logit matrix alone would be 256 GiB)
        E(C("info-nce", 262144, dtype="bfloat16", device="cuda"), (FC_TRITON,),
          note="report time and peak memory"),
        E(C("ntxent-simclr", 262144, dtype="bfloat16", device="cuda"), (FC_TRITON,)),
        # issue 15: CrossBatchMemory, semi-hard mining against a memory of 65536 rows
        E(C("xbm-triplet-semihard", 256, N=65536, device="cuda"), (FC_TRITON, FC_TORCH, "pml")),
    ]
    # issue 17: image-text losses at CLIP scale
    out += [E(C("siglip", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE + ("matmul",)),
            E(C("clip", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE + ("matmul",)),
            E(C("ntxent-membank", 4096, N=65536, dtype="bfloat16", device="cuda"), (FC_TRITON, FC_TORCH, "dense-eager"))]
    # the rest of the families on the GPU, fp32, for the README table
    for loss in ("triplet-all", "triplet-hard", "triplet-easy", "triplet-batch-all",
                 "ntxent", "npair"):
        out.append(E(C(loss, 4096, device="cuda"), (FC_TRITON, FC_TORCH, "dense-eager", "pml")))
    # issue 16: the pair-based losses and the fused miner + loss steps (PML's Lifted and Margin
    # build B×B×B-sized work: left out at this size)
    out.append(E(C("multi-similarity", 16384, dtype="bfloat16", device="cuda"), GPU_DENSE))
    for loss in ("multi-similarity", "circle", "generalized-lifted", "multi-similarity-mined",
                 "contrastive-pair-margin", "lifted", "margin"):
        pml = () if loss in ("lifted", "margin") else ("pml",)
        out.append(E(C(loss, 4096, device="cuda"), (FC_TRITON, FC_TORCH, "dense-eager") + pml))
    # issue 14, last (a cut run loses it first): the grouped sweep with torch ops (one merged
    # sort per row, then scans) on the GPU, against the Triton path's binary searches above
    out.append(E(C("triplet-semihard", 65536, device="cuda"), (FC_TORCH,),
                 note="the merged-sort sweep on the GPU; compare with the Triton row at B = 65536"))
    return out


def _cpu_xbm() -> list[Entry]:
    """Issue 15: CrossBatchMemory with a semi-hard miner, batch 256, memory 8192 and 65536
    (pytorch-metric-learning lists B·M·M candidate triplets; running out of memory is a result)."""
    return [Entry(Case("xbm-triplet-semihard", 256, N=n), (FC_TORCH, "pml")) for n in (8192, 65536)]


def _cpu_all() -> list[Entry]:
    """Every loss on the CPU at one moderate size, all implementations (a quick overview)."""
    return [Entry(Case(loss, 512)) for loss in LOSSES]


def _cpu_image_text() -> list[Entry]:
    """Issue 17 on the CPU: SigLIP and CLIP against the open_clip-equivalent dense code,
    NT-Xent with a 65536-entry memory bank against the lightly-equivalent dense code."""
    impls = (FC_TORCH, "dense-eager")
    out = [Entry(Case(loss, B), impls, tags=("image-text",)) for loss in ("siglip", "clip") for B in (1024, 4096, 16384)]
    out.append(Entry(Case("ntxent-membank", 256, N=65536), impls, tags=("image-text",)))
    return out


def _gpu_rehearse() -> list[Entry]:
    """The GPU suite's first cases at smoke size on the CPU (kernels in the interpreter):
    what `bash bench/gpu_run.sh --rehearse` runs in CI so that the GPU run cannot rot."""
    wanted = ("triplet-semihard", "ntxent-simclr", "contrastive", "triplet-batch-hard")
    out, seen = [], set()
    for entry in _gpu():
        if entry.case.loss in wanted and entry.case.loss not in seen:
            seen.add(entry.case.loss)
            case = replace(tiny(entry.case), device="cpu", dtype="float32")
            out.append(Entry(case, (FC_TRITON, FC_TORCH, "dense-eager"), note=entry.note, tags=("rehearsal",)))
    return out


SUITES = {
    "cpu-headline": _cpu_headline,
    "cpu-all": _cpu_all,
    "cpu-xbm": _cpu_xbm,
    "cpu-image-text": _cpu_image_text,
    "gpu": _gpu,
    "gpu-rehearse": _gpu_rehearse,
}


def suite(name: str) -> list[Entry]:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]()


def tiny(case: Case) -> Case:
    """The smoke-test size of a case: same loss, dtype and device, tiny B, N, D."""
    N = None if case.N is None else (48 if case.spec.memory else 24)
    return replace(case, B=24, N=N, D=16, classes=min(case.classes, 4))


# ---------------------------------------------------------------- pytest-benchmark ----

CPU_IMPLS = ("fastcontrast-torch", "dense-eager", "dense-compile", "pml")
CPU_FULL_B = {"triplet": 512, "pair_margin": 2048, "softmax": 2048}  # dense triplets are B³


def pytest_entries(family: str, full: bool) -> list[tuple[Case, str]]:
    """(case, implementation) pairs of the pytest-benchmark file of a family: every loss on
    the CPU, then the GPU suite's cases (skipped without CUDA). Tiny sizes unless `full`."""
    out = []
    for loss, spec in LOSSES.items():
        if spec.family != family:
            continue
        case = Case(loss, CPU_FULL_B[family])
        case = case if full else tiny(case)
        out += [(case, impl) for impl in CPU_IMPLS]
    for entry in suite("gpu"):
        if entry.case.family != family:
            continue
        case = entry.case if full else tiny(entry.case)
        out += [(case, impl) for impl in (entry.impls or (FC_TRITON, FC_TORCH))]
    seen, unique = set(), []
    for case, impl in out:
        if (case, impl) not in seen:
            seen.add((case, impl))
            unique.append((case, impl))
    return unique


def full_size() -> bool:
    """FASTCONTRAST_BENCH_SIZE=full asks the pytest-benchmark suites for the real sizes."""
    import os
    return os.environ.get("FASTCONTRAST_BENCH_SIZE", "tiny").strip().lower() == "full"


def case_id(value) -> str:
    """pytest id of a Case or an implementation name."""
    return value if isinstance(value, str) else value.name
