"""Distances and similarities: the one tile helper of the PyTorch path.

Four metrics, named as users write them:

    "dot"                s = x·y                         (a similarity)
    "cosine"             s = x̂·ŷ, x̂ = x/max(‖x‖, 1e-12)   (a similarity; "dot" on normalized rows)
    "squared_euclidean"  d = ‖x − y‖²                    (a distance)
    "euclidean"          d = ‖x − y‖                     (a distance)

Normalization is applied once to the inputs (differentiably, outside the loss Functions),
so a loss Function only ever sees the three *kernel kinds* "dot", "sqeuclidean",
"euclidean". `pairwise` computes a tile of one of them from two row blocks;
`pairwise_backward` maps dL/dtile back to the two blocks. The Triton kernels use the same
formulas (kernels/tiles.py), so both backends agree to rounding.

Squared distances use the matmul form ‖x‖² + ‖y‖² − 2x·y, clamped at 0. Its cancellation
error is about eps·(‖x‖² + ‖y‖²); values below SNAP·eps·(‖x‖² + ‖y‖²) are snapped to exactly
0, so duplicate rows have distance 0 and — for "euclidean", whose derivative 1/(2d) is
unbounded — gradient 0, never a huge number made of rounding noise or a NaN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ._validation import check_choice

METRICS = ("dot", "cosine", "squared_euclidean", "euclidean")
KERNEL_KINDS = ("dot", "sqeuclidean", "euclidean")
NORMALIZE_EPS = 1e-12
SNAP = 4.0  # squared distances below SNAP·eps(dtype)·(‖x‖²+‖y‖²) are rounding noise: 0


@dataclass(frozen=True)
class Metric:
    """A metric as the loss Functions see it."""

    kind: str            # "dot" | "sqeuclidean" | "euclidean"
    normalize: bool      # L2-normalize the inputs first
    is_similarity: bool  # larger = closer ("dot", "cosine")


def resolve_metric(distance: str, normalize: bool | None = None) -> Metric:
    """Map a user-facing metric name (+ optional normalization override) to a Metric.

    `normalize=None` means the metric's natural default: True for "cosine", False otherwise.
    `normalize=False` with "cosine" is refused (it would silently be "dot").
    """
    check_choice(distance, "distance", METRICS)
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None, got {type(normalize).__name__}")
    if distance == "cosine":
        if normalize is False:
            raise ValueError("normalize=False contradicts distance='cosine'; use distance='dot'")
        return Metric("dot", True, True)
    kind = {"dot": "dot", "squared_euclidean": "sqeuclidean", "euclidean": "euclidean"}[distance]
    return Metric(kind, bool(normalize), distance == "dot")


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """x / max(‖x‖₂, 1e-12) row-wise (the same as torch.nn.functional.normalize)."""
    return F.normalize(x, p=2.0, dim=1, eps=NORMALIZE_EPS)


def prepare(x: torch.Tensor, metric: Metric) -> torch.Tensor:
    return normalize_rows(x) if metric.normalize else x


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64; everything else (fp32, fp16, bf16) accumulates in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def snap_tolerance(dtype: torch.dtype) -> float:
    return SNAP * torch.finfo(compute_dtype(dtype)).eps


def pairwise(x: torch.Tensor, y: torch.Tensor, kind: str,
             x_sq: torch.Tensor | None = None, y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Tile of `kind` between rows of x (m×D) and y (n×D): an m×n tensor.

    Inputs must already be in the compute dtype. x_sq / y_sq (row squared norms) may be
    passed in to avoid recomputing them for every tile.
    """
    if kind == "dot":
        return x @ y.T
    if kind not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"unknown kernel kind {kind!r}")
    if x_sq is None:
        x_sq = (x * x).sum(1)
    if y_sq is None:
        y_sq = (y * y).sum(1)
    scale = x_sq[:, None] + y_sq[None, :]
    sq = torch.addmm(scale, x, y.T, alpha=-2.0)  # one fused pass: ‖x‖² + ‖y‖² − 2x·y
    sq = sq.masked_fill_(sq <= scale.mul_(snap_tolerance(x.dtype)), 0.0)
    return sq if kind == "sqeuclidean" else sq.sqrt_()


def pairwise_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kind: str,
                      tile: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Given dL/dtile (m×n) for tile = pairwise(x, y, kind), return (dL/dx, dL/dy).

    For "euclidean" pass the forward tile (the distances) when at hand; it is recomputed
    otherwise. At d = 0 the gradient is 0.
    """
    if kind == "dot":
        return grad @ y, grad.T @ x
    if kind == "euclidean":
        if tile is None:
            tile = pairwise(x, y, "euclidean")
        grad = torch.where(tile > 0, grad / (2.0 * tile).clamp_min(torch.finfo(tile.dtype).tiny), torch.zeros((), dtype=grad.dtype, device=grad.device))
    elif kind != "sqeuclidean":
        raise ValueError(f"unknown kernel kind {kind!r}")
    # d = ‖x‖² + ‖y‖² − 2x·y  ⇒  ∂/∂x_i = 2(Σ_j g_ij) x_i − 2 Σ_j g_ij y_j
    gx = 2.0 * (grad.sum(1, keepdim=True) * x - grad @ y)
    gy = 2.0 * (grad.sum(0)[:, None] * y - grad.T @ x)
    return gx, gy


def chunk_rows(m: int, n: int, budget_elems: int = 1 << 22) -> int:
    """Rows per anchor chunk so that a chunk×n tile holds about `budget_elems` elements
    (4M fp32 elements = 16 MiB per live tile)."""
    return max(1, min(m, budget_elems // max(n, 1)))


def chunks(m: int, n: int, budget_elems: int = 1 << 22) -> Iterator[slice]:
    step = chunk_rows(m, n, budget_elems)
    for start in range(0, m, step):
        yield slice(start, min(start + step, m))
