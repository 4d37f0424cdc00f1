import pytest
import torch

from fastcontrast import _validation as v


def test_embeddings_checks():
    with pytest.raises(TypeError, match="embeddings"):
        v.check_embeddings([[1.0]])
    with pytest.raises(ValueError, match="2-D"):
        v.check_embeddings(torch.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        v.check_embeddings(torch.zeros(0, 4))
    with pytest.raises(TypeError, match="floating"):
        v.check_embeddings(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or Inf"):
        v.check_embeddings(torch.tensor([[1.0, float("nan")]]))


def test_label_checks():
    x = torch.zeros(3, 2)
    with pytest.raises(TypeError, match="labels must be an integer"):
        v.check_query_ref(x, torch.zeros(3))
    with pytest.raises(ValueError, match="labels has 2 entries"):
        v.check_query_ref(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="together"):
        v.check_query_ref(x, torch.zeros(3, dtype=torch.long), ref_emb=x)
    with pytest.raises(ValueError, match="ref_emb has dimension"):
        v.check_query_ref(x, torch.zeros(3, dtype=torch.long), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_numbers():
    with pytest.raises(ValueError, match="temperature"):
        v.check_positive(0.0, "temperature")
    with pytest.raises(ValueError, match="temperature"):
        v.check_positive(torch.tensor(-1.0), "temperature", allow_tensor=True)
    v.check_positive(torch.tensor(0.5), "temperature", allow_tensor=True)
    with pytest.raises(ValueError, match="margin"):
        v.check_real(-1.0, "margin", nonnegative=True)
    with pytest.raises(ValueError, match="reduction"):
        v.check_reduction("avg")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_every_non_finite_entry_is_found(dtype, bad):
    from fastcontrast._validation import check_embeddings
    for row, col in [(0, 0), (500, 17), (999, 32)]:
        x = torch.randn(1000, 33).to(dtype)
        x[row, col] = bad
        with pytest.raises(ValueError, match="emb contains NaN or Inf"):
            check_embeddings(x, "emb")
    check_embeddings(torch.full((3, 2), torch.finfo(dtype).max, dtype=dtype), "emb")  # finite extremes pass
