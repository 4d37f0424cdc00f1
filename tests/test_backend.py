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


def test_float64_never_reaches_the_kernels(monkeypatch):
    import fastcontrast.backend as backend
    monkeypatch.setattr(backend, "interpreter_enabled", lambda: True)
    cpu = torch.device("cpu")
    assert backend.resolve_backend("auto", torch.device("cuda"), torch.float64) == "torch"
    assert backend.resolve_backend("torch", cpu, torch.float64) == "torch"
    with pytest.raises(TypeError, match="float64"):
        backend.resolve_backend("triton", cpu, torch.float64)
    if backend.triton_import_error() is None:
        assert backend.resolve_backend("triton", cpu, torch.float32) == "triton"


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_explicit_triton_float64_is_refused_before_any_work(loss, monkeypatch):
    import fastcontrast as fc
    from fastcontrast import metrics, triplet
    started = lambda *a, **k: pytest.fail("computation started")  # noqa: E731
    monkeypatch.setattr(metrics, "prepare", started)
    monkeypatch.setattr(triplet, "prepare", started)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])
    fn = fc.contrastive_loss if loss == "contrastive" else fc.triplet_margin_loss
    with pytest.raises(TypeError, match="float64"):
        fn(x, y, backend="triton")


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_compiled_step_before_any_eager_call(loss):
    """The first call of a loss may be inside torch.compile (no importlib in the dispatch)."""
    import subprocess
    import sys
    code = f"""
import torch, fastcontrast as fc
fn = fc.contrastive_loss if {loss!r} == "contrastive" else fc.triplet_margin_loss
x, y = torch.randn(12, 7), torch.arange(12) % 3
step = torch.compile(lambda x: fn(x, y, backend="torch"), backend="eager")
print(float(step(x)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
