"""pytorch-metric-learning's losses: same constructors, defaults, call and numbers."""
from ._pair_margin import *  # noqa: F401,F403
from ._softmax import *  # noqa: F401,F403
from ._triplet import *  # noqa: F401,F403
