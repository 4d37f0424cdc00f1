"""Packaging facts that a checkout can check without building: the TYPE_CHECKING imports
match the lazy exports, py.typed and LICENSE are shipped, the sdist carries its tests, and
CI runs the built-package check after pytest. (.ci/package_check.sh builds and installs.)"""
import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import fastcontrast

ROOT = Path(__file__).resolve().parents[1]
in_checkout = pytest.mark.skipif(not (ROOT / ".ci").is_dir(), reason="repository checkout only")


def _type_checking_names() -> dict[str, str]:
    """name -> submodule of every import inside fastcontrast/__init__.py's TYPE_CHECKING block."""
    tree = ast.parse(Path(fastcontrast.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    names = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.dump(node)
        for alias in node.names:
            names[alias.asname or alias.name] = node.module
    return names


def test_type_checking_block_is_the_lazy_exports():
    assert _type_checking_names() == fastcontrast._EXPORTS


@pytest.mark.parametrize("name", sorted(fastcontrast._EXPORTS))
def test_each_lazy_export_is_the_object_its_submodule_defines(name):
    module = importlib.import_module(f"fastcontrast.{fastcontrast._EXPORTS[name]}")
    assert getattr(fastcontrast, name) is getattr(module, name)


def test_py_typed_is_installed_with_the_package():
    assert (Path(fastcontrast.__file__).parent / "py.typed").is_file()


@in_checkout
def test_project_metadata_uses_the_spdx_license_and_ships_the_license():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib")
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])   # SPDX instead
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77
               for r in meta["build-system"]["requires"])
    assert meta["tool"]["setuptools"]["package-data"]["fastcontrast"] == ["py.typed"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@in_checkout
def test_sdist_rules_carry_tests_and_bench():
    rules = (ROOT / "MANIFEST.in").read_text().split("\n")
    assert "graft tests" in rules and "graft bench" in rules


@in_checkout
def test_ci_runs_the_package_check_after_pytest_and_keeps_its_status():
    run = (ROOT / ".ci" / "run").read_text()
    assert run.index("-m pytest") < run.index("bash .ci/package_check.sh")
    check = (ROOT / ".ci" / "package_check.sh").read_text()
    for step in ("-m build", "pip\" install -q torch==2.13.0", "tests/test_validation.py"):
        assert step in check, step
