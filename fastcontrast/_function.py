"""What the three family Functions share: keeping their inputs for backward.

r = None (r_labels = None) means the anchors are their own references. The Functions are
given None rather than the same tensor twice, because torch.compile breaks the graph on an
autograd.Function with a duplicate tensor input; the implementations always get real
tensors, and q's gradient is then the sum of its two roles.
"""
from __future__ import annotations


def with_references(q, r, q_labels, r_labels):
    """(q, r, q_labels, r_labels) with a None reference replaced by the anchors themselves."""
    return q, (q if r is None else r), q_labels, (q_labels if r_labels is None else r_labels)


def save_inputs(ctx, q, r, q_labels, r_labels, *saved) -> None:
    ctx.same, ctx.same_labels = r is None, r_labels is None
    ctx.save_for_backward(q, r, q_labels, r_labels, *saved)


def saved_inputs(ctx):
    """-> (q, r, q_labels, r_labels, saved) with the references filled in."""
    q, r, q_labels, r_labels, *saved = ctx.saved_tensors
    return (*with_references(q, r, q_labels, r_labels), tuple(saved))


# ---------------------------------------------------------------------------------------
# the PyTorch path as opaque ops under torch.compile
#
# The PyTorch implementations use data-dependent shapes (nonzero, a row count read back with
# int()), which torch.compile cannot trace without graph breaks. While compiling, a Function
# calls its family's PyTorch forward and backward through two torch.library custom ops
# instead: the compiled graph holds each as one opaque node whose output shapes come from a
# fake implementation, and the op runs the same eager code at run time. The ops keep nothing
# between forward and backward (backward recomputes what it needs), so their outputs have
# shapes known from the inputs alone. Eager calls do not go through them.

import dataclasses  # noqa: E402
import math  # noqa: E402

import torch  # noqa: E402


def compiling() -> bool:
    """True while torch.compile traces the caller."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())


def config_code(cfg) -> str:
    """A family config as a string argument of a custom op: "name=repr(value)" per field
    (plain string operations, which torch.compile traces as constants)."""
    return ";".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg))


_LITERALS = {"__builtins__": {}, "inf": math.inf, "nan": math.nan}


def config_from(code: str, cls):
    """The config a config_code string stands for (field values are Python literals, with
    inf and nan as repr writes them, e.g. a (0.0, inf) bound)."""
    fields = (item.split("=", 1) for item in code.split(";"))
    return cls(**{name: eval(value, dict(_LITERALS)) for name, value in fields})  # noqa: S307


def opaque_op(name: str, schema: str, impl, fake):
    """Register impl as the custom op "fastcontrast::<name>" with the given schema (explicit,
    so no annotations need evaluating) and its shape-only fake implementation."""
    op = torch.library.custom_op(f"fastcontrast::{name}", impl, mutates_args=(), schema=schema)
    op.register_fake(fake)
    return op

