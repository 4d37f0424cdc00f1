"""Regenerate the README tables and plots from the committed results.

    python bench/make_tables.py                  # every bench/results/*.json
    python bench/make_tables.py FILE.json ...    # only these

Writes bench/results/TABLES.md (one markdown table per results file, each with its
device, date, versions and the command that produced it) and, per file, PNG plots of time
and memory against batch size beside the JSON. Nothing is measured here.
"""
import json
import sys
from pathlib import Path

from fastcontrast.bench.cli import run_report
from fastcontrast.bench.report import SCHEMA

RESULTS = Path(__file__).resolve().parent / "results"


def _is_bench_results(path):
    """Only `fastcontrast bench` files (pytest-benchmark and other scripts' JSON differ)."""
    try:
        return json.loads(path.read_text()).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def main(argv):
    # headline runs first, then by name
    files = argv or sorted((str(p) for p in RESULTS.glob("*.json") if _is_bench_results(p)),
                           key=lambda f: ("headline" not in Path(f).name, f))
    if not files:
        print(f"no results files in {RESULTS}", file=sys.stderr)
        return 1
    return run_report([*files, "--markdown", str(RESULTS / "TABLES.md"), "--plots", str(RESULTS)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
