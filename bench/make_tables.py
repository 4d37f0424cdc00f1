"""Regenerate the README tables and plots from the committed results.

    python bench/make_tables.py                  # every bench/results/*.json
    python bench/make_tables.py FILE.json ...    # only these

Writes bench/results/TABLES.md (one markdown table per results file, each with its
device, date, versions and the command that produced it) and, per file, PNG plots of time
and memory against batch size beside the JSON. Nothing is measured here.
"""
import sys
from pathlib import Path

from fastcontrast.bench.cli import run_report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv):
    files = argv or sorted(str(p) for p in RESULTS.glob("*.json") if not p.name.startswith("pytest-"))
    if not files:
        print(f"no results files in {RESULTS}", file=sys.stderr)
        return 1
    return run_report([*files, "--markdown", str(RESULTS / "TABLES.md"), "--plots", str(RESULTS)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
