"""pytorch-metric-learning's losses: same constructors, defaults, call and numbers.

ContrastiveLoss, TripletMarginLoss, NTXentLoss, SupConLoss, NPairsLoss, MultiSimilarityLoss,
CircleLoss, LiftedStructureLoss, GeneralizedLiftedStructureLoss and MarginLoss are computed by
fastcontrast; every other name (ArcFaceLoss, MultipleLosses, CrossBatchMemory, ...) is
pytorch_metric_learning.losses' own class.
"""
from ._pair_lse import *  # noqa: F401,F403
from ._pair_margin import *  # noqa: F401,F403
from ._softmax import *  # noqa: F401,F403
from ._triplet import *  # noqa: F401,F403
from ._xbm import *  # noqa: F401,F403
from ._pml import forwarding

__getattr__, __dir__ = forwarding(__name__, "losses")
