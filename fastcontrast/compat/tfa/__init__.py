"""TensorFlow Addons' metric-learning losses on torch tensors, with TF Addons' math and
averaging: `triplet_semihard_loss`, `triplet_hard_loss`, `contrastive_loss`, `npairs_loss`.

One documented difference: where TF Addons divides 0 by 0 (no positive pair in the batch)
and returns NaN, these return 0 with a zero gradient.
"""
from ._pair_margin import *  # noqa: F401,F403
from ._softmax import *  # noqa: F401,F403
from ._triplet import *  # noqa: F401,F403
