"""Docstrings of the public losses, assembled from shared argument descriptions so that every
function and Module documents its arguments in one style (Google style: a summary line, the
formula, Args, Returns, Raises, Example)."""
from __future__ import annotations

import textwrap

# argument name -> "(type, default): meaning"; a loss may override an entry
COMMON = {
    "embeddings": "(Tensor (B, D), floating): the anchors, one row per sample.",
    "labels": "(Tensor (B,), integer, default None): class of each row; rows with equal labels "
              "are positives of each other.",
    "ref_emb": "(Tensor (N, D), default None): compare the anchors against these references instead of "
               "the batch itself (no self pair is then skipped).",
    "ref_labels": "(Tensor (N,), integer, default None): the references' labels; needed with ref_emb.",
    "indices_tuple": "(tuple of 1-D integer Tensors, default None): explicit triplets (a, p, n) or pairs "
                     "(a1, p, a2, n), as pytorch-metric-learning miners return them, or a lazy miner "
                     "selection; the loss then uses exactly those.",
    "distance": "(str): \"euclidean\", \"squared_euclidean\", \"dot\" or \"cosine\" (similarities are "
                "compared as d = −s).",
    "normalize": "(bool or None): L2-normalize the rows before the distance; None means the "
                 "distance's own default (True for \"cosine\", False otherwise).",
    "reduction": "(str, default \"mean\"): \"mean\", \"sum\" or \"none\" (per-anchor values).",
    "average": "(str, default \"avg_nonzero\"): what \"mean\" divides by: the number of terms > 0 "
               "(\"avg_nonzero\", pytorch-metric-learning's AvgNonZeroReducer) or of all terms (\"mean\").",
    "backend": "(str or None, default None): \"torch\", \"triton\" or None (the Triton kernels on CUDA "
               "when triton imports, the PyTorch path otherwise; float64 always the PyTorch path).",
}


def doc(summary: str, formula: str, args: dict, returns: str, raises: str, example: str, notes: str = "") -> str:
    """A Google-style docstring from its parts; args maps name -> description (None: COMMON's)."""
    lines = [summary, "", textwrap.dedent(formula).strip("\n"), ""]
    if notes:
        lines += [textwrap.dedent(notes).strip("\n"), ""]
    lines.append("Args:")
    for name, text in args.items():
        text = COMMON[name] if text is None else text
        lines += textwrap.wrap(f"{name} {text}", 92, initial_indent="    ", subsequent_indent="        ")
    lines += ["", "Returns:"]
    lines += textwrap.wrap(returns, 92, initial_indent="    ", subsequent_indent="    ")
    lines += ["", "Raises:"]
    lines += textwrap.wrap(raises, 92, initial_indent="    ", subsequent_indent="    ")
    lines += ["", "Example:"]
    lines += ["    " + line for line in textwrap.dedent(example).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


RAISES = ("TypeError: an argument of the wrong type (non-tensor embeddings, float labels, a "
          "non-string option). ValueError: a bad value, named in the message (shapes that do not "
          "match, an unknown option, a non-positive temperature, NaN/Inf embeddings when finite "
          "checks are on), before any computation.")
