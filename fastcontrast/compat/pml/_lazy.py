"""LazyTuple: the tuple protocol of the compat miners' lazy selections.

A miner's output must be a tuple of index tensors wherever pytorch-metric-learning code
expects one (isinstance, unpacking, indexing, +, ==, pickling, copying), while fastcontrast's
fused losses read its mining rule without ever listing the tuples. A subclass defines
materialize() (the index tensors, computed on first use and kept) and __len__; everything
else here reads the materialized tuple.
"""
from __future__ import annotations


class LazyTuple(tuple):
    def __new__(cls, *args, **kwargs):
        return tuple.__new__(cls)

    def materialize(self):
        raise NotImplementedError

    def __iter__(self):
        return iter(self.materialize())

    def __getitem__(self, i):
        return self.materialize()[i]

    def __contains__(self, item):
        return any(item is t for t in self.materialize())

    def __eq__(self, other):
        if isinstance(other, LazyTuple):
            other = tuple(other.materialize())
        return tuple(self.materialize()) == other if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = object.__hash__

    def __add__(self, other):
        return tuple(self.materialize()) + tuple(other)

    def __radd__(self, other):
        return tuple(other) + tuple(self.materialize())

    def __mul__(self, n):
        return tuple(self.materialize()) * n

    __rmul__ = __mul__

    def __reversed__(self):
        return reversed(self.materialize())

    def index(self, *args):
        return tuple(self.materialize()).index(*args)

    def count(self, value):
        return tuple(self.materialize()).count(value)

    def __reduce_ex__(self, protocol):
        return tuple, (tuple(self.materialize()),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return tuple(t.clone() for t in self.materialize())
