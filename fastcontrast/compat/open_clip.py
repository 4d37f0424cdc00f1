"""open_clip's ClipLoss and SigLipLoss, computed by fastcontrast.

    from fastcontrast.compat.open_clip import ClipLoss, SigLipLoss
    clip = ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=False, rank=0, world_size=1)
    loss = clip(image_features, text_features, logit_scale)              # logit_scale already exp()
    siglip = SigLipLoss(cache_labels=False, rank=0, world_size=1)
    loss = siglip(image_features, text_features, logit_scale, logit_bias)

Same conventions as open_clip (3.x): the features are used as given (the model normalizes
them), logits = logit_scale · image · textᵀ (+ logit_bias), output_dict=True returns
{"contrastive_loss": loss}.

- ClipLoss: (CE(image→text) + CE(text→image)) / 2 with targets on the diagonal. A
  logit_bias shifts every logit of a row equally, which a softmax ignores: it gets a zero
  gradient.
- SigLipLoss: −Σ_ij log σ(z_ij·logits_ij) / B, z = 2·I − 1.

world_size > 1 (torch.distributed initialized with that many ranks, `rank` this process's
rank): the loss is work-shared through fastcontrast.distributed: each rank computes its own
rows (its images against every rank's texts) and, for ClipLoss, its own columns (its texts
against every rank's images), never the whole matrix. Values and gradients follow open_clip:

- ClipLoss(local_loss=False): the value is the global batch's loss L on every rank; rank r's
  feature gradient is ∂L/∂x_r (gather_with_grad=False: open_clip puts the rank's own
  features back into the gathered ones) or world_size·∂L/∂x_r (gather_with_grad=True:
  open_clip's all-gather sums every rank's identical gradient).
- ClipLoss(local_loss=True): each rank's value is the mean over its own rows and columns
  (positives at this rank's global offset, as open_clip's labels + num_logits·rank); with
  gather_with_grad=True every rank's use of a feature sends its gradient back to its owner,
  with gather_with_grad=False only the local features (as queries) get gradients.
- SigLipLoss: rank r's value is its images against every rank's texts (its own texts'
  block with the diagonal positives, the others all negatives) over its own image count;
  gradients flow back to every text's owner, as open_clip's neighbour exchange does.
  dist_impl ('bidir', 'shift', 'reduce', 'gather') only changes how open_clip moves the
  texts, not the numbers: it is accepted and recorded.

Unlike open_clip, batches may differ in size between ranks. use_horovod=True is refused.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from .. import metrics
from .._validation import check_embeddings, check_pair, check_positive, full_precision
from ..distributed import all_gather_rows, exchange_layout, is_distributed
from ..siglip import _check_bias, sigmoid_terms
from ..softmax import InfoNCELoss

__all__ = ["ClipLoss", "SigLipLoss"]

_DOT = metrics.resolve_metric("dot")


def _check_world(rank, world_size, use_horovod):
    if use_horovod:
        raise ValueError("use_horovod=True is not supported: use torch.distributed")
    for value, name in ((rank, "rank"), (world_size, "world_size")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def _check_features(image_features, text_features):
    check_embeddings(image_features, "image_features")
    check_embeddings(text_features, "text_features")
    check_pair(image_features, text_features, "image_features", "text_features")
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(f"image_features has {image_features.shape[0]} rows but text_features has "
                         f"{text_features.shape[0]}: image i's positive is text i")


def _active_world(loss) -> bool:
    """True when the loss runs on more than one rank; checks the process group agrees."""
    if loss.world_size == 1:
        return False
    if not is_distributed():
        raise RuntimeError(f"world_size={loss.world_size} needs an initialized torch.distributed process group")
    if dist.get_world_size() != loss.world_size or dist.get_rank() != loss.rank:
        raise ValueError(f"rank={loss.rank}, world_size={loss.world_size} do not match the process group "
                         f"(rank {dist.get_rank()} of {dist.get_world_size()})")
    return True


def _keep_in_graph(loss, logit_bias):
    """loss + 0·logit_bias: a bias that requires grad gets a zero gradient, not None."""
    if isinstance(logit_bias, torch.Tensor) and logit_bias.requires_grad:
        return loss + 0.0 * logit_bias.reshape(()).to(loss.dtype)
    return loss


class _SumGradOverRanks(torch.autograd.Function):
    """Identity forward; backward all-reduces the gradient (sum over ranks)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class ClipLoss(nn.Module):
    """open_clip's ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=False,
    rank=0, world_size=1, use_horovod=False).

    Args:
        local_loss (bool): world_size > 1: each rank's own rows and columns only (value per
            rank), instead of the global batch's loss.
        gather_with_grad (bool): world_size > 1: gradients flow through the gathered features
            back to their ranks (see the module docstring for what each mode gives).
        cache_labels (bool): accepted for compatibility (fastcontrast builds no label tensor).
        rank (int): this process's rank.
        world_size (int): number of ranks; > 1 needs an initialized process group.
        use_horovod (bool): must be False.
        backend (str | None): fastcontrast's backend ("auto" | "triton" | "torch").

    Returns:
        forward(image_features (B, D), text_features (B, D), logit_scale, logit_bias=None,
        output_dict=False) -> 0-dim loss, or {"contrastive_loss": loss}.

    Raises:
        ValueError: mismatched features, logit_scale ≤ 0, a rank/world that does not match
            the process group, use_horovod=True.

    Example:
        >>> loss = ClipLoss()
        >>> img = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
        >>> txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
        >>> loss(img, txt, torch.tensor(14.3)).shape
        torch.Size([])
    """

    def __init__(self, local_loss=False, gather_with_grad=False, cache_labels=False, rank=0, world_size=1,
                 use_horovod=False, backend: Optional[str] = None):
        super().__init__()
        _check_world(rank, world_size, use_horovod)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.use_horovod = use_horovod
        self.backend = backend
        self.prev_num_logits = 0
        self.labels = {}

    def extra_repr(self) -> str:
        return (f"local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}, "
                f"cache_labels={self.cache_labels}, rank={self.rank}, world_size={self.world_size}, "
                f"use_horovod={self.use_horovod}, backend={self.backend!r}")

    @full_precision
    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        _check_features(image_features, text_features)
        check_positive(logit_scale, "logit_scale", allow_tensor=True)
        if logit_bias is not None:
            _check_bias(logit_bias)
        if _active_world(self):
            loss = self._distributed(image_features, text_features, logit_scale)
        else:
            clip = InfoNCELoss(logit_scale=logit_scale, symmetric=True, distance="dot", backend=self.backend)
            loss = clip(image_features, text_features)
        loss = _keep_in_graph(loss, logit_bias)
        return {"contrastive_loss": loss} if output_dict else loss

    def _distributed(self, image, text, logit_scale):
        world = self.world_size
        layout = exchange_layout(image, "image_features")
        text_layout = exchange_layout(text, "text_features")
        if layout.sizes != text_layout.sizes:
            raise ValueError(f"every rank needs as many texts as images; got images {layout.sizes} and texts "
                             f"{text_layout.sizes}")
        with_grad = self.gather_with_grad
        # The global loss (local_loss=False) is shared out: every rank's rows and columns send
        # their gradients back to the features' owners, which gives each rank open_clip's
        # ∂L/∂x_r. local_loss=True without gather_with_grad: only the local queries get any.
        detach = self.local_loss and not with_grad
        all_image, _ = all_gather_rows(image.detach() if detach else image, layout=layout)
        all_text, _ = all_gather_rows(text.detach() if detach else text, layout=text_layout)
        if not self.local_loss and not with_grad and isinstance(logit_scale, torch.Tensor) and logit_scale.requires_grad:
            # open_clip computes the whole loss on every rank: its scale gets ∂L/∂t on each one,
            # the sum of every rank's share
            logit_scale = _SumGradOverRanks.apply(logit_scale)
        clip = InfoNCELoss(logit_scale=logit_scale, symmetric=True, distance="dot", backend=self.backend)
        terms = clip.symmetric_terms(image, text, None, None, all_image, all_text, None, None, layout.offset)
        if self.local_loss:  # this rank's mean: (mean rows + mean cols) / 2
            return clip.reduce(terms)
        share = terms.values.sum()
        total = share.detach().double().clone()
        dist.all_reduce(total)
        n = layout.total
        share = share / n
        scaled = share * world if with_grad else share
        return scaled + (total.to(share.dtype) / n - scaled).detach()


class SigLipLoss(nn.Module):
    """open_clip's SigLipLoss(cache_labels=False, rank=0, world_size=1, dist_impl=None).

    Args:
        cache_labels (bool): accepted for compatibility.
        rank (int): this process's rank.
        world_size (int): number of ranks; > 1 needs an initialized process group.
        dist_impl (str | None): 'bidir' (default), 'shift', 'reduce' or 'gather'; recorded
            only (every choice gives the same numbers).
        backend (str | None): fastcontrast's backend ("auto" | "triton" | "torch").

    Returns:
        forward(image_features (B, D), text_features (B, D), logit_scale, logit_bias,
        output_dict=False) -> 0-dim loss, or {"contrastive_loss": loss}.

    Raises:
        ValueError: mismatched features, logit_scale ≤ 0, an unknown dist_impl, a rank/world
            that does not match the process group.

    Example:
        >>> loss = SigLipLoss()
        >>> img = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
        >>> txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
        >>> loss(img, txt, torch.tensor(10.0), torch.tensor(-10.0)).shape
        torch.Size([])
    """

    def __init__(self, cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 dist_impl: Optional[str] = None, backend: Optional[str] = None):
        super().__init__()
        _check_world(rank, world_size, False)
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in ("bidir", "shift", "reduce", "gather"):
            raise ValueError(f"dist_impl must be 'bidir', 'shift', 'reduce' or 'gather', got {dist_impl!r}")
        self.backend = backend
        self.prev_num_logits = 0
        self.labels = {}

    def extra_repr(self) -> str:
        return (f"cache_labels={self.cache_labels}, rank={self.rank}, world_size={self.world_size}, "
                f"dist_impl={self.dist_impl!r}, backend={self.backend!r}")

    @full_precision
    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        _check_features(image_features, text_features)
        check_positive(logit_scale, "logit_scale", allow_tensor=True)
        bias = 0.0 if logit_bias is None else logit_bias
        _check_bias(bias)
        texts, offset = text_features, -1
        if _active_world(self):
            texts, layout = all_gather_rows(text_features, name="text_features")
            offset = layout.offset
        terms = sigmoid_terms(image_features, texts, None, None, scale=logit_scale, bias=bias, metric=_DOT,
                              backend=self.backend, self_offset=offset)
        loss = terms.values.sum() / image_features.shape[0]
        return {"contrastive_loss": loss} if output_dict else loss
