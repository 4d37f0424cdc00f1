"""The subprocess probe: known allocations, OOM and timeouts as data points."""
from pathlib import Path

import pytest

from fastcontrast.bench.cases import Case
from fastcontrast.bench.probe import Prober, relative_cap_bytes, run_child

STANDINS = str(Path(__file__).with_name("standins.py"))
CASE = Case("contrastive", 16, D=8, classes=2)
# 2 GiB of address space beyond an idle child of this torch build (a CUDA build needs over
# 3 GB just to import): the allocations below fit, a 1 TiB request cannot
CAP = relative_cap_bytes(2 * 2**30)


def impl(name):
    return f"{STANDINS}:{name}"


def spec(name, **kw):
    base = {"case": CASE.to_dict(), "impl": impl(name), "mode": "work", "warmup": 0,
            "repeats": 1, "cap_bytes": CAP, "sys_path": []}
    base.update(kw)
    return base


def test_probe_measures_a_known_allocation_within_10_percent():
    import numpy as np

    # a big parent must not leak into the children's figures (ru_maxrss would: it counts
    # the parent's image from before exec)
    ballast = np.ones(400 * 10**6 // 8)
    prober = Prober(warmup=0, repeats=1, time_limit_s=120, cap_bytes=CAP)
    record = prober.probe(CASE, impl("ALLOC_200MB"))
    del ballast
    assert record["status"] == "ok", record
    assert record["impl"] == "alloc-200mb"
    assert record["baseline_rss_bytes"] > 50 * 10**6          # torch is loaded in both
    assert record["extra_bytes"] == pytest.approx(200 * 10**6, rel=0.10), record


@pytest.mark.parametrize("name", ["NUMPY_OOM", "TORCH_OOM"])
def test_out_of_memory_in_the_child_is_recorded_not_raised(name):
    result = run_child(spec(name), time_limit_s=120)
    assert result["status"] == "oom", result
    assert "allocate" in result["error"].lower()
    assert result["peak_rss_bytes"] < CAP


def test_a_child_killed_by_sigkill_counts_as_out_of_memory():
    result = run_child(spec("KILLED"), time_limit_s=120)
    assert result["status"] == "oom", result
    assert "-9" in result["error"]


def test_a_child_over_the_time_limit_is_killed_and_recorded_as_timeout():
    result = run_child(spec("SLEEPS"), time_limit_s=4)
    assert result["status"] == "timeout", result
    assert 4 <= result["wall_s"] < 60


def test_a_failing_child_is_an_error_record_with_the_message():
    result = run_child(spec("NO_SUCH_IMPL"), time_limit_s=120)
    assert result["status"] == "error"
    assert "NO_SUCH_IMPL" in result["error"]


def test_an_implementation_that_cannot_run_is_skipped_without_a_child(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the interpreter would run the kernels on the CPU
    prober = Prober()
    record = prober.probe(Case("contrastive", 16), "fastcontrast-triton")   # CPU case
    assert record["status"] == "skipped" and "CUDA" in record["error"]
