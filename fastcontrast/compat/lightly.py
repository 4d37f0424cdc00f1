"""lightly's contrastive losses (lightly 1.6), computed by fastcontrast.

    from fastcontrast.compat.lightly import NTXentLoss, DCLLoss, DCLWLoss
    loss = NTXentLoss(temperature=0.5, memory_bank_size=0, gather_distributed=False)
    value = loss(out0, out1)                        # two views, (B, D) each

Same conventions as lightly:

- NTXentLoss without a memory bank: both views normalized, each of the 2B rows against the
  2B − 1 others, cross-entropy to its other view, mean over the 2B rows (the SimCLR form:
  fastcontrast's nt_xent_loss(form="simclr")).
- NTXentLoss with a memory bank (MoCo): the negatives are ONLY the bank's entries, the
  positive is the other view: loss_i = −log(e^{l_ii'} / (e^{l_ii'} + Σ_k e^{q_i·m_k/τ})),
  mean over the B rows of out0. The in-batch keys are not negatives. The bank returned for
  this call is the one before the update; it is then updated with out1 (normalized,
  detached) only when out0 requires grad, first-in first-out, and a batch that reaches the
  end of the bank fills it and restarts at 0 (the rest of that batch is dropped), as lightly
  does. The bank starts as unit-normalized random vectors (`torch.randn`, drawn at
  construction for a (size, dim) tuple, as lightly; an int size, which lightly 1.6 refuses,
  draws at the first call once the dimension is known).
- DCLLoss / DCLWLoss: decoupled contrastive learning; the positive is left out of the
  denominator, negatives are every other row of both views; mean over both directions.
  DCLWLoss weighs each positive pair by 2 − B·softmax(s_kk'/σ) (no gradient).
- gather_distributed=True under torch.distributed: the loss of the global batch through
  fastcontrast.distributed (each rank computes its own rows). Under DDP the gradients equal
  lightly's; the value is the global batch's loss on every rank, where lightly reports each
  rank's own rows' mean (the same number when every rank has the same batch size).

The softmax runs in fastcontrast's kernels or chunked PyTorch path: no (2B)×(2B) logits and,
with a bank of K entries, no B×K logits kept for backward.
"""
from __future__ import annotations

import numbers
from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from .._validation import check_embeddings, check_pair, full_precision
from ..dcl import DCLLoss as _NativeDCL
from ..dcl import von_mises_fisher_weights
from ..distributed import GlobalBatchLoss, all_gather_rows, rank_and_world
from ..softmax import NTXentLoss as _NativeNTXent
from ..softmax import resolve, softmax_values
from .._torch.softmax import softplus

__all__ = ["NTXentLoss", "DCLLoss", "DCLWLoss", "MemoryBankModule", "negative_mises_fisher_weights"]


def _check_views(out0, out1):
    check_embeddings(out0, "out0")
    check_embeddings(out1, "out1")
    check_pair(out0, out1, "out0", "out1")
    if out0.shape[0] != out1.shape[0]:
        raise ValueError(f"out0 and out1 must have the same number of rows, got {out0.shape[0]} and {out1.shape[0]}")


def _distributed(gather_distributed: bool) -> bool:
    return gather_distributed and rank_and_world()[1] > 1


class MemoryBankModule(nn.Module):
    """A first-in first-out bank of past keys, as lightly's MemoryBankModule.

    Args:
        size (int | tuple[int, int]): 0 (no bank), (num_features, dim), or num_features (the
            dimension is read from the first batch; lightly 1.6 refuses a bare int).
        gather_distributed (bool): under torch.distributed, enqueue every rank's batch.
        feature_dim_first (bool): return the bank as (dim, num_features) (True, default) or
            (num_features, dim).

    Returns:
        forward(output, labels=None, update=False) -> (output, bank or None): the bank as it
        was before this call (a detached copy), then updated with `output` when `update`.

    Raises:
        ValueError: a negative size or a tuple that is not (num_features, dim).

    Example:
        >>> bank = MemoryBankModule(size=(8, 4))
        >>> _, old = bank(torch.randn(3, 4), update=True)
        >>> old.shape
        torch.Size([4, 8])
    """

    def __init__(self, size: Union[int, Sequence[int]] = 0, gather_distributed: bool = False,
                 feature_dim_first: bool = True):
        super().__init__()
        size_tuple = (size,) if isinstance(size, numbers.Integral) else tuple(size)
        if any(not isinstance(s, numbers.Integral) or s < 0 for s in size_tuple):
            raise ValueError(f"memory bank size must be non-negative integers, got {size}")
        if size_tuple != (0,) and len(size_tuple) not in (1, 2):
            raise ValueError(f"memory bank size must be 0, num_features or (num_features, dim), got {size}")
        self.size = tuple(int(s) for s in size_tuple)
        self.gather_distributed = gather_distributed
        self.feature_dim_first = feature_dim_first
        self.register_buffer("bank", torch.empty(self.size if len(self.size) == 2 else (0, 0)), persistent=False)
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long), persistent=False)
        if len(self.size) == 2:
            self._init_memory_bank(self.size)

    def extra_repr(self) -> str:
        return (f"size={self.size}, gather_distributed={self.gather_distributed}, "
                f"feature_dim_first={self.feature_dim_first}")

    @torch.no_grad()
    def _init_memory_bank(self, size) -> None:
        bank = torch.randn(size).to(device=self.bank.device, dtype=self.bank.dtype)
        self.bank = F.normalize(bank, dim=-1)
        self.bank_ptr = torch.zeros(1, dtype=torch.long, device=self.bank.device)

    def entries(self, output: torch.Tensor, update: bool) -> Optional[torch.Tensor]:
        """The bank before this call as (num_features, dim), detached; None without a bank."""
        if self.size[0] == 0:
            return None
        if len(self.size) == 1 and self.bank.numel() == 0:
            self.size = (self.size[0], output.shape[1])
            self._init_memory_bank(self.size)
        if output.shape[1] != self.size[1]:
            raise ValueError(f"the memory bank holds {self.size[1]}-dimensional keys, got {output.shape[1]}")
        bank = self.bank.clone().detach()
        if update:
            self._dequeue_and_enqueue(output)
        return bank

    def forward(self, output: torch.Tensor, labels=None, update: bool = False):
        bank = self.entries(output, update)
        if bank is not None and self.feature_dim_first:
            bank = bank.transpose(0, -1)
        return output, bank

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch: torch.Tensor) -> None:
        if _distributed(self.gather_distributed):
            batch, _ = all_gather_rows(batch.detach(), name="keys")
        n = batch.shape[0]
        ptr = int(self.bank_ptr)
        if ptr + n >= self.size[0]:
            self.bank[ptr:] = batch[: self.size[0] - ptr].detach()
            self.bank_ptr.zero_()
        else:
            self.bank[ptr:ptr + n] = batch.detach()
            self.bank_ptr[0] = ptr + n


class NTXentLoss(nn.Module):
    """lightly's NTXentLoss(temperature=0.5, memory_bank_size=0, gather_distributed=False).

    Args:
        temperature (float): τ; |τ| < 1e-8 is refused (as lightly).
        memory_bank_size (int | tuple[int, int]): 0 (SimCLR: in-batch negatives) or the bank
            size (MoCo: the bank's entries are the only negatives).
        gather_distributed (bool): the global batch's loss under torch.distributed.
        backend (str | None): fastcontrast's backend ("auto" | "triton" | "torch").

    Returns:
        forward(out0 (B, D), out1 (B, D)) -> 0-dim loss.

    Raises:
        ValueError: an illegal temperature, bank size, or mismatched views.

    Example:
        >>> loss = NTXentLoss(temperature=0.5, memory_bank_size=(64, 8))
        >>> loss(torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.5, memory_bank_size: Union[int, Sequence[int]] = 0,
                 gather_distributed: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.memory_bank = MemoryBankModule(size=memory_bank_size, gather_distributed=gather_distributed)
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.eps = 1e-8
        self.backend = backend
        if abs(self.temperature) < self.eps:
            raise ValueError("Illegal temperature: abs({}) < 1e-8".format(self.temperature))
        self._simclr = _NativeNTXent(temperature=temperature, form="simclr", distance="cosine", backend=backend)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, memory_bank_size={self.memory_bank.size}, "
                f"gather_distributed={self.gather_distributed}, backend={self.backend!r}")

    @full_precision
    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        _check_views(out0, out1)
        if self.memory_bank.size[0] == 0:
            views = torch.cat([out0, out1])
            if _distributed(self.gather_distributed):
                return GlobalBatchLoss(self._simclr)(views)
            return self._simclr(views)
        metric = metrics.resolve_metric("cosine")
        backend = resolve(self.backend, out0)
        q = metrics.prepare(out0, metric, backend)
        k = metrics.prepare(out1, metric, backend)
        # the bank stores the keys normalized as lightly normalizes them (bit for bit)
        bank = self.memory_bank.entries(F.normalize(out1.detach(), dim=1), update=out0.requires_grad)
        cd = metrics.compute_dtype(q.dtype)
        bank = bank.to(device=q.device, dtype=q.dtype if q.dtype != torch.float64 else cd)
        b = q.shape[0]
        # LSE over the bank alone: the "dcl" variant with every bank entry a negative
        lse, _ = softmax_values(q, bank, torch.zeros(b, dtype=torch.long, device=q.device),
                                torch.ones(bank.shape[0], dtype=torch.long, device=q.device), kind="dot",
                                variant="dcl", self_offset=-1, temperature=self.temperature, backend=backend,
                                all_negative=True)
        pos = (q.to(cd) * k.to(cd)).sum(1) / self.temperature
        return softplus(lse.to(cd) - pos).mean()


def negative_mises_fisher_weights(out0: torch.Tensor, out1: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """DCLW's weights 2 − B·softmax(out0_k·out1_k/σ) (no gradient), as lightly's function.

    Args:
        out0 (Tensor): (B, D) first views (normalized by the caller).
        out1 (Tensor): (B, D) second views.
        sigma (float): σ > 0.

    Returns:
        Tensor: (B,) weights.

    Example:
        >>> x = torch.nn.functional.normalize(torch.randn(3, 2), dim=1)
        >>> negative_mises_fisher_weights(x, x).shape
        torch.Size([3])
    """
    return von_mises_fisher_weights(out0, out1, sigma).to(out0.dtype)


class _WeightedDCL(_NativeDCL):
    """fastcontrast's DCL on two-view rows (i, i + B/2) with a user weight function on the
    positive term: v_i = LSE_neg − w_i·l_ii' with w = weight_fn(anchor views, other views),
    as lightly calls it (its gradient, if any, is kept)."""

    def __init__(self, temperature, weight_fn, backend):
        super().__init__(temperature=temperature, distance="cosine", backend=backend)
        self.weight_fn = weight_fn

    def terms(self, embeddings, labels, ref_emb=None, ref_labels=None, self_offset=0):
        terms = super().terms(embeddings, labels, ref_emb, ref_labels, self_offset)
        if self.weight_fn is None:
            return terms
        half = embeddings.shape[0] // 2
        x = F.normalize(embeddings, dim=1)
        x0, x1 = x[:half], x[half:]
        cd = terms.values.dtype
        w = torch.cat([self.weight_fn(x0, x1), self.weight_fn(x1, x0)]).to(cd)
        pos = (x0.to(cd) * x1.to(cd)).sum(1) / self.temperature
        values = terms.values + (1.0 - w) * torch.cat([pos, pos])  # −w·l = −l + (1 − w)·l
        return type(terms)(values, terms.counts, terms.nonzero)


class DCLLoss(nn.Module):
    """lightly's DCLLoss(temperature=0.1, weight_fn=None, gather_distributed=False).

    Args:
        temperature (float): τ > 0.
        weight_fn (callable | None): w(out0, out1) -> (B,) weights of the positive terms,
            called on the normalized views, once per direction.
        gather_distributed (bool): the global batch's loss under torch.distributed.
        backend (str | None): fastcontrast's backend.

    Returns:
        forward(out0 (B, D), out1 (B, D)) -> 0-dim loss, mean over both directions.

    Raises:
        ValueError: bad temperature or mismatched views.

    Example:
        >>> DCLLoss(temperature=0.1)(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, weight_fn: Optional[Callable] = None,
                 gather_distributed: bool = False, backend: Optional[str] = None):
        super().__init__()
        self.temperature = temperature
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed
        self.backend = backend
        self._loss = _WeightedDCL(temperature, weight_fn, backend)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, weight_fn={self.weight_fn!r}, "
                f"gather_distributed={self.gather_distributed}, backend={self.backend!r}")

    @full_precision
    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        _check_views(out0, out1)
        views = torch.cat([out0, out1])
        if _distributed(self.gather_distributed):
            return GlobalBatchLoss(self._loss)(views)
        return self._loss(views)


class DCLWLoss(DCLLoss):
    """lightly's DCLWLoss(temperature=0.1, sigma=0.5, gather_distributed=False): DCLLoss with
    the negative von Mises-Fisher weights.

    Args:
        temperature (float): τ > 0.
        sigma (float): the weights' σ > 0.
        gather_distributed (bool): the global batch's loss under torch.distributed.
        backend (str | None): fastcontrast's backend.

    Returns:
        forward(out0, out1) -> 0-dim loss.

    Raises:
        ValueError: bad temperature or mismatched views.

    Example:
        >>> DCLWLoss(temperature=0.1, sigma=0.5)(torch.randn(4, 8), torch.randn(4, 8)).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False,
                 backend: Optional[str] = None):
        super().__init__(temperature=temperature, weight_fn=partial(negative_mises_fisher_weights, sigma=sigma),
                         gather_distributed=gather_distributed, backend=backend)
        self.sigma = sigma
