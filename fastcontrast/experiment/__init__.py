"""`fastcontrast experiment`: the two-stage MNIST / Fashion-MNIST study.

Stage 1 pretrains an MLP encoder with a contrastive loss, stage 2 trains a linear
classifier on its frozen embeddings; an MLP trained directly with cross-entropy is the
baseline. `fastcontrast experiment --help` lists the options.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .cli import main as run

    return run(argv)
