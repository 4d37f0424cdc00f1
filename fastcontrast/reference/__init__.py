"""Dense, obviously-correct references: the readable statement of every formula.

They may materialize B×N (and B×N×N for tiny batches) matrices and are used only by tests
and benchmarks, never on the fast path.
"""
