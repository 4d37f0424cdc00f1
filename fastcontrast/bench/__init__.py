"""`fastcontrast bench`: timing and memory profiling against the baselines.

    fastcontrast bench --help
    python -m fastcontrast.bench --losses triplet-semihard --batch-sizes 256,512

Pieces: cases.py (what is measured), impls.py (who is measured: fastcontrast, dense
PyTorch, torch.compile, pytorch-metric-learning), measure.py (in-process timing),
probe.py + _child.py (one fresh process per configuration: peak memory, OOM, time limit),
report.py (JSON, CSV, tables, plots), cli.py (the command).
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main
    return cli_main(argv)
