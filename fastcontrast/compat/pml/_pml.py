"""pytorch-metric-learning, optional: names fastcontrast does not compute come from it.

Every compat module (`losses`, `miners`, `distances`, `reducers`, ...) defines the classes
fastcontrast fuses and forwards every other public name to the same module of
pytorch-metric-learning, so a script that changes only its import keeps running. Without
pytorch-metric-learning installed, such a name raises an ImportError that names it.

`fastcontrast.compat.pml.utils.<module>` is pytorch-metric-learning's own
`utils.<module>` object (not a copy), so settings such as
`common_functions.COLLECT_STATS = True` reach the library itself.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

PACKAGE = "pytorch_metric_learning"
INSTALL_HINT = "pip install pytorch-metric-learning"


def available() -> bool:
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE] is not None
    try:
        importlib.import_module(PACKAGE)
    except ImportError:
        return False
    return True


def module(name: str):
    """pytorch_metric_learning.<name>, or None when the library is not installed."""
    if not available():
        return None
    return importlib.import_module(f"{PACKAGE}.{name}")


def require(name: str, what: str):
    """pytorch_metric_learning.<name>; ImportError naming `what` when not installed."""
    mod = module(name)
    if mod is None:
        raise ImportError(f"{what} comes from pytorch-metric-learning, which is not installed "
                          f"(fastcontrast does not compute it): {INSTALL_HINT}")
    return mod


def forwarding(own_module: str, pml_name: str):
    """(__getattr__, __dir__) for a compat module: names it does not define are taken from
    pytorch_metric_learning.<pml_name>."""

    def __getattr__(name: str):
        if name.startswith("_"):
            raise AttributeError(f"module {own_module!r} has no attribute {name!r}")
        mod = require(pml_name, f"{own_module}.{name} (pytorch_metric_learning.{pml_name}.{name})")
        try:
            return getattr(mod, name)
        except AttributeError:
            raise AttributeError(f"module {own_module!r} has no attribute {name!r}, "
                                 f"nor has pytorch_metric_learning.{pml_name}") from None

    def __dir__():
        names = set(sys.modules[own_module].__dict__)
        mod = module(pml_name) if available() else None
        if mod is not None:
            names.update(n for n in dir(mod) if not n.startswith("_"))
        return sorted(names)

    return __getattr__, __dir__


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        target = importlib.import_module(self.target)
        self._spec = target.__spec__
        return target

    def exec_module(self, module):
        # the import system stamps the alias's spec on the module: give it back its own
        module.__spec__ = self._spec


class AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves `<prefix>.<rest>` to `pytorch_metric_learning.<target>.<rest>` when no real
    module of that name exists (it is consulted after the ordinary finders)."""

    def __init__(self, prefix: str, target: str):
        self.prefix, self.target = prefix + ".", target

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.prefix):
            return None
        rest = fullname[len(self.prefix):]
        if not rest or rest.startswith("_") or "." in rest:
            return None
        aliased = f"{PACKAGE}.{self.target}.{rest}" if self.target else f"{PACKAGE}.{rest}"
        if not available():
            raise ImportError(f"{fullname} is pytorch-metric-learning's {aliased}, and "
                              f"pytorch-metric-learning is not installed: {INSTALL_HINT}", name=fullname)
        if importlib.util.find_spec(aliased) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(aliased))


def install_alias(prefix: str, target: str):
    if not any(isinstance(f, AliasFinder) and f.prefix == prefix + "." for f in sys.meta_path):
        sys.meta_path.append(AliasFinder(prefix, target))


class DenseMinerFallback:
    """For a compat miner: pytorch-metric-learning's own miner with the same settings (built
    on first use; `_dense_kwargs()` its hyper-parameters, `_dense_reason()` what needs it), and
    the stats that miner records readable on the compat miner. Mix in before torch.nn.Module."""

    def _dense_kwargs(self) -> dict:
        return {}

    def _dense_reason(self) -> str:
        return repr(self.distance)

    def dense_miner(self):
        if self._dense_miner is None:
            miners = require("miners", f"{type(self).__name__} with {self._dense_reason()}")
            miner = getattr(miners, self.pml_name)(distance=self.distance, collect_stats=self.collect_stats,
                                                   **self._dense_kwargs())
            object.__setattr__(self, "_dense_miner", miner)
        return self._dense_miner

    def __getattr__(self, name):
        dense = self.__dict__.get("_dense_miner")
        if dense is not None and name in getattr(dense, "_record_these_stats", ()):
            return getattr(dense, name)
        return super().__getattr__(name)
