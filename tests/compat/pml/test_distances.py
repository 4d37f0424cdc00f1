"""fastcontrast.compat.pml.distances against pytorch-metric-learning's distances."""
import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import distances as pml_distances  # noqa: E402

from fastcontrast.compat.pml import distances  # noqa: E402
from fastcontrast.metrics import Metric  # noqa: E402

PAIRS = [
    (distances.LpDistance(), pml_distances.LpDistance(), Metric("euclidean", True, False)),
    (distances.LpDistance(normalize_embeddings=False), pml_distances.LpDistance(normalize_embeddings=False),
     Metric("euclidean", False, False)),
    (distances.LpDistance(power=2), pml_distances.LpDistance(power=2), Metric("sqeuclidean", True, False)),
    (distances.CosineSimilarity(), pml_distances.CosineSimilarity(), Metric("dot", True, True)),
    (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity(), Metric("dot", True, True)),
    (distances.DotProductSimilarity(normalize_embeddings=False),
     pml_distances.DotProductSimilarity(normalize_embeddings=False), Metric("dot", False, True)),
]


@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_matrix_and_metric(k, gen):
    ours, theirs, metric = PAIRS[k]
    q = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    r = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(q, r), theirs(q, r))
    torch.testing.assert_close(ours(q), theirs(q))
    assert ours.metric() == metric
    assert distances.metric_from_distance(theirs) == metric
    assert ours.is_inverted == theirs.is_inverted


def test_unsupported_settings():
    with pytest.raises(ValueError, match="p=1"):
        distances.LpDistance(p=1).metric()
    with pytest.raises(ValueError, match="power"):
        distances.LpDistance(power=3).metric()
    with pytest.raises(ValueError, match="power"):
        distances.metric_from_distance(pml_distances.CosineSimilarity(power=2))
    with pytest.raises(TypeError, match="distance"):
        distances.metric_from_distance(pml_distances.SNRDistance())
    with pytest.raises(ValueError, match="is_inverted"):
        distances.LpDistance(is_inverted=True)
