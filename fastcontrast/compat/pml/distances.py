"""pytorch-metric-learning's distance objects, fused where the math allows.

Same constructors, defaults and interface as `pytorch_metric_learning.distances`. With
pytorch-metric-learning installed, LpDistance, DotProductSimilarity and CosineSimilarity
here are subclasses of its own classes (so every pytorch-metric-learning loss, miner and
`isinstance` check accepts them); without it they implement the same interface
(`forward`, `compute_mat`, `pairwise_distance`, `normalize`, `maybe_normalize`, `get_norm`,
`margin`, `smallest_dist`, `largest_dist`, `is_inverted`, ...). Calling one returns the
dense query×reference matrix, as in PML; the fused losses and miners read only its
settings and never build that matrix.

Fused: LpDistance(p=2, power=1 or 2) (Euclidean, squared Euclidean), DotProductSimilarity
and CosineSimilarity with power=1, normalized or not; pytorch-metric-learning's own objects
of those classes too. Everything else — LpDistance with p ≠ 2 or another power,
SNRDistance, a power ≠ 1 similarity, any user subclass of BaseDistance — is computed by a
dense path (pytorch-metric-learning's own loss or miner on the full distance matrix), with
a one-time warning saying it is not fused.
"""
from __future__ import annotations

import warnings

import torch

from ...metrics import Metric
from . import _pml

__all__ = ["BaseDistance", "LpDistance", "DotProductSimilarity", "CosineSimilarity", "metric_from_distance",
           "fused_metric"]

_theirs = _pml.module("distances")


class _StandaloneBaseDistance(torch.nn.Module):
    """pytorch-metric-learning's BaseDistance interface, for use without the library."""

    def __init__(self, normalize_embeddings=True, p=2, power=1, is_inverted=False, collect_stats=None):
        super().__init__()
        self.normalize_embeddings = normalize_embeddings
        self.p, self.power, self.is_inverted = p, power, is_inverted
        self.collect_stats = bool(collect_stats)

    def forward(self, query_emb, ref_emb=None):
        if query_emb.dim() != 2 or (ref_emb is not None and ref_emb.dim() != 2):
            raise ValueError("embeddings must be a 2D tensor of shape (batch_size, embedding_size)")
        q = self.maybe_normalize(query_emb)
        r = q if ref_emb is None else self.maybe_normalize(ref_emb)
        mat = self.compute_mat(q, r)
        return mat if self.power == 1 else mat ** self.power

    def compute_mat(self, query_emb, ref_emb):
        raise NotImplementedError

    def pairwise_distance(self, query_emb, ref_emb):
        raise NotImplementedError

    def smallest_dist(self, *args, **kwargs):
        return (torch.max if self.is_inverted else torch.min)(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        return (torch.min if self.is_inverted else torch.max)(*args, **kwargs)

    def margin(self, x, y):
        """How much closer x is than y (positive when x is the nearer one)."""
        return y - x if self.is_inverted else x - y

    def normalize(self, embeddings, dim=1, **kwargs):
        return torch.nn.functional.normalize(embeddings, p=self.p, dim=dim, **kwargs)

    def maybe_normalize(self, embeddings, dim=1, **kwargs):
        return self.normalize(embeddings, dim=dim, **kwargs) if self.normalize_embeddings else embeddings

    def get_norm(self, embeddings, dim=1, **kwargs):
        return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)


class _StandaloneLp(_StandaloneBaseDistance):
    def compute_mat(self, query_emb, ref_emb):
        return torch.cdist(query_emb, query_emb if ref_emb is None else ref_emb, p=self.p)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)


class _StandaloneDot(_StandaloneBaseDistance):
    def __init__(self, **kwargs):
        super().__init__(is_inverted=True, **kwargs)

    def compute_mat(self, query_emb, ref_emb):
        return query_emb @ ref_emb.transpose(-1, -2)

    def pairwise_distance(self, query_emb, ref_emb):
        return (query_emb * ref_emb).sum(1)


class _StandaloneCos(_StandaloneDot):
    def __init__(self, **kwargs):
        super().__init__(normalize_embeddings=True, **kwargs)


if _theirs is not None:
    BaseDistance = _theirs.BaseDistance
    _LpBase, _DotBase, _CosBase = _theirs.LpDistance, _theirs.DotProductSimilarity, _theirs.CosineSimilarity
else:
    BaseDistance = _StandaloneBaseDistance
    _LpBase, _DotBase, _CosBase = _StandaloneLp, _StandaloneDot, _StandaloneCos


def _refuse_inverted(cls_name, wanted: bool, kwargs):
    if "is_inverted" in kwargs:
        if bool(kwargs["is_inverted"]) != wanted:
            raise ValueError(f"{cls_name} does not support is_inverted={kwargs['is_inverted']}")
        del kwargs["is_inverted"]


class LpDistance(_LpBase):
    """pytorch_metric_learning.distances.LpDistance(normalize_embeddings=True, p=2, power=1).
    Fused for p=2 with power 1 (Euclidean) or 2 (squared Euclidean)."""

    def __init__(self, **kwargs):
        _refuse_inverted("LpDistance", False, kwargs)
        super().__init__(**kwargs)

    def metric(self) -> Metric:
        if self.p != 2:
            raise ValueError(f"LpDistance: only p=2 is fused, got p={self.p}")
        if self.power not in (1, 2):
            raise ValueError(f"LpDistance: only power=1 or power=2 is fused, got power={self.power}")
        return Metric("euclidean" if self.power == 1 else "sqeuclidean", bool(self.normalize_embeddings), False)


class DotProductSimilarity(_DotBase):
    """pytorch_metric_learning.distances.DotProductSimilarity(normalize_embeddings=True)."""

    def __init__(self, **kwargs):
        _refuse_inverted("DotProductSimilarity", True, kwargs)
        super().__init__(**kwargs)

    def metric(self) -> Metric:
        if self.power != 1:
            raise ValueError(f"{type(self).__name__}: only power=1 is fused, got power={self.power}")
        return Metric("dot", bool(self.normalize_embeddings), True)


class CosineSimilarity(_CosBase, DotProductSimilarity):
    """pytorch_metric_learning.distances.CosineSimilarity(): the dot product of L2-normalized
    embeddings (always normalizes, as in PML)."""

    def __init__(self, **kwargs):
        _refuse_inverted("CosineSimilarity", True, kwargs)
        _CosBase.__init__(self, **kwargs)

    def metric(self) -> Metric:
        if self.power != 1:
            raise ValueError(f"CosineSimilarity: only power=1 is fused, got power={self.power}")
        return Metric("dot", True, True)


def _own_equivalent(distance):
    """The class here that computes a pytorch-metric-learning distance of one of the three
    fused classes (exactly that class: a subclass may compute something else)."""
    if _theirs is None:
        return None
    return {_theirs.LpDistance: LpDistance, _theirs.DotProductSimilarity: DotProductSimilarity,
            _theirs.CosineSimilarity: CosineSimilarity}.get(type(distance))


_FUSED_TYPES = (LpDistance, DotProductSimilarity, CosineSimilarity)


def metric_from_distance(distance, argument: str = "distance") -> Metric:
    """A Metric from one of the classes above or from a pytorch-metric-learning distance of
    the same class; ValueError/TypeError when it cannot be fused."""
    if type(distance) in _FUSED_TYPES:
        return distance.metric()
    own = _own_equivalent(distance)
    if own is not None:
        kwargs = dict(normalize_embeddings=getattr(distance, "normalize_embeddings", True), power=distance.power)
        if own is LpDistance:
            kwargs["p"] = getattr(distance, "p", 2)
        if own is CosineSimilarity:
            kwargs.pop("normalize_embeddings")
        return own(**kwargs).metric()
    raise TypeError(f"{argument} must be LpDistance, CosineSimilarity or DotProductSimilarity, "
                    f"got {type(distance).__name__}")


_warned: set = set()


def fused_metric(distance, owner: str, argument: str = "distance") -> Metric | None:
    """The Metric of a distance fastcontrast fuses, or None for the dense path (warned once
    per distance class and owner). Not a distance at all: TypeError."""
    try:
        return metric_from_distance(distance, argument)
    except (TypeError, ValueError):
        pass
    if not (isinstance(distance, (BaseDistance, _StandaloneBaseDistance))
            or (callable(distance) and hasattr(distance, "is_inverted"))):
        raise TypeError(f"{argument} must be a distance object (a BaseDistance), got {type(distance).__name__}")
    key = (type(distance), owner)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"{owner}: {distance!r} is not fused by fastcontrast; computing it with "
                      "pytorch-metric-learning's dense distance matrix", stacklevel=4)
    return None


from ._pml import forwarding  # noqa: E402

__getattr__, __dir__ = forwarding(__name__, "distances")
