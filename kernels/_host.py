"""Host-side pieces every kernel family shares: checks of the config codes, input preparation,
squared row norms, and the registration of a family's launchers as torch ops.

The ops take tensors and scalars only (what torch.compile traces). On a GPU they are
torch.library.triton_op, whose kernels torch.compile sees through; under TRITON_INTERPRET=1
the kernels are interpreter objects that cannot be traced, so the ops are opaque custom ops
with shape-only fake implementations.
"""
from __future__ import annotations

import torch
import triton
from triton.runtime.jit import JITFunction

from fastcontrast import metrics

from . import tiles

PRECISIONS = ("ieee", "tf32")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

TRACEABLE = isinstance(tiles.dot_tile, JITFunction)  # False under TRITON_INTERPRET=1


def launchable(kernel):
    """The kernel as a registered op launches it: wrapped for tracing when it can be traced."""
    return torch.library.wrap_triton(kernel) if TRACEABLE else kernel


def register_ops(name: str, fwd_impl, bwd_impl, fwd_fake, bwd_fake):
    """-> (op "fastcontrast::<name>_fwd", op "fastcontrast::<name>_bwd")."""
    fwd_name, bwd_name = f"fastcontrast::{name}_fwd", f"fastcontrast::{name}_bwd"
    if TRACEABLE:
        return (torch.library.triton_op(fwd_name, fwd_impl, mutates_args=()),
                torch.library.triton_op(bwd_name, bwd_impl, mutates_args=()))
    fwd_op = torch.library.custom_op(fwd_name, fwd_impl, mutates_args=())
    fwd_op.register_fake(fwd_fake)
    bwd_op = torch.library.custom_op(bwd_name, bwd_impl, mutates_args=())
    bwd_op.register_fake(bwd_fake)
    return fwd_op, bwd_op


def code(cfg, field: str, codes: dict) -> int:
    """codes[cfg.<field>], or a ValueError naming the field and its choices."""
    value = getattr(cfg, field)
    if value not in codes:
        raise ValueError(f"cfg.{field} must be one of {tuple(codes)}, got {value!r}")
    return codes[value]


def metric_code(cfg) -> int:
    """The tiles.KIND_CODES code of cfg.kind, after checking cfg.kind and cfg.precision."""
    kind = code(cfg, "kind", tiles.KIND_CODES)
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"cfg.precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    return kind


def prepare(q, r, q_labels, r_labels, family: str):
    """Contiguous inputs in q's dtype and int32 label ids (`label_ids`), or a TypeError for a
    dtype the kernels do not take."""
    for name, x in (("q", q), ("r", r)):
        if x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"the Triton {family} kernels take float32/float16/bfloat16 {name}, got {x.dtype}; "
                            "use backend='torch' for float64")
    q, r = q.contiguous(), r.contiguous()
    if r.dtype != q.dtype:
        r = r.to(q.dtype)
    if not TRACEABLE and q.dtype == torch.bfloat16:
        # The interpreter's tl.dot multiplies the raw bit patterns of bfloat16 operands
        # (triton-lang/triton#11584): run the float32 kernels on the exactly upcast inputs.
        q, r = q.float(), r.float()
    q_ids, r_ids = label_ids(q_labels, r_labels)
    return q, r, q_ids, r_ids


def label_ids(q_labels: torch.Tensor, r_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 labels for the kernels, equal exactly where the given labels are equal: the rank
    of each label among the distinct labels of both sides (one sort, no host sync). 32-bit
    compares are half the integer work of 64-bit ones in every tile's masks, whatever range
    the given labels span."""
    same = r_labels is q_labels
    both = q_labels.reshape(-1) if same else torch.cat([q_labels.reshape(-1), r_labels.reshape(-1).to(q_labels.dtype)])
    if both.numel() == 0:
        empty = both.new_empty((0,), dtype=torch.int32)
        return empty, empty
    ordered, order = torch.sort(both.to(torch.int64))
    step = torch.ones_like(ordered, dtype=torch.int32)
    step[0] = 0
    step[1:] = (ordered[1:] != ordered[:-1]).to(torch.int32)
    ids = torch.empty_like(step).scatter_(0, order, torch.cumsum(step, 0, dtype=torch.int32))
    if same:
        return ids, ids
    return ids[: q_labels.numel()].contiguous(), ids[q_labels.numel():].contiguous()


def label_counts(ids: torch.Tensor, size: int) -> torch.Tensor:
    """int32 counts of each label id in [0, size) (`label_ids` gives ids below M + N; an id
    of −1, a masked-out reference, counts nowhere): integer atomics, so deterministic, and no
    host sync."""
    ids = ids.reshape(-1)
    counts = torch.zeros((max(size, 1),), dtype=torch.int32, device=ids.device)
    return counts.index_add_(0, ids.clamp_min(0).to(torch.int64), (ids >= 0).to(torch.int32))


def frame(q, r, kind: int, scale: bool = True):
    """Kernel inputs scaled by a power of two s (max |x/s| in [0.5, 1); exact), so that squares
    of huge or tiny rows stay inside float32: -> (q', r', s, unit), r' is q' when r is q. A
    true tile is unit × the kernel's tile and ∂L/∂x = ∂L/∂x' / s. Not for KIND_DOT, not for
    float16 (whose squares cannot overflow float32), nor with scale=False (kernels that
    compare distances with margins inside). No centering: a near pair's difference must come
    from uncentered rows (metrics.Frame), and the kernels read one copy of each row. s and
    unit are 0-dim float32 tensors: no host sync."""
    one = torch.ones((), dtype=torch.float32, device=q.device)
    if kind == tiles.KIND_CODES["dot"] or q.dtype == torch.float16 or not scale:
        return q, r, one, one
    peak = q.detach().abs().amax().float()
    if r is not q:
        peak = torch.maximum(peak, r.detach().abs().amax().float())
    s = metrics.power_of_two_near(peak)
    qf = q / s.to(q.dtype)
    rf = qf if r is q else r / s.to(r.dtype)
    unit = s if kind == tiles.KIND_CODES["euclidean"] else s * s
    return qf, rf, s, unit


def squared_norms(x: torch.Tensor, kind: int) -> torch.Tensor:
    """fp32 ‖x_i‖² per row for the distance kinds; a placeholder the dot tiles never read.
    Σ x² as metrics.pairwise (the PyTorch path) computes it: exact for small integers, which
    a norm then a square is not."""
    if kind == tiles.KIND_CODES["dot"]:
        return x.new_empty((1,), dtype=torch.float32)
    x = x.float()
    return (x * x).sum(1)


def upstream_grad(grad_values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The gradient of the per-anchor values as the backward kernels read it."""
    return grad_values.to(device=device, dtype=torch.float32).contiguous()


def pow2(x: int, lo: int, hi: int) -> int:
    """The power of two at or above x, clamped to [lo, hi] (block sizes)."""
    return max(lo, min(hi, triton.next_power_of_2(x)))
