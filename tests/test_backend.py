import pytest
import torch

from fastcontrast import backend


def test_torch_is_always_available():
    assert backend.resolve_backend("torch", torch.device("cpu")) == "torch"


def test_auto_picks_torch_on_cpu():
    assert backend.resolve_backend("auto", torch.device("cpu")) == "torch"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        backend.resolve_backend("cuda", torch.device("cpu"))


def test_env_var_sets_default(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    assert backend.default_backend() == "torch"
    monkeypatch.setenv(backend.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=backend.ENV_VAR):
        backend.default_backend()


def test_explicit_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        backend.resolve_backend("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if backend.triton_import_error() is None:
        assert backend.resolve_backend("triton", torch.device("cpu")) == "triton"
