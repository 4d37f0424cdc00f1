"""pytorch-metric-learning, fused: change `pytorch_metric_learning` to
`fastcontrast.compat.pml` in an import and keep the same numbers.

    from fastcontrast.compat.pml import losses, miners, distances, reducers

Every module and name of pytorch-metric-learning resolves here: the classes fastcontrast
computes are its own, every other one is pytorch-metric-learning's (see _pml).
"""
from . import distances, losses, miners  # noqa: F401
from . import datasets, reducers, regularizers, samplers, testers, trainers, utils  # noqa: F401
