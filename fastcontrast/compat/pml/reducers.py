"""pytorch-metric-learning's reducers. The fused losses reduce with them without listing
their tuples where the reduction allows it (see losses).

Every public name is pytorch_metric_learning.reducers's own object; without
pytorch-metric-learning installed, using one raises an ImportError that names it.
"""
from ._pml import forwarding

__getattr__, __dir__ = forwarding(__name__, "reducers")
