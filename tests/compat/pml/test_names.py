"""Every name of pytorch-metric-learning resolves through fastcontrast.compat.pml: the fused
classes are fastcontrast's, every other one is pytorch-metric-learning's own object."""
import importlib
import inspect

import pytest

pml = pytest.importorskip("pytorch_metric_learning")

from fastcontrast.compat.pml import _pml  # noqa: E402

FUSED = {
    "losses": {"ContrastiveLoss", "TripletMarginLoss", "NTXentLoss", "SupConLoss", "NPairsLoss", "CrossBatchMemory",
               "MultiSimilarityLoss", "CircleLoss", "LiftedStructureLoss", "GeneralizedLiftedStructureLoss",
               "MarginLoss"},
    "miners": {"TripletMarginMiner", "BatchHardMiner", "MultiSimilarityMiner", "PairMarginMiner",
               "BatchEasyHardMiner"},
    "distances": {"LpDistance", "CosineSimilarity", "DotProductSimilarity"},  # BaseDistance: PML's own
}
MODULES = ["losses", "miners", "distances", "reducers", "regularizers", "samplers", "testers", "trainers",
           "datasets"]


def public_classes(mod):
    return sorted(n for n, v in vars(mod).items() if not n.startswith("_") and inspect.isclass(v))


@pytest.mark.parametrize("name", MODULES)
def test_every_class_resolves(name):
    theirs = importlib.import_module(f"pytorch_metric_learning.{name}")
    ours = importlib.import_module(f"fastcontrast.compat.pml.{name}")
    classes = public_classes(theirs)
    assert classes, name
    for cls in classes:
        got = getattr(ours, cls)
        if cls in FUSED.get(name, ()):
            assert got is not getattr(theirs, cls) and got.__module__.startswith("fastcontrast."), cls
        else:
            assert got is getattr(theirs, cls), cls
        assert cls in dir(ours)
    # the from-import form too
    assert eval(f"__import__('fastcontrast.compat.pml.{name}', fromlist=['{classes[0]}']).{classes[0]}")


def test_unknown_names_raise_attribute_error():
    from fastcontrast.compat.pml import losses
    with pytest.raises(AttributeError, match="NoSuchLoss"):
        losses.NoSuchLoss
    assert not hasattr(losses, "_private_thing")


def test_utils_submodules_are_pmls_own():
    from pytorch_metric_learning.utils import common_functions, loss_and_miner_utils
    from fastcontrast.compat.pml import utils
    from fastcontrast.compat.pml.utils import common_functions as c_f
    import fastcontrast.compat.pml.utils.loss_and_miner_utils as lmu
    assert c_f is common_functions and lmu is loss_and_miner_utils
    assert lmu.__spec__.name == "pytorch_metric_learning.utils.loss_and_miner_utils"
    assert utils.inference is importlib.import_module("pytorch_metric_learning.utils.inference")
    assert utils.distributed.__name__ == "fastcontrast.compat.pml.utils.distributed"  # fastcontrast's own
    with pytest.raises(AttributeError, match="no_such_module"):
        utils.no_such_module


def test_without_pytorch_metric_learning(monkeypatch):
    """The ImportError names the class and says where it comes from; fused names still work."""
    from fastcontrast.compat.pml import losses, reducers, utils
    monkeypatch.setattr(_pml, "available", lambda: False)
    with pytest.raises(ImportError, match=r"losses\.ArcFaceLoss.*pytorch-metric-learning"):
        losses.ArcFaceLoss
    with pytest.raises(ImportError, match=r"reducers\.ThresholdReducer.*pytorch-metric-learning"):
        from fastcontrast.compat.pml.reducers import ThresholdReducer  # noqa: F401
    with pytest.raises(ImportError, match=r"utils\.logging_presets.*pytorch-metric-learning"):
        utils.logging_presets
    assert losses.TripletMarginLoss.__module__ == "fastcontrast.compat.pml._triplet"


NO_PML = r"""
import sys
sys.modules["pytorch_metric_learning"] = None  # as if it were not installed
import torch
from fastcontrast.compat.pml import distances, losses, miners
torch.manual_seed(0)
x, y = torch.randn(14, 5, dtype=torch.float64), torch.randint(0, 3, (14,))
out = [losses.TripletMarginLoss()(x, y, miners.TripletMarginMiner(type_of_triplets="semihard")(x, y)).item(),
       losses.TripletMarginLoss(distance=distances.CosineSimilarity())(x, y, miners.BatchHardMiner()(x, y)).item()]
out += [getattr(losses, n)()(x, y).item() for n in ("ContrastiveLoss", "NTXentLoss", "SupConLoss", "NPairsLoss")]
out += [float(distances.LpDistance(power=2)(x).sum()), float(distances.DotProductSimilarity().margin(x[0], x[1]).sum())]
for name in ("losses.ArcFaceLoss", "reducers.MeanReducer", "utils.common_functions"):
    mod, attr = name.split(".")
    try:
        getattr(__import__("fastcontrast.compat.pml." + mod, fromlist=[attr]), attr)
    except ImportError as err:
        assert attr in str(err) and "pytorch-metric-learning" in str(err), err
    else:
        raise AssertionError(name + " resolved without pytorch-metric-learning")
print(repr(out))
"""


def test_fused_classes_work_without_pytorch_metric_learning():
    """A process where pytorch-metric-learning cannot be imported: the fused classes give
    the same numbers as here, PML-only names raise an ImportError naming them."""
    import subprocess
    import sys

    import torch
    from pytorch_metric_learning import losses as pml_losses, miners as pml_miners, distances as pml_distances
    run = subprocess.run([sys.executable, "-c", NO_PML], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = eval(run.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)
    x, y = torch.randn(14, 5, dtype=torch.float64), torch.randint(0, 3, (14,))
    want = [pml_losses.TripletMarginLoss()(x, y, pml_miners.TripletMarginMiner(type_of_triplets="semihard")(x, y)),
            pml_losses.TripletMarginLoss(distance=pml_distances.CosineSimilarity())(x, y, pml_miners.BatchHardMiner()(x, y))]
    want += [getattr(pml_losses, n)()(x, y) for n in ("ContrastiveLoss", "NTXentLoss", "SupConLoss", "NPairsLoss")]
    want += [pml_distances.LpDistance(power=2)(x).sum(), pml_distances.DotProductSimilarity().margin(x[0], x[1]).sum()]
    assert got == pytest.approx([float(w) for w in want], rel=1e-9, abs=1e-12)
