"""pytorch-metric-learning utils. `distributed` (DistributedLossWrapper,
DistributedMinerWrapper) is fastcontrast's; every other submodule (common_functions,
loss_and_miner_utils, accuracy_calculator, inference, logging_presets, ...) is
pytorch_metric_learning.utils' own module object, also under its dotted name
(`import fastcontrast.compat.pml.utils.common_functions`)."""
import importlib as _importlib

from .. import _pml

_pml.install_alias(__name__, "utils")


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _pml.require("utils", f"{__name__}.{name} (pytorch_metric_learning.utils.{name})")
    try:
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}, "
                             "nor has pytorch_metric_learning.utils") from None
