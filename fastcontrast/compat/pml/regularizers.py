"""pytorch-metric-learning's embedding and weight regularizers; the fused losses add an
embedding_regularizer term as pytorch-metric-learning does.

Every public name is pytorch_metric_learning.regularizers's own object; without
pytorch-metric-learning installed, using one raises an ImportError that names it.
"""
from ._pml import forwarding

__getattr__, __dir__ = forwarding(__name__, "regularizers")
