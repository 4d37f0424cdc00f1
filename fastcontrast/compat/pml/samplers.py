"""pytorch-metric-learning's samplers (fastcontrast computes none of them).

Every public name is pytorch_metric_learning.samplers's own object; without
pytorch-metric-learning installed, using one raises an ImportError that names it.
"""
from ._pml import forwarding

__getattr__, __dir__ = forwarding(__name__, "samplers")
