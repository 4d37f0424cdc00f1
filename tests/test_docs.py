"""Every public function and class documents itself (Google style) and its examples run.

Public names: fastcontrast.__all__ (functions and classes; tuples of choices are data),
and the functions and classes defined in fastcontrast.distributed and fastcontrast.metrics
whose names do not start with "_". A new public loss is checked as soon as it is exported."""
import doctest
import importlib
import inspect
import re

import pytest
import torch

import fastcontrast as fc

SECTIONS = ("Args:", "Returns:", "Raises:", "Example:")
MODULES = ("fastcontrast.distributed", "fastcontrast.metrics")


def public_objects():
    found = {}
    for name in fc.__all__:
        obj = getattr(fc, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            found[f"fastcontrast.{name}"] = obj
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) == module_name:
                found[f"{module_name}.{name}"] = obj
    return found


PUBLIC = public_objects()


def documented_parameters(obj):
    params = inspect.signature(obj).parameters.values()
    return [p.name for p in params if p.name not in ("self", "args", "kwargs")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def args_section(doc: str) -> str:
    return doc.split("Args:", 1)[1].split("Returns:", 1)[0]


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_docstring_sections_and_every_argument(qualname):
    obj = PUBLIC[qualname]
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{qualname} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and not summary.startswith(" "), f"{qualname}: the docstring needs a summary line"
    missing = [s for s in SECTIONS if not re.search(rf"^{s}\s*$", doc, re.M)]
    assert not missing, f"{qualname}: the docstring lacks the section(s) {missing}"
    assert ">>>" in doc.split("Example:", 1)[1], f"{qualname}: the Example section has no >>> snippet"
    args = args_section(doc)
    undocumented = [p for p in documented_parameters(obj) if not re.search(rf"^\s+{p} \(", args, re.M)]
    assert not undocumented, (f"{qualname}: Args does not document the parameter(s) {undocumented} "
                              "(one line 'name (type, default ...): meaning' each)")


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_docstring_examples_run(qualname):
    obj = PUBLIC[qualname]
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(obj, qualname, globs={}) if t.examples]
    assert tests, f"{qualname}: no runnable example"
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{qualname}: {result.failed} of {result.attempted} examples failed"


def test_the_walk_sees_every_loss():
    """The walk is not vacuous: it finds the losses and the distributed wrapper."""
    for name in ("supcon_loss", "SupConLoss", "TripletMarginLoss", "contrastive_loss", "InfoNCELoss"):
        assert f"fastcontrast.{name}" in PUBLIC
    assert "fastcontrast.distributed.GlobalBatchLoss" in PUBLIC
