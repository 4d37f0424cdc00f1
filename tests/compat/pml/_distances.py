"""The distance settings the PML parity tests run through, and the matching object pairs."""
from pytorch_metric_learning import distances as pml_distances

from fastcontrast.compat.pml import distances

# (class name, constructor keywords): every distance PML offers that fastcontrast supports
DISTANCES = [
    (None, {}),
    ("CosineSimilarity", {}),
    ("DotProductSimilarity", {}),
    ("DotProductSimilarity", {"normalize_embeddings": False}),
    ("LpDistance", {}),
    ("LpDistance", {"power": 2}),
    ("LpDistance", {"normalize_embeddings": False}),
    ("LpDistance", {"normalize_embeddings": False, "power": 2}),
]


def distance_pair(dist, kw):
    """-> ({"distance": PML's object}, {"distance": fastcontrast's}), or two empty dicts for None."""
    if dist is None:
        return {}, {}
    return {"distance": getattr(pml_distances, dist)(**kw)}, {"distance": getattr(distances, dist)(**kw)}
