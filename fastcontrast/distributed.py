"""Exact global-batch losses across processes with torch.distributed.

Contrastive losses get better with more negatives, so under data parallelism one wants the
loss of the *global* batch (all ranks' rows together), not W separate local losses. This
module gives that loss exactly and shares its work:

- `all_gather_rows(x)` concatenates every rank's rows (any number per rank) in rank order.
  It is differentiable: in backward each rank receives the gradient w.r.t. its own rows,
  summed over every rank's use of them.
- `GlobalBatchLoss(loss)` turns any fastcontrast loss Module into its global-batch version.
  Rank r computes only its own anchors against all ranks' references,
  `loss.terms(local, local_labels, global, global_labels, self_offset=offset_r)` (1/W of
  the work; the self pair is excluded by its global index), all-reduces the per-part sums
  of values, counts and non-zero counts, and divides its share by the global denominators.
  Every reduction is a ratio of global sums, so the W shares add up to the global loss.

Gradients and DistributedDataParallel. Call the global loss L = Σ_r L_r (L_r: rank r's
anchors). Through `all_gather_rows`, rank r's embedding gradient is ∂L/∂x_r (its own anchors'
terms plus every rank's terms that use its rows as references), so rank r's parameter
gradient is g_r = ∂L/∂x_r · ∂x_r/∂θ and Σ_r g_r = ∂L/∂θ. DDP *averages* gradients over
ranks, so the loss scales each rank's share by W (`average_grads=True`, the default); the
averaged parameter gradient then equals, to rounding, the gradient one process gets from
the same loss on the concatenated batch. With `average_grads=False` (you sum gradients
yourself) no scaling is applied. The value returned is the global loss, the same on every
rank.

Collectives block until every rank joins. Give `init_process_group` a `timeout` (a
`datetime.timedelta`) so that a rank that never arrives ends in an error rather than a
hang. Shapes are exchanged first: ranks whose embedding dimensions or dtypes differ all
raise the same ValueError instead of waiting on each other.

Example (CPU, two processes; `tests/distributed/ddp_example.py` is this, runnable):

    torchrun --nproc_per_node=2 tests/distributed/ddp_example.py

    import datetime, torch, torch.distributed as dist
    import fastcontrast as fc
    from fastcontrast.distributed import GlobalBatchLoss

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(32, 16))
    loss_fn = GlobalBatchLoss(fc.SupConLoss(temperature=0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in loader:                    # this rank's share of the batch
        loss = loss_fn(model(x), y)        # the loss of the whole global batch
        opt.zero_grad(); loss.backward(); opt.step()
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ._reduce import LossTerms

# dtypes that can cross the shape exchange as a small integer code
_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
           torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def is_distributed() -> bool:
    """Whether torch.distributed is available and a process group is initialized.

    Args:
        None.

    Returns:
        bool: True inside an initialized process group.

    Raises:
        Nothing.

    Example:
        >>> from fastcontrast.distributed import is_distributed
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized()


def rank_and_world(group=None) -> tuple[int, int]:
    """This process's rank and the group's world size, (0, 1) outside a process group.

    Args:
        group (ProcessGroup or None, default None): the group; None means the default group.

    Returns:
        tuple[int, int]: (rank, world size).

    Raises:
        RuntimeError: from torch.distributed for an invalid group.

    Example:
        >>> from fastcontrast.distributed import rank_and_world
        >>> rank_and_world()
        (0, 1)
    """
    if not is_distributed():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


@dataclass(frozen=True)
class RowLayout:
    """How a global batch is split over ranks: rank r owns rows offsets[r] : offsets[r] + sizes[r].

    offsets[r] = Σ_{k<r} sizes[k]; `total` = Σ sizes, `world` = len(sizes), `offset` = this
    rank's first global row, `rows(r)` = rank r's slice.

    Args:
        sizes (tuple[int, ...]): rows held by each rank, in rank order.
        rank (int): this process's rank.

    Returns:
        RowLayout: a frozen dataclass.

    Raises:
        Nothing (the sizes come from exchange_layout, which checks them).

    Example:
        >>> from fastcontrast.distributed import RowLayout
        >>> layout = RowLayout((3, 5), rank=1)
        >>> layout.total, layout.offset, layout.rows(1)
        (8, 3, slice(3, 8, None))
    """

    sizes: tuple[int, ...]
    rank: int

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    def rows(self, rank: int) -> slice:
        start = sum(self.sizes[:rank])
        return slice(start, start + self.sizes[rank])


def exchange_layout(x: torch.Tensor, name: str = "embeddings", group=None,
                    allow_empty: bool = False) -> RowLayout:
    """All-gather every rank's (rows, dim, dtype) of the 2-D tensor `x` and check they fit together.

    Every rank sees the same table, so a mismatch raises the same ValueError on every rank
    (nobody is left waiting in a later collective).

    Args:
        x (Tensor (B_r, D)): this rank's rows.
        name (str, default "embeddings"): the name used in error messages.
        group (ProcessGroup or None, default None): the group; None means the default group.
        allow_empty (bool, default False): whether ranks may hold 0 rows.

    Returns:
        RowLayout: the rows per rank and this rank.

    Raises:
        ValueError: x is not 2-D on some rank, dimensions or dtypes differ between ranks, or a
            rank has no rows (unless allow_empty).

    Example:
        >>> import torch  # needs an initialized process group (see the module docstring)
        >>> from fastcontrast.distributed import exchange_layout, is_distributed
        >>> is_distributed() or print("run under torchrun to call exchange_layout")
        run under torchrun to call exchange_layout
    """
    rank, world = rank_and_world(group)
    if x.dim() != 2:
        dim, rows = -1, -1
    else:
        rows, dim = x.shape
    code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    mine = torch.tensor([rows, dim, code], dtype=torch.int64, device=x.device)
    table = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(table, mine, group=group)
    table = [tuple(int(v) for v in t.tolist()) for t in table]
    shapes = ", ".join(f"rank {r}: {t[0]}x{t[1]}" for r, t in enumerate(table))
    if any(t[1] < 0 for t in table):
        raise ValueError(f"{name} must be 2-D (batch, dim) on every rank; got {shapes}")
    if len({t[1] for t in table}) > 1:
        raise ValueError(f"{name} must have the same dimension on every rank; got {shapes}")
    if len({t[2] for t in table}) > 1:
        dtypes = ", ".join(f"rank {r}: {_DTYPES[t[2]] if t[2] >= 0 else '?'}" for r, t in enumerate(table))
        raise ValueError(f"{name} must have the same dtype on every rank; got {dtypes}")
    if not allow_empty and any(t[0] < 1 for t in table):
        raise ValueError(f"{name} needs at least one row on every rank; got {shapes}")
    return RowLayout(tuple(t[0] for t in table), rank)


def _gather_padded(x: torch.Tensor, layout: RowLayout, group=None) -> torch.Tensor:
    """Concatenate every rank's rows of x (layout.sizes[r] rows on rank r), in rank order.
    Collectives want equal shapes, so rows are padded to the largest count and trimmed."""
    longest = max(layout.sizes)
    if longest == 0:
        return x
    x = x.contiguous()
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad])
    parts = [torch.empty_like(x) for _ in range(layout.world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, layout.sizes)])


class _AllGatherRows(torch.autograd.Function):
    """Forward: every rank's rows in rank order. Backward: the sum over ranks of the
    gradient w.r.t. the gathered tensor, restricted to this rank's rows."""

    @staticmethod
    def forward(ctx, x, layout, group):
        ctx.layout, ctx.group = layout, group
        with torch.no_grad():
            return _gather_padded(x, layout, group)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.layout.rows(ctx.layout.rank)], None, None


def all_gather_rows(x: torch.Tensor, group=None, layout: RowLayout | None = None,
                    name: str = "embeddings") -> tuple[torch.Tensor, RowLayout]:
    """Every rank's rows of `x` concatenated in rank order, differentiably.

    gathered = [x_0; x_1; …; x_{W−1}]; in backward rank r receives Σ_k ∂L_k/∂x_r (an all-reduce
    of the gathered gradient), so every rank must run backward through it.

    Args:
        x (Tensor (B_r, D)): this rank's rows (any number per rank, the same D and dtype).
        group (ProcessGroup or None, default None): the group; None means the default group.
        layout (RowLayout or None, default None): a layout already exchanged for x; None
            exchanges it.
        name (str, default "embeddings"): the name used in error messages.

    Returns:
        tuple[Tensor (Σ_r B_r, D), RowLayout]: the gathered rows and which rank owns which.
        Outside a process group: (x, RowLayout((B,), 0)).

    Raises:
        ValueError: the ranks' shapes or dtypes do not fit together (on every rank).

    Example:
        >>> import torch
        >>> from fastcontrast.distributed import all_gather_rows
        >>> rows, layout = all_gather_rows(torch.ones(3, 2))  # no process group: x itself
        >>> rows.shape, layout.sizes
        (torch.Size([3, 2]), (3,))
    """
    if not is_distributed():
        return x, RowLayout((x.shape[0],), 0)
    if layout is None:
        layout = exchange_layout(x, name, group)
    if x.requires_grad and torch.is_grad_enabled():
        return _AllGatherRows.apply(x, layout, group), layout
    return _gather_padded(x, layout, group), layout


def all_gather_labels(labels: torch.Tensor, layout: RowLayout, group=None,
                      name: str = "labels") -> torch.Tensor:
    """Every rank's labels concatenated in rank order (no gradient).

    Args:
        labels (Tensor (B_r,), integer): this rank's labels, layout.sizes[rank] of them.
        layout (RowLayout): the layout of the matching embeddings (all_gather_rows).
        group (ProcessGroup or None, default None): the group; None means the default group.
        name (str, default "labels"): the name used in error messages.

    Returns:
        Tensor (layout.total,): the global labels.

    Raises:
        ValueError: labels do not have layout.sizes[rank] entries.

    Example:
        >>> import torch
        >>> from fastcontrast.distributed import RowLayout, all_gather_labels
        >>> all_gather_labels(torch.tensor([0, 1, 1]), RowLayout((3,), 0))
        tensor([0, 1, 1])
    """
    if labels.dim() != 1 or labels.shape[0] != layout.sizes[layout.rank]:
        raise ValueError(f"{name} must be 1-D with one entry per row on this rank "
                         f"({layout.sizes[layout.rank]}), got shape {tuple(labels.shape)}")
    if not is_distributed():
        return labels
    return _gather_padded(labels.detach()[:, None], layout, group)[:, 0]


def view_labels(rows: int, first_pair: int, device=None) -> torch.Tensor:
    """SimCLR two-view labels for one rank: local rows i and i + rows/2 are views of pair first_pair + i.

    label_i = first_pair + (i mod rows/2); pairs are numbered globally, so views never match
    across ranks.

    Args:
        rows (int): this rank's number of rows (even).
        first_pair (int): the global index of this rank's first pair.
        device (torch.device or None, default None): where the labels live.

    Returns:
        Tensor (rows,): int64 labels.

    Raises:
        ValueError: rows is odd.

    Example:
        >>> from fastcontrast.distributed import view_labels
        >>> view_labels(4, 10)
        tensor([10, 11, 10, 11])
    """
    if rows % 2:
        raise ValueError(f"labels=None means two views per sample (rows i and i + B/2), so each "
                         f"rank's batch must have an even number of rows; got {rows}")
    half = torch.arange(first_pair, first_pair + rows // 2, device=device)
    return torch.cat([half, half])


def _placed(local: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `local` (at least one row) whose column sums are `total` (all in
    row 0)."""
    out = local.new_zeros((max(local.shape[0], 1),) + tuple(local.shape[1:]))
    out[0] = total.to(local.dtype)
    return out


MODES = ("rows", "whole", "whole_rows", "paired", "paired_symmetric", "global_pairs")


def distributed_mode(loss) -> str:
    """How a loss Module is shared over ranks, as it declares through `distributed_mode()`
    ("rows" when it declares nothing):

    rows              forward(embeddings, labels, ref_emb, ref_labels); each rank's anchors
                      against every rank's references: terms(local, labels, global, global_labels,
                      self_offset)
    whole             every rank computes the whole loss from the gathered batch
    whole_rows        every rank computes the terms of the whole gathered batch, terms(all, all_labels,
                      all_refs, all_ref_labels, 0 or −1), and keeps its own anchors' rows: for a loss
                      whose anchor terms read other anchors' rows (LiftedStructureLoss: the negatives
                      of a positive's own anchor row), exact at the whole batch's cost on every rank
    paired            forward(query, keys, labels, ref_labels); each rank's queries against every
                      rank's keys: terms(query, labels, all_keys, all_key_labels, self_offset)
    paired_symmetric  as paired, plus each rank's keys against every rank's queries:
                      symmetric_terms(query, keys, labels, ref_labels, all_query, all_keys,
                      all_labels, all_ref_labels, offset)
    global_pairs      the loss picks its pairs from the global batch and each rank computes a
                      slice: global_terms(all_embeddings, all_labels, rank, world)

    Args:
        loss (nn.Module): a fastcontrast loss (or compat loss), optionally with a
            `distributed_mode()` method returning one of the modes above.

    Returns:
        str: the mode, one of MODES.

    Raises:
        ValueError: the loss declares a mode that is not one of MODES.

    Example:
        >>> import fastcontrast as fc
        >>> from fastcontrast.distributed import distributed_mode
        >>> distributed_mode(fc.SupConLoss()), distributed_mode(fc.NPairLoss())
        ('rows', 'global_pairs')
    """
    declared = getattr(loss, "distributed_mode", None)
    mode = declared() if callable(declared) else "rows"
    if mode not in MODES:
        raise ValueError(f"{type(loss).__name__}.distributed_mode() returned {mode!r}; expected one of {MODES}")
    return mode


class GlobalBatchLoss(torch.nn.Module):
    """The global-batch version of a fastcontrast loss Module under torch.distributed.

    L = Σ_r L_r, L_r = the loss terms of rank r's anchors against every rank's references,
    reduced by the global denominators (all-reduced sums of counts); see the module docstring.

    forward(embeddings, labels=None, ref_emb=None, ref_labels=None) takes this rank's rows (an
    InfoNCELoss: forward(query, keys, labels=None, ref_labels=None)). With ref_emb the anchors
    are compared against every rank's ref_emb (no self pairs); without, against every rank's
    embeddings, excluding each row's own pair. labels=None: two views per sample, rows i and
    i + B_r/2 of each rank. Without an initialized process group (or with one rank) it is the
    wrapped loss itself.

    Args:
        loss (nn.Module): a loss with terms(embeddings, labels, ref_emb, ref_labels, self_offset)
            and reduce(terms, denominators=None): every fastcontrast loss and PML-compat loss.
            A loss that is shared differently says so through `distributed_mode()` (see
            `distributed_mode` in this module: paired (query, keys) losses, the symmetric
            InfoNCE/CLIP rows-and-columns split, N-pair's global pair selection).
        group (ProcessGroup or None, default None): the process group; None means the default.
        average_grads (bool, default True): gradients are averaged over ranks afterwards (DDP),
            so each rank's share is scaled by the world size and the averaged gradient is the
            global one; False when you sum gradients yourself.

    Returns:
        GlobalBatchLoss: its forward returns the global loss (a scalar, the same on every rank),
        or with reduction "none" this rank's per-anchor values (B_r,) against the global batch.

    Raises:
        TypeError: loss has no terms()/reduce(), or average_grads is not a bool.
        ValueError: the ranks' shapes or dtypes do not fit together (on every rank).

    Example:
        >>> import torch, fastcontrast as fc
        >>> from fastcontrast.distributed import GlobalBatchLoss
        >>> loss_fn = GlobalBatchLoss(fc.SupConLoss(temperature=0.1))
        >>> x, y = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> torch.allclose(loss_fn(x, y), fc.supcon_loss(x, y))  # one process: the loss itself
        True
    """

    def __init__(self, loss: torch.nn.Module, group=None, average_grads: bool = True):
        super().__init__()
        for method in ("terms", "reduce"):
            if not callable(getattr(loss, method, None)):
                raise TypeError(f"loss must be a fastcontrast loss Module with a {method}() method; "
                                f"{type(loss).__name__} has none")
        if not isinstance(average_grads, bool):
            raise TypeError(f"average_grads must be True or False, got {type(average_grads).__name__}")
        self.loss = loss
        self.group = group
        self.average_grads = average_grads

    def forward(self, embeddings, labels=None, ref_emb=None, ref_labels=None):
        """Paired losses (InfoNCELoss, SigLIPLoss) are called as forward(query, keys,
        labels=None, ref_labels=None)."""
        mode = distributed_mode(self.loss)
        if mode in ("paired", "paired_symmetric"):
            return self._forward_paired(embeddings, labels, ref_emb, ref_labels, mode == "paired_symmetric")
        if not isinstance(embeddings, torch.Tensor):
            raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
        if (ref_emb is None) != (ref_labels is None):
            raise ValueError("ref_emb and ref_labels must be given together")
        rank, world = rank_and_world(self.group)
        if world == 1:
            return self.loss(embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels)

        all_emb, layout = all_gather_rows(embeddings, self.group, name="embeddings")
        if labels is None:
            first_pair = sum(n // 2 for n in layout.sizes[:rank])
            labels = view_labels(embeddings.shape[0], first_pair, embeddings.device)
        all_labels = all_gather_labels(labels.to(embeddings.device), layout, self.group)
        if ref_emb is None:
            refs, ref_lab, self_offset = all_emb, all_labels, layout.offset
        else:
            refs, ref_layout = all_gather_rows(ref_emb, self.group, name="ref_emb")
            ref_lab = all_gather_labels(ref_labels.to(ref_emb.device), ref_layout, self.group, "ref_labels")
            self_offset = -1
        if mode == "whole":
            kw = {} if ref_emb is None else {"ref_emb": refs, "ref_labels": ref_lab}
            return self.whole_on_every_rank(self.loss(all_emb, all_labels, **kw), world)
        if mode == "whole_rows":
            whole = self.loss.terms(all_emb, all_labels, None if ref_emb is None else refs,
                                    None if ref_emb is None else ref_lab, 0 if ref_emb is None else -1)
            mine = layout.rows(rank)
            # the other ranks' rows get no gradient here: each is its own rank's share
            terms = LossTerms(whole.values[mine], whole.counts[mine], whole.nonzero[mine])
            return self.reduce_global(terms, world)
        if mode == "global_pairs":
            if ref_emb is not None:
                raise ValueError(f"{type(self.loss).__name__} does not take ref_emb")
            return self.reduce_global(self.loss.global_terms(all_emb, all_labels, rank, world), world)
        terms = self.loss.terms(embeddings, labels, refs, ref_lab, self_offset=self_offset)
        return self.reduce_global(terms, world)

    def _forward_paired(self, query, keys, labels=None, ref_labels=None, symmetric=False):
        """Query i of a rank pairs with key i of the same rank (labels None), so the global
        loss is the loss of the concatenated queries and keys when each rank has as many
        keys as queries. Extra keys per rank are negatives for every query. Symmetric: each
        rank also computes its keys' direction against every rank's queries (its columns)."""
        if keys is None:
            raise ValueError(f"{type(self.loss).__name__} needs keys: forward(query, keys)")
        rank, world = rank_and_world(self.group)
        if world == 1:
            return self.loss(query, keys, labels, ref_labels)
        if (labels is None) != (ref_labels is None):
            raise ValueError("labels and ref_labels must be given together")
        if labels is None and keys.shape[0] < query.shape[0]:
            raise ValueError(f"keys has {keys.shape[0]} rows but query has {query.shape[0]} on "
                             f"rank {rank}: query i's positive is key i of the same rank")
        all_keys, key_layout = all_gather_rows(keys, self.group, name="keys")
        all_key_labels = None
        if ref_labels is not None:
            all_key_labels = all_gather_labels(ref_labels.to(keys.device), key_layout, self.group, "ref_labels")
        if symmetric:  # this rank's rows and columns of the global logit matrix
            all_query, q_layout = all_gather_rows(query, self.group, name="query")
            if q_layout.sizes != key_layout.sizes:
                raise ValueError("a symmetric loss needs as many keys as queries on every rank; got "
                                 f"queries {q_layout.sizes} and keys {key_layout.sizes}")
            all_labels = None
            if labels is not None:
                all_labels = all_gather_labels(labels.to(query.device), q_layout, self.group)
            terms = self.loss.symmetric_terms(query, keys, labels, ref_labels, all_query, all_keys, all_labels,
                                              all_key_labels, q_layout.offset)
            return self.reduce_global(terms, world)
        terms = self.loss.terms(query, labels, all_keys, all_key_labels,
                                self_offset=key_layout.offset if labels is None else -1)
        return self.reduce_global(terms, world)

    def whole_on_every_rank(self, whole: torch.Tensor, world: int) -> torch.Tensor:
        """The global loss computed in full on every rank from gathered rows: the gathers'
        backward already sums the W identical gradients (W × the global gradient per rank),
        which is what DDP's averaging wants; without averaging divide by W."""
        if self.average_grads or whole.dim() != 0:
            return whole
        return whole / world + (whole - whole / world).detach()

    def reduce_global(self, terms: LossTerms, world: int) -> torch.Tensor:
        """This rank's LossTerms → the global loss (value), with this rank's share of the
        gradient (scaled by `world` under average_grads)."""
        values, counts, nonzero = terms.values, terms.counts, terms.nonzero
        # one all-reduce: per-part sums of values (detached), counts and non-zero counts
        sums = torch.stack([values.detach().sum(0).double(), counts.sum(0).double(),
                            nonzero.sum(0).double()])
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.group)
        g_values, g_counts, g_nonzero = sums[0], sums[1], sums[2]
        # this rank's share: local sums over global denominators; the Module's own reduce
        # picks which denominator (counts or non-zero) each part uses
        share = self.loss.reduce(LossTerms(values, _placed(counts, g_counts), _placed(nonzero, g_nonzero)))
        if share.dim() != 0:  # reduction "none": per local anchor
            return share
        whole = self.loss.reduce(LossTerms(
            g_values.to(values.dtype).reshape((1,) + tuple(values.shape[1:])),
            g_counts.to(counts.dtype).reshape((1,) + tuple(counts.shape[1:])),
            g_nonzero.to(nonzero.dtype).reshape((1,) + tuple(nonzero.shape[1:]))))
        scaled = share * world if self.average_grads else share
        return scaled + (whole.to(scaled.dtype) - scaled).detach()
