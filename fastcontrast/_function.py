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
