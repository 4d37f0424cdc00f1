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


# ------------------------------------------------------------------------------- bad-input catalogue
# Each entry: (call, exception type, the argument name the message must carry).
def _catalogue():
    import fastcontrast as fc
    x = torch.randn(8, 5)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    t = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 0]))
    meta = x.to("meta")
    return {
        "temperature tiny": (lambda: fc.supcon_loss(x, y, temperature=1e-40), ValueError, "temperature"),
        "temperature tiny tensor": (lambda: fc.supcon_loss(x, y, temperature=torch.tensor(1e-40)), ValueError,
                                    "temperature"),
        "temperature complex": (lambda: fc.supcon_loss(x, y, temperature=1 + 2j), TypeError, "temperature"),
        "temperature complex tensor": (lambda: fc.supcon_loss(x, y, temperature=torch.tensor(1 + 2j)), TypeError,
                                       "temperature"),
        "temperature meta": (lambda: fc.supcon_loss(x, y, temperature=torch.tensor(0.1, device="meta")),
                             ValueError, "temperature"),
        "margin huge": (lambda: fc.triplet_margin_loss(x, y, margin=1e39, normalize=None), ValueError, "margin"),
        "miner_margin huge": (lambda: fc.triplet_margin_loss(x, y, miner_margin=-1e39, normalize=None), ValueError, "miner_margin"),
        "neg_margin squared": (lambda: fc.contrastive_loss(x, y, neg_margin=1e20, power=2, normalize=None), ValueError, "neg_margin"),
        "pos_margin huge": (lambda: fc.contrastive_loss(x, y, pos_margin=-1e39, normalize=None), ValueError, "pos_margin"),
        "triplet tuple labels": (lambda: fc.triplet_margin_loss(x, y[:3].float(), indices_tuple=t, normalize=None), TypeError,
                                 "labels"),
        "triplet tuple labels length": (lambda: fc.triplet_margin_loss(x, y[:3], indices_tuple=t, normalize=None), ValueError,
                                        "labels"),
        "meta embeddings": (lambda: fc.supcon_loss(meta, y), ValueError, "embeddings"),
        "meta ref_emb": (lambda: fc.supcon_loss(x, y, ref_emb=meta, ref_labels=y), ValueError, "ref_emb"),
        "meta keys": (lambda: fc.info_nce_loss(x, meta), ValueError, "keys"),
        "meta labels": (lambda: fc.supcon_loss(x, y.to("meta")), ValueError, "labels"),
        "meta indices": (lambda: fc.triplet_margin_loss(x, indices_tuple=tuple(i.to("meta") for i in t), normalize=None),
                         ValueError, "indices_tuple"),
        "sparse embeddings": (lambda: fc.contrastive_loss(x.to_sparse(), y, normalize=None), TypeError, "embeddings"),
        "float8 embeddings": (lambda: fc.triplet_margin_loss(x.to(torch.float8_e4m3fn), y, normalize=None), TypeError, "embeddings"),
        "int embeddings": (lambda: fc.npair_loss(x.long(), y, normalize=None), TypeError, "embeddings"),
    }


@pytest.mark.parametrize("case", sorted(_catalogue()))
def test_bad_input_catalogue(case):
    call, error, name = _catalogue()[case]
    with pytest.raises(error, match=name):
        call()
