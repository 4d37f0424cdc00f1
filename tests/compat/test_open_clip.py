"""fastcontrast.compat.open_clip at world size 1 against float64 references of open_clip 3.x.

open_clip is not a test dependency (importing it loads model code that needs torchvision
and timm). The references are written from open_clip's loss.py: ClipLoss averages the
cross-entropies of logit_scale·image·textᵀ (+ bias) and its transpose against the diagonal;
SigLipLoss is −Σ log σ((2I − 1)·(logit_scale·image·textᵀ + bias)) / B. Features are used
as given (not normalized).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from fastcontrast.compat.open_clip import ClipLoss, SigLipLoss
from tests.conftest import assert_close, triton_available

F64 = torch.float64
BACKENDS = ["torch"] + (["triton"] if triton_available() else [])


def ref_clip(image, text, scale, bias=None):
    logits = scale * image @ text.T
    if bias is not None:
        logits = logits + bias
    target = torch.arange(image.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def ref_siglip(image, text, scale, bias):
    logits = scale * image @ text.T + bias
    z = 2 * torch.eye(image.shape[0], dtype=logits.dtype) - 1
    return -F.logsigmoid(z * logits).sum() / image.shape[0]


def features(gen, b=9, d=6, dtype=F64):
    x = [F.normalize(torch.randn(b, d, generator=gen, dtype=F64), dim=1) for _ in range(2)]
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=F64)
    bias = torch.tensor(-3.0, dtype=F64)
    return [v.to(dtype).requires_grad_() for v in (*x, log_scale, bias)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["clip", "clip-bias", "siglip"])
def test_matches_reference(name, backend, gen):
    dtype = F64 if backend == "torch" else torch.float32
    image, text, log_scale, bias = leaves = features(gen, dtype=dtype)
    ref = [v.detach().double().requires_grad_() for v in leaves]
    if name == "siglip":
        got = SigLipLoss(backend=backend)(image, text, log_scale.exp(), bias)
        want = ref_siglip(ref[0], ref[1], ref[2].exp(), ref[3])
    else:
        b, rb = (bias, ref[3]) if name == "clip-bias" else (None, None)
        got = ClipLoss(backend=backend)(image, text, log_scale.exp(), b)
        want = ref_clip(ref[0], ref[1], ref[2].exp(), rb)
    assert_close(got, want, dtype)
    wrt = leaves if name != "clip" else leaves[:3]
    got_grads = torch.autograd.grad(got, wrt)
    want_grads = torch.autograd.grad(want, ref if name != "clip" else ref[:3])
    for g, w in zip(got_grads, want_grads):
        assert_close(g, w, dtype, atol=1e-9 if dtype == F64 else 2e-5)
    if name == "clip-bias":  # a shift of every logit: zero gradient, still in the graph
        assert got_grads[3] is not None and float(got_grads[3]) == 0.0


def test_output_dict_and_options(gen):
    image, text, log_scale, bias = features(gen)
    out = ClipLoss()(image, text, log_scale.exp(), output_dict=True)
    assert set(out) == {"contrastive_loss"}
    out = SigLipLoss(dist_impl="gather")(image, text, log_scale.exp(), bias, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    text_repr = repr(ClipLoss(local_loss=True, gather_with_grad=True))
    for setting in ("local_loss=True", "gather_with_grad=True", "cache_labels=False", "rank=0", "world_size=1"):
        assert setting in text_repr
    assert "dist_impl='bidir'" in repr(SigLipLoss())


def test_errors(gen):
    image, text, log_scale, bias = features(gen)
    with pytest.raises(ValueError, match="horovod"):
        ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="dist_impl"):
        SigLipLoss(dist_impl="ring")
    with pytest.raises(ValueError, match="rank"):
        ClipLoss(rank=2, world_size=2)
    with pytest.raises(RuntimeError, match="process group"):
        ClipLoss(rank=0, world_size=2)(image, text, 10.0)
    with pytest.raises(ValueError, match="text_features"):
        SigLipLoss()(image, text[:4], 10.0, -10.0)
    with pytest.raises(ValueError, match="logit_scale"):
        ClipLoss()(image, text, -1.0)
