"""fastcontrast: contrastive and metric-learning losses with fused Triton kernels.

    import fastcontrast as fc
    loss = fc.triplet_margin_loss(embeddings, labels, mining="semihard")

Functional losses and their nn.Module forms are imported on first use, so `import
fastcontrast` stays cheap and a missing optional piece never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._validation import CHECK_FINITE_MODES, set_check_finite  # noqa: F401
from .backend import BACKENDS, resolve_backend  # noqa: F401
from .metrics import METRICS  # noqa: F401

if TYPE_CHECKING:  # what a type checker sees of the lazy exports below (kept equal to _EXPORTS)
    from ._reduce import LossTerms, reduce_terms
    from .dcl import DCLLoss, dcl_loss
    from .distributed import GlobalBatchLoss
    from .pair_margin import ContrastiveLoss, contrastive_loss
    from .softmax import (InfoNCELoss, NPairLoss, NTXentLoss, SupConLoss, info_nce_loss,
                          npair_loss, nt_xent_loss, supcon_loss)
    from .siglip import SigLIPLoss, siglip_loss
    from .triplet import MINING_MODES, TripletMarginLoss, triplet_margin_loss
    from .margin import MarginLoss, margin_loss
    from .pair_lse import (CircleLoss, GeneralizedLiftedStructureLoss, LiftedStructureLoss,
                           MultiSimilarityLoss, circle_loss, generalized_lifted_structure_loss,
                           lifted_structure_loss, multi_similarity_loss)
    from .pair_miners import (BatchEasyHardMiner, MultiSimilarityMiner, PairMarginMiner,
                              batch_easy_hard_miner, multi_similarity_miner, pair_margin_miner)

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "contrastive_loss": "pair_margin", "ContrastiveLoss": "pair_margin",
    "triplet_margin_loss": "triplet", "TripletMarginLoss": "triplet", "MINING_MODES": "triplet",
    "supcon_loss": "softmax", "SupConLoss": "softmax",
    "nt_xent_loss": "softmax", "NTXentLoss": "softmax",
    "npair_loss": "softmax", "NPairLoss": "softmax",
    "info_nce_loss": "softmax", "InfoNCELoss": "softmax",
    "siglip_loss": "siglip", "SigLIPLoss": "siglip",
    "dcl_loss": "dcl", "DCLLoss": "dcl",
    "LossTerms": "_reduce", "reduce_terms": "_reduce",
    "GlobalBatchLoss": "distributed",
    "multi_similarity_loss": "pair_lse", "MultiSimilarityLoss": "pair_lse",
    "circle_loss": "pair_lse", "CircleLoss": "pair_lse",
    "lifted_structure_loss": "pair_lse", "LiftedStructureLoss": "pair_lse",
    "generalized_lifted_structure_loss": "pair_lse", "GeneralizedLiftedStructureLoss": "pair_lse",
    "margin_loss": "margin", "MarginLoss": "margin",
    "multi_similarity_miner": "pair_miners", "MultiSimilarityMiner": "pair_miners",
    "pair_margin_miner": "pair_miners", "PairMarginMiner": "pair_miners",
    "batch_easy_hard_miner": "pair_miners", "BatchEasyHardMiner": "pair_miners",
}

__all__ = ["BACKENDS", "METRICS", "CHECK_FINITE_MODES", "resolve_backend", "set_check_finite", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastcontrast' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
