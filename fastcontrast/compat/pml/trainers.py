"""pytorch-metric-learning's trainers (fastcontrast computes none of them).

Every public name is pytorch_metric_learning.trainers's own object; without
pytorch-metric-learning installed, using one raises an ImportError that names it.
"""
from ._pml import forwarding

__getattr__, __dir__ = forwarding(__name__, "trainers")
