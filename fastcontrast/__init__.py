"""fastcontrast: contrastive and metric-learning losses with fused Triton kernels."""
from .backend import BACKENDS, resolve_backend  # noqa: F401
from .metrics import METRICS  # noqa: F401

__version__ = "0.1.0"
