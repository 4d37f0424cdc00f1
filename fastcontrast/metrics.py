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
error is a few eps·(‖x‖² + ‖y‖²), so wherever the result lies inside RECOMPUTE·eps·(‖x‖² +
‖y‖²) — near-duplicate rows, whose small distances the expansion cannot resolve — the entry
is recomputed from the row difference Σ(x − y)², and its gradient is taken from the
difference too (`pairwise_backward`). Identical rows get exactly 0 (and, for "euclidean",
gradient 0, never NaN); every other pair keeps about 1e-3 relative accuracy in float32.

`Frame`: the distance kinds are translation invariant, so a loss computes them between
x' = (x − c)/s, y' = (y − c)/s with c the (detached) mean of the reference rows and s a
power of two near the largest |x − c|. Centering makes a clustered batch (early training)
no harder than a spread-out one; the power-of-two scale is exact and keeps squares of
huge (‖x‖ ≳ 1e19) or tiny (≲ 1e-19) rows inside the float range. Tiles and gradients come
back in the true units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ._validation import check_choice

METRICS = ("dot", "cosine", "squared_euclidean", "euclidean")
KERNEL_KINDS = ("dot", "sqeuclidean", "euclidean")
NORMALIZE_EPS = 1e-12
# Squared distances within RECOMPUTE·eps·(‖x‖² + ‖y‖²) are recomputed from the row difference
# (the expansion's error is a few eps·(‖x‖² + ‖y‖²): outside the band it is < 1e-3 relative).
RECOMPUTE = 4096.0
# tf32 products round to 11 bits: the band is wider in eps and accepts ~10% error outside it.
RECOMPUTE_TF32 = 16.0
TF32_EPS = 2.0 ** -11
NEAR_BLOCK = 1 << 18  # elements of one block of near pairs recomputed at a time (pairs × D)
SCREEN_BLOCK = 1 << 16  # entries of one row block of the near-band screen on the CPU (its bool mask: 64 KiB)


@dataclass(frozen=True)
class Metric:
    """A metric as the loss Functions see it: a kernel kind, whether rows are normalized, and its sense.

    "cosine" is Metric("dot", True, True); a distance d is compared directly, a similarity s as d = −s.

    Args:
        kind (str): "dot", "sqeuclidean" or "euclidean".
        normalize (bool): L2-normalize the rows first.
        is_similarity (bool): larger means closer ("dot", "cosine").

    Returns:
        Metric: a frozen dataclass.

    Raises:
        Nothing (resolve_metric checks user input).

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.resolve_metric("cosine")
        Metric(kind='dot', normalize=True, is_similarity=True)
    """

    kind: str            # "dot" | "sqeuclidean" | "euclidean"
    normalize: bool      # L2-normalize the inputs first
    is_similarity: bool  # larger = closer ("dot", "cosine")


def resolve_metric(distance: str, normalize: bool | None = None) -> Metric:
    """The Metric of a user-facing distance name and normalization choice.

    Args:
        distance (str): "euclidean", "squared_euclidean", "dot" or "cosine".
        normalize (bool or None, default None): L2-normalize the rows first; None means the
            distance's natural default (True for "cosine", False otherwise).

    Returns:
        Metric: the resolved metric.

    Raises:
        ValueError: an unknown distance, or normalize=False with "cosine".
        TypeError: normalize is not a bool or None.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.resolve_metric("euclidean", True)
        Metric(kind='euclidean', normalize=True, is_similarity=False)
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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a loss accumulates in: float64 stays float64, every other dtype uses float32.

    Args:
        dtype (torch.dtype): the inputs' dtype.

    Returns:
        torch.dtype: float64 or float32.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.compute_dtype(torch.bfloat16)
        torch.float32
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_rows(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Row-wise L2 normalization x / max(‖x‖₂, 1e-12), computed in the compute dtype.

    Each row is first divided by its largest |entry| (detached), so a float16 zero row gives 0
    and rows whose norm overflows are still normalized.

    Args:
        x (Tensor (B, D)): the rows.
        dtype (torch.dtype or None, default None): the result's dtype; None means x's.

    Returns:
        Tensor (B, D): unit rows (zero rows stay zero).

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.normalize_rows(torch.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    cd = compute_dtype(x.dtype)
    xf = x.to(cd)
    peak = xf.detach().abs().amax(1, keepdim=True).clamp_min(torch.finfo(cd).tiny)
    y = xf / peak
    out = y / torch.maximum(torch.linalg.vector_norm(y, dim=1, keepdim=True), NORMALIZE_EPS / peak)
    return out.to(x.dtype if dtype is None else dtype)


def prepare(x: torch.Tensor, metric: Metric, backend: str = "torch") -> torch.Tensor:
    """The rows a loss Function receives: normalized when the metric says so, else x itself.

    Normalized rows stay in the compute dtype for the PyTorch path and are rounded back to x's
    dtype for the Triton kernels (whose 16-bit tiles want 16-bit rows).

    Args:
        x (Tensor (B, D)): the rows.
        metric (Metric): the resolved metric.
        backend (str, default "torch"): "torch" or "triton".

    Returns:
        Tensor (B, D): the prepared rows.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.prepare(torch.tensor([[3.0, 4.0]]), metrics.resolve_metric("cosine"))
        tensor([[0.6000, 0.8000]])
    """
    if metric.normalize:
        return normalize_rows(x, x.dtype if backend == "triton" else compute_dtype(x.dtype))
    return x


def matmul_precision(dtype: torch.dtype, device: torch.device | None = None) -> str:
    """The kernels' matmul input precision that follows PyTorch's float32 setting.

    "tf32" for float32 on CUDA when torch.backends.cuda.matmul.allow_tf32 is on, "ieee"
    otherwise (16-bit inputs always run at their native precision).

    Args:
        dtype (torch.dtype): the inputs' dtype.
        device (torch.device or None, default None): their device.

    Returns:
        str: "ieee" or "tf32".

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.matmul_precision(torch.float32, torch.device("cpu"))
        'ieee'
    """
    if dtype != torch.float32 or (device is not None and device.type != "cuda"):
        return "ieee"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def near_tolerance(dtype: torch.dtype, precision: str = "ieee") -> float:
    """The band, relative to ‖x‖² + ‖y‖², inside which a squared distance is recomputed from the row difference.

    tol = 4096·eps (16·2⁻¹¹ for tf32 products) of the compute dtype.

    Args:
        dtype (torch.dtype): the inputs' dtype.
        precision (str, default "ieee"): "ieee" or "tf32".

    Returns:
        float: the relative tolerance.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.near_tolerance(torch.float32) == 4096 * torch.finfo(torch.float32).eps
        True
    """
    if precision == "tf32" and compute_dtype(dtype) == torch.float32:
        return RECOMPUTE_TF32 * TF32_EPS
    return RECOMPUTE * torch.finfo(compute_dtype(dtype)).eps


def _near_pairs(sq: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor, tol: float):
    """Index pairs (i, j) of the entries of a squared-distance tile inside the band,
    max(sq, 0) ≤ fl(fl(‖x_i‖² + ‖y_j‖²)·tol) (every sq ≤ 0 is one). Screened first against
    the row bound fl(fl(‖x_i‖² + max_j ‖y_j‖²)·tol) (rounding is monotone, so no pair in the band
    is missed), then tested exactly on the few candidates."""
    if y_sq.shape[0] == 0 or x_sq.shape[0] == 0:
        return sq.new_zeros(0, dtype=torch.long), sq.new_zeros(0, dtype=torch.long)
    bound = (x_sq + y_sq.amax()).mul_(tol)
    if sq.device.type == "cpu":
        # row blocks screened into one small mask (a fresh tile-sized mask pays its page
        # faults on every tile), searched by numpy's flat search (several times faster there)
        m, n = sq.shape
        rows = max(1, SCREEN_BLOCK // max(n, 1))
        mask = torch.empty(min(rows, m) * n, dtype=torch.bool)
        found = []
        for r0 in range(0, m, rows):
            part = sq[r0:r0 + rows]
            screen = torch.le(part, bound[r0:r0 + rows, None], out=mask[:part.numel()].view(part.shape))
            flat = np.flatnonzero(screen.numpy())
            if flat.size:
                found.append(torch.from_numpy(flat) + r0 * n)
        flat = torch.cat(found) if found else torch.zeros(0, dtype=torch.long)
        i, j = torch.div(flat, n, rounding_mode="floor"), flat % n
    else:
        i, j = (sq <= bound[:, None]).nonzero(as_tuple=True)
    keep = sq[i, j].clamp_min_(0.0) <= (x_sq[i] + y_sq[j]).mul_(tol)
    return i[keep], j[keep]


def _difference_sq(x, y, i, j):
    """Σ_d (x_i − y_j)² for index pairs, in blocks of NEAR_BLOCK elements."""
    out = x.new_empty(i.shape[0])
    step = max(1, NEAR_BLOCK // max(x.shape[1], 1))
    for k in range(0, i.shape[0], step):
        diff = x[i[k:k + step]] - y[j[k:k + step]]
        out[k:k + step] = (diff * diff).sum(1)
    return out


def pairwise(x: torch.Tensor, y: torch.Tensor, kind: str,
             x_sq: torch.Tensor | None = None, y_sq: torch.Tensor | None = None,
             return_near: bool = False, x_abs: torch.Tensor | None = None, y_abs: torch.Tensor | None = None,
             out: torch.Tensor | None = None):
    """The m × n tile of `kind` between the rows of x and y, without autograd.

    dot: x·yᵀ; sqeuclidean: ‖x‖² + ‖y‖² − 2x·y, entries within the near band recomputed from
    the row difference; euclidean: its square root.

    Args:
        x (Tensor (m, D)): rows in the compute dtype.
        y (Tensor (n, D)): rows in the compute dtype.
        kind (str): "dot", "sqeuclidean" or "euclidean".
        x_sq (Tensor (m,) or None, default None): x's squared row norms, if already known.
        y_sq (Tensor (n,) or None, default None): y's squared row norms, if already known.
        return_near (bool, default False): also return the recomputed index pairs.
        x_abs (Tensor (m, D) or None, default None): x before centering (a Frame's), for the
            near pairs' differences.
        y_abs (Tensor (n, D) or None, default None): y before centering.
        out (Tensor (m, n) or None, default None): a contiguous buffer of the compute dtype to
            write the tile into (a caller computing many tiles of one shape reuses one: on the
            CPU every fresh buffer of several MiB pays its page faults again).

    Returns:
        Tensor (m, n), or (Tensor (m, n), (rows, cols)) with return_near.

    Raises:
        ValueError: an unknown kind ("dot", "sqeuclidean", "euclidean").

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.pairwise(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), "euclidean")
        tensor([[5.]])
    """
    near = None
    if kind == "dot":
        out = x @ y.T if out is None else torch.matmul(x, y.T, out=out)
    elif kind in ("sqeuclidean", "euclidean"):
        if x_sq is None:
            x_sq = (x * x).sum(1)
        if y_sq is None:
            y_sq = (y * y).sum(1)
        # ‖x‖² + ‖y‖² − 2x·y, accumulated into the norms' sum in place; the entries ≤ 0 are all
        # in the near band (recomputed below), so no clamp is needed
        out = torch.add(x_sq[:, None], y_sq[None, :], out=out).addmm_(x, y.T, alpha=-2.0)
        near = _near_pairs(out, x_sq, y_sq, near_tolerance(x.dtype, matmul_precision(x.dtype, x.device)))
        if near[0].numel():
            out[near] = _difference_sq(x if x_abs is None else x_abs, y if y_abs is None else y_abs, *near)
        if kind == "euclidean":
            out = out.sqrt_()
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return (out, near) if return_near else out


def pairwise_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kind: str,
                      tile: torch.Tensor | None = None, near=None, x_abs: torch.Tensor | None = None,
                      y_abs: torch.Tensor | None = None, unit=None,
                      prescaled: bool = False, y_out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Given dL/dtile for tile = pairwise(x, y, kind), the gradients (dL/dx, dL/dy).

    d = ‖x‖² + ‖y‖² − 2x·y gives ∂L/∂x_i = 2(Σ_j g_ij) x_i − 2 Σ_j g_ij y_j; near pairs take
    2·g·(x_i − y_j) from the row difference; the Euclidean gradient is 0 at d = 0.

    Args:
        grad (Tensor (m, n)): dL/dtile.
        x (Tensor (m, D)): the forward's x.
        y (Tensor (n, D)): the forward's y.
        kind (str): "dot", "sqeuclidean" or "euclidean".
        tile (Tensor (m, n) or None, default None): the forward tile (recomputed if needed).
        near (tuple or None, default None): the forward's near pairs (recomputed when None).
        x_abs (Tensor (m, D) or None, default None): x before centering.
        y_abs (Tensor (n, D) or None, default None): y before centering.
        unit (Tensor (0-dim, a power of two) or None, default None): the given tile is
            unit · pairwise(x, y, kind) (a Frame's true tile); None: unit 1.
        prescaled (bool, default False): "euclidean" only: grad is already the caller's own
            buffer holding dL/dtile / max(2d, tiny), 0 where d = 0 (d = tile / unit), the
            first step below, computed elsewhere in the same float32 operations; it is
            updated in place.
        y_out (tuple of two Tensors (n, D) or None, default None): buffers of y's dtype: dL/dy
            is written into the first, the second is scratch (a caller looping over tiles
            reuses them; on the CPU a fresh buffer of several MiB pays its page faults again).

    Returns:
        tuple[Tensor (m, D), Tensor (n, D)]: dL/dx and dL/dy.

    Raises:
        ValueError: an unknown kind ("dot", "sqeuclidean", "euclidean").

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> gx, gy = metrics.pairwise_backward(torch.ones(1, 1), torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), "euclidean")
        >>> gy
        tensor([[0.6000, 0.8000]])
    """
    if kind == "dot":
        return grad @ y, (grad.T @ x if y_out is None else torch.matmul(grad.T, x, out=y_out[0]))
    if kind not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"unknown kernel kind {kind!r}")
    if near is None or (kind == "euclidean" and tile is None):
        tile, near = pairwise(x, y, kind, return_near=True, x_abs=x_abs, y_abs=y_abs)
        unit = None
    own = kind == "euclidean"          # grad is then a new tensor, updated in place below
    if own and not prescaled:
        # one buffer for grad / max(2d, tiny), 0 where d = 0 (a fresh c×N buffer per step costs
        # more than the arithmetic on CPU); 2d = tile · (2 / unit), exact for a power of two
        scaled = torch.mul(tile, 2.0 if unit is None else 2.0 / unit).clamp_min_(torch.finfo(tile.dtype).tiny)
        grad = torch.where(tile > 0, torch.div(grad, scaled, out=scaled), torch.zeros((), dtype=tile.dtype,
                           device=tile.device), out=scaled)
    i, j = near
    g_near = None
    if i.numel():
        g_near = grad[i, j]
        if own:
            grad.index_put_((i, j), torch.zeros_like(g_near))
        else:
            grad = grad.index_put((i, j), torch.zeros_like(g_near))
    # d = ‖x‖² + ‖y‖² − 2x·y  ⇒  ∂/∂x_i = 2(Σ_j g_ij) x_i − 2 Σ_j g_ij y_j
    gx = (grad.sum(1, keepdim=True) * x).sub_(grad @ y).mul_(2.0)
    if y_out is None:
        gy = (grad.sum(0)[:, None] * y).sub_(grad.T @ x).mul_(2.0)
    else:
        gy = torch.mul(grad.sum(0)[:, None], y, out=y_out[0]).sub_(torch.matmul(grad.T, x, out=y_out[1])).mul_(2.0)
    if g_near is not None:
        xa, ya = (x if x_abs is None else x_abs), (y if y_abs is None else y_abs)
        step = max(1, NEAR_BLOCK // max(x.shape[1], 1))
        for k in range(0, i.shape[0], step):
            ii, jj = i[k:k + step], j[k:k + step]
            part = (2.0 * g_near[k:k + step])[:, None] * (xa[ii] - ya[jj])
            gx.index_add_(0, ii, part)
            gy.index_add_(0, jj, -part)
    return gx, gy


def power_of_two_near(value: torch.Tensor) -> torch.Tensor:
    """2^e with value / 2^e in [0.5, 1) (1 for value 0), as a tensor: scaling by it is exact.

    Args:
        value (Tensor): positive or zero values (any shape).

    Returns:
        Tensor: powers of two, the shape of value.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.power_of_two_near(torch.tensor(5.0))
        tensor(8.)
    """
    _, exponent = torch.frexp(value)
    return torch.ldexp(torch.ones_like(value), exponent)


CENTER_BITS = 10  # the center is rounded to multiples of 2^-CENTER_BITS of the largest |entry|


def _round_center(r: torch.Tensor) -> torch.Tensor:
    """The mean of the rows, rounded to a coarse power-of-two grid: subtracting it is then
    exact for data on a coarser grid (small integers stay integers' worth of exact), and it is
    still close enough to the mean to take the clustered batch's offset away."""
    grid = power_of_two_near(r.abs().amax()) * 2.0 ** -CENTER_BITS
    return torch.round(r.mean(0) / grid) * grid


class Frame:
    """Anchors q and references r in the coordinates a loss computes its distances in.

    For the distance kinds: q_abs = q/s with s a power of two (max |q_abs| in [0.5, 1), exact),
    centered rows q' = q_abs − c (c the grid-rounded mean of r_abs) for the matmul expansion,
    and near pairs' differences from the uncentered rows; true tile = unit · frame tile. For
    "dot": the cast to the compute dtype only.

    Args:
        q (Tensor (B, D)): the anchors.
        r (Tensor (N, D)): the references (q itself when they are the anchors).
        kind (str): "dot", "sqeuclidean" or "euclidean".

    Returns:
        Frame: with rows(), tile(), tile_backward(), row_distances() and more.

    Raises:
        KeyError: an unknown kind.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> frame = metrics.Frame(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), "euclidean")
        >>> frame.tile(*frame.rows(slice(0, 1)))[0]
        tensor([[5.]])
    """

    def __init__(self, q: torch.Tensor, r: torch.Tensor, kind: str):
        cd = compute_dtype(q.dtype)
        same = r is q
        q = q.detach().to(cd)
        r = q if same else r.detach().to(cd)
        self.kind = kind
        self.s = torch.ones((), dtype=cd, device=q.device)
        self.q_sq = self.r_sq = None
        self.q_abs, self.r_abs = q, r
        if kind != "dot":
            peak = q.abs().amax() if same else torch.maximum(q.abs().amax(), r.abs().amax())
            self.s = power_of_two_near(peak)
            self.q_abs = q / self.s
            self.r_abs = self.q_abs if same else r / self.s
            center = _round_center(self.r_abs)
            q = self.q_abs - center
            r = q if same else self.r_abs - center
            self.q_sq = (q * q).sum(1)
            self.r_sq = self.q_sq if same else (r * r).sum(1)
        self.q, self.r = q, r
        # true tile = unit · frame tile;  ∂L/∂x = factor · pairwise_backward(∂L/∂tile, x', y')
        self.unit = {"dot": 1.0, "euclidean": self.s, "sqeuclidean": self.s * self.s}[kind]
        self.factor = self.s if kind == "sqeuclidean" else 1.0

    def rows(self, rows):
        """(centered rows, their squared norms, uncentered rows) of the anchors at `rows`."""
        return self.q[rows], (None if self.q_sq is None else self.q_sq[rows]), self.q_abs[rows]

    def ref_rows(self, rows):
        """The same for reference rows (an index tensor or slice)."""
        return self.r[rows], (None if self.r_sq is None else self.r_sq[rows]), self.r_abs[rows]

    def tile(self, x, x_sq=None, x_abs=None, out=None):
        """(true tile between frame rows x (x_abs uncentered) and all references, near pairs),
        written into `out` when given (see pairwise)."""
        t, near = pairwise(x, self.r, self.kind, x_sq, self.r_sq, return_near=True, x_abs=x_abs, y_abs=self.r_abs,
                           out=out)
        return t.mul_(self.unit), near

    def tile_backward(self, grad, x, tile, near, x_abs=None, prescaled=False, r_out=None):
        """(∂L/∂x, ∂L/∂r) in true units, given ∂L/∂tile for tile, near = self.tile(x, ., x_abs)
        (prescaled, r_out: see pairwise_backward's prescaled and y_out)."""
        gx, gr = pairwise_backward(grad, x, self.r, self.kind, tile, near, x_abs, self.r_abs, unit=self.unit,
                                   prescaled=prescaled, y_out=r_out)
        if isinstance(self.factor, float) and self.factor == 1.0:
            return gx, gr
        return gx * self.factor, (gr * self.factor if r_out is None else gr.mul_(self.factor))

    def sq_backward(self, grad_sq, x, near, x_abs=None):
        """(∂L/∂x, ∂L/∂r) in true units, given ∂L/∂(true squared distance) for the tile of
        frame rows x, whose near pairs are `near` (None: recomputed)."""
        gx, gr = pairwise_backward(grad_sq, x, self.r, "sqeuclidean", None, near, x_abs, self.r_abs)
        return gx * self.s, gr * self.s

    def row_distances(self, x_abs, y_abs):
        """True distances of paired uncentered frame rows x_k, y_k, from their difference."""
        if self.kind == "dot":
            return (x_abs * y_abs).sum(1)
        diff = x_abs - y_abs
        sq = (diff * diff).sum(1)
        return sq * self.unit if self.kind == "sqeuclidean" else sq.sqrt() * self.s

    def row_distances_backward(self, g, x_abs, y_abs, dist):
        """(∂L/∂x, ∂L/∂y) in true units of dist = row_distances(x_abs, y_abs), given ∂L/∂dist."""
        if self.kind == "dot":
            return g[:, None] * y_abs, g[:, None] * x_abs
        if self.kind == "euclidean":  # ∂d/∂x = (x' − y')/d'
            d = dist / self.s
            g = torch.where(d > 0, g / d.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(g))
            diff = g[:, None] * (x_abs - y_abs)
        else:  # ∂(s²‖x' − y'‖²)/∂x = 2s(x' − y')
            diff = (2.0 * self.s) * g[:, None] * (x_abs - y_abs)
        return diff, -diff


def _row_scale(diff: torch.Tensor) -> torch.Tensor:
    """Per-row power of two near max |diff| (detached), so that squares cannot overflow."""
    return power_of_two_near(diff.detach().abs().amax(1, keepdim=True))


def row_distances(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """d(x_k, y_k) of paired rows with plain autograd, in the compute dtype.

    dot: Σ x_k y_k; otherwise from the row difference (exact for near rows, no overflow for
    huge ones; the Euclidean gradient is 0 at d = 0).

    Args:
        x (Tensor (K, D)): first rows.
        y (Tensor (K, D)): second rows.
        kind (str): "dot", "sqeuclidean" or "euclidean".

    Returns:
        Tensor (K,): the distances (or dot products).

    Raises:
        ValueError: an unknown kind ("dot", "sqeuclidean", "euclidean").

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.row_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), "sqeuclidean")
        tensor([25.])
    """
    cd = compute_dtype(x.dtype)
    x, y = x.to(cd), y.to(cd)
    if kind == "dot":
        return (x * y).sum(1)
    if kind not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"unknown kernel kind {kind!r}")
    diff = x - y
    s = _row_scale(diff)
    scaled = diff / s
    sq = (scaled * scaled).sum(1)
    s = s[:, 0]
    if kind == "sqeuclidean":
        return sq * (s * s)
    positive = sq > 0
    root = torch.where(positive, sq, torch.ones_like(sq)).sqrt()
    return torch.where(positive, root * s, torch.zeros_like(sq))


def pairwise_differentiable(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """A dense m × n tile of `kind` with plain autograd: the same numbers as Frame + pairwise.

    Args:
        x (Tensor (m, D)): first rows.
        y (Tensor (n, D)): second rows.
        kind (str): "dot", "sqeuclidean" or "euclidean".

    Returns:
        Tensor (m, n): in the compute dtype.

    Raises:
        ValueError: an unknown kind ("dot", "sqeuclidean", "euclidean").

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.pairwise_differentiable(torch.eye(2), torch.eye(2), "dot")
        tensor([[1., 0.],
                [0., 1.]])
    """
    cd = compute_dtype(x.dtype)
    x, y = x.to(cd), y.to(cd)
    if kind == "dot":
        return x @ y.T
    if kind not in ("sqeuclidean", "euclidean"):
        raise ValueError(f"unknown kernel kind {kind!r}")
    s = power_of_two_near(torch.maximum(x.detach().abs().amax(), y.detach().abs().amax()))
    xa, ya = x / s, y / s
    center = _round_center(ya.detach())
    xc, yc = xa - center, ya - center
    x_sq, y_sq = (xc * xc).sum(1), (yc * yc).sum(1)
    scale = x_sq[:, None] + y_sq[None, :]
    sq = (scale - 2.0 * xc @ yc.T).clamp_min(0.0)
    i, j = _near_pairs(sq.detach(), x_sq.detach(), y_sq.detach(), near_tolerance(cd))
    if i.numel():
        diff = xa[i] - ya[j]
        sq = sq.index_put((i, j), (diff * diff).sum(1))
    if kind == "sqeuclidean":
        return sq * (s * s)
    positive = sq > 0
    root = torch.where(positive, sq, torch.ones_like(sq)).sqrt()
    return torch.where(positive, root * s, torch.zeros_like(sq))


def row_counts(mask: torch.Tensor) -> torch.Tensor:
    """The number of True entries in each row of a 2-D bool mask.

    Equal to mask.sum(1), but the mask's bytes are summed with an int32 accumulator, where a
    bool .sum(1) first converts the whole mask to an int64 tensor.

    Args:
        mask (Tensor): bool, shape (rows, columns), any strides, fewer than 2**31 columns.

    Returns:
        Tensor: int64, shape (rows,).

    Raises:
        TypeError: mask is not a bool tensor.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.row_counts(torch.tensor([[True, False, True], [False, False, False]]))
        tensor([2, 0])
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
    return mask.view(torch.uint8).sum(1, dtype=torch.int32).long()


def chunk_rows(m: int, n: int, budget_elems: int = 1 << 22) -> int:
    """Rows per anchor chunk so that a chunk × n tile holds about budget_elems elements.

    rows = max(1, min(m, budget_elems // n)).

    Args:
        m (int): number of anchors.
        n (int): number of references.
        budget_elems (int, default 2**22): elements of one live tile (16 MiB of float32).

    Returns:
        int: the chunk's row count.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> metrics.chunk_rows(100, 10, budget_elems=300)
        30
    """
    return max(1, min(m, budget_elems // max(n, 1)))


def chunks(m: int, n: int, budget_elems: int = 1 << 22) -> Iterator[slice]:
    """Consecutive row slices of m anchors, each a chunk of chunk_rows(m, n, budget_elems) rows.

    Args:
        m (int): number of anchors.
        n (int): number of references.
        budget_elems (int, default 2**22): elements of one live tile.

    Returns:
        Iterator[slice]: the chunks, in order.

    Raises:
        Nothing.

    Example:
        >>> import torch
        >>> from fastcontrast import metrics
        >>> list(metrics.chunks(5, 2, budget_elems=4))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    step = chunk_rows(m, n, budget_elems)
    for start in range(0, m, step):
        yield slice(start, min(start + step, m))
