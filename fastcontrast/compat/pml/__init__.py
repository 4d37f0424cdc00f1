"""pytorch-metric-learning, fused: change `pytorch_metric_learning` to
`fastcontrast.compat.pml` in an import and keep the same numbers.

    from fastcontrast.compat.pml import losses, miners, distances
"""
from . import distances, losses, miners  # noqa: F401
