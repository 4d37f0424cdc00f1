"""pytorch-metric-learning's distance objects, as fastcontrast metrics.

Same constructors and defaults as `pytorch_metric_learning.distances`. Calling one returns
the dense query×reference matrix, as in PML; the compat losses read only its settings and
never build that matrix. `metric_from_distance` also accepts PML's own distance objects,
so a user may keep passing those.
"""
from __future__ import annotations

import torch

from ...metrics import Metric, normalize_rows, pairwise

__all__ = ["BaseDistance", "LpDistance", "DotProductSimilarity", "CosineSimilarity", "metric_from_distance"]


class BaseDistance:
    is_inverted = False  # True for similarities: larger = closer

    def __init__(self, normalize_embeddings: bool = True, p: float = 2, power: float = 1, is_inverted=None):
        if is_inverted is not None and bool(is_inverted) != self.is_inverted:
            raise ValueError(f"{type(self).__name__} does not support is_inverted={is_inverted}")
        self.normalize_embeddings = bool(normalize_embeddings)
        self.p = p
        self.power = power

    def metric(self) -> Metric:
        raise NotImplementedError

    def __call__(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None = None) -> torch.Tensor:
        m = self.metric()
        q = normalize_rows(query_emb) if m.normalize else query_emb
        r = q if ref_emb is None else (normalize_rows(ref_emb) if m.normalize else ref_emb)
        return pairwise(q, r, m.kind)

    def __repr__(self):
        return f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings}, p={self.p}, power={self.power})"


class LpDistance(BaseDistance):
    """Euclidean (power=1) or squared Euclidean (power=2); only p=2 is supported."""

    def metric(self) -> Metric:
        if self.p != 2:
            raise ValueError(f"LpDistance: only p=2 is supported, got p={self.p}")
        if self.power not in (1, 2):
            raise ValueError(f"LpDistance: only power=1 or power=2 is supported, got power={self.power}")
        return Metric("euclidean" if self.power == 1 else "sqeuclidean", self.normalize_embeddings, False)


class DotProductSimilarity(BaseDistance):
    is_inverted = True

    def metric(self) -> Metric:
        if self.power != 1:
            raise ValueError(f"DotProductSimilarity: only power=1 is supported, got power={self.power}")
        return Metric("dot", self.normalize_embeddings, True)


class CosineSimilarity(DotProductSimilarity):
    """Dot product of L2-normalized embeddings (always normalizes, as in PML)."""

    def metric(self) -> Metric:
        if self.power != 1:
            raise ValueError(f"CosineSimilarity: only power=1 is supported, got power={self.power}")
        return Metric("dot", True, True)


def metric_from_distance(distance, argument: str = "distance") -> Metric:
    """A Metric from one of the classes above or from a pytorch-metric-learning distance."""
    if isinstance(distance, BaseDistance):
        return distance.metric()
    name = type(distance).__name__
    if name in ("LpDistance", "DotProductSimilarity", "CosineSimilarity") and hasattr(distance, "power"):
        own = {"LpDistance": LpDistance, "DotProductSimilarity": DotProductSimilarity,
               "CosineSimilarity": CosineSimilarity}[name]
        kwargs = dict(normalize_embeddings=getattr(distance, "normalize_embeddings", True),
                      power=distance.power)
        if name == "LpDistance":
            kwargs["p"] = getattr(distance, "p", 2)
        return own(**kwargs).metric()
    raise TypeError(f"{argument} must be LpDistance, CosineSimilarity or DotProductSimilarity, got {name}")


from ._pml import forwarding  # noqa: E402

__getattr__, __dir__ = forwarding(__name__, "distances")
