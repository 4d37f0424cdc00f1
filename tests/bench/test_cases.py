"""Cases, suites and the in-process timer (no subprocess, no real loss needed)."""
from pathlib import Path

import pytest
import torch

from fastcontrast.bench.cases import (SUITES, Case, make_inputs, pytest_entries, suite,
                                      tiny)
from fastcontrast.bench.impls import IMPLS, Impl, SUBJECT, get_impl
from fastcontrast.bench.measure import time_steps

STANDINS = str(Path(__file__).with_name("standins.py"))


def test_every_suite_builds_and_names_known_implementations():
    for name in SUITES:
        entries = suite(name)
        assert entries
        for e in entries:
            for impl in e.impls or ():
                assert impl in IMPLS


def test_gpu_suite_holds_the_acceptance_cases_of_the_kernel_issues():
    cases = {(e.case.loss, e.case.B, e.case.dtype) for e in suite("gpu")}
    for needed in [("triplet-semihard", 2048, "float32"), ("triplet-semihard-tfa", 2048, "float32"),
                   ("ntxent-simclr", 16384, "bfloat16"), ("supcon", 16384, "bfloat16"),
                   ("triplet-batch-hard", 16384, "float32"), ("contrastive", 16384, "float32"),
                   ("triplet-semihard", 65536, "float32"), ("triplet-batch-all", 65536, "float32"),
                   ("info-nce", 262144, "bfloat16")]:
        assert needed in cases
    assert all(e.case.device == "cuda" for e in suite("gpu"))


def test_gpu_suite_ends_with_the_torch_sweep_at_65536():
    """Issue 14's design comparison (the merged-sort sweep in torch ops against the Triton
    searches, both at B = 65536) is the last entry, so a run cut short loses nothing else."""
    entries = suite("gpu")
    last = entries[-1]
    assert (last.case.loss, last.case.B, last.impls) == ("triplet-semihard", 65536, ("fastcontrast-torch",))
    assert any(e.case.loss == "triplet-semihard" and e.case.B == 65536 and "fastcontrast-triton" in e.impls
               for e in entries[:-1])


def test_cpu_headline_suite_is_the_foundation_issue_table():
    got = [(e.case.loss, e.case.B, e.impls) for e in suite("cpu-headline")]
    assert got == [("triplet-semihard", 1024, ("fastcontrast-torch", "pml")),
                   ("triplet-semihard", 2048, ("fastcontrast-torch", "pml")),
                   ("triplet-semihard", 8192, ("fastcontrast-torch", "pml")),
                   ("ntxent-simclr", 1024, ("fastcontrast-torch", "pml"))]


def test_pytest_entries_are_tiny_unless_full():
    for family in ("triplet", "pair_margin", "softmax"):
        tiny_entries = pytest_entries(family, full=False)
        assert tiny_entries and all(c.B <= 32 and c.D <= 16 for c, _ in tiny_entries)
        assert len(pytest_entries(family, full=True)) >= len(tiny_entries)


def test_inputs_are_deterministic_and_labelled_as_the_loss_says():
    a, b = make_inputs(Case("ntxent-simclr", 8, D=3)), make_inputs(Case("ntxent-simclr", 8, D=3))
    assert torch.equal(a["emb"], b["emb"]) and a["emb"].requires_grad
    assert a["labels"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    x = make_inputs(Case("info-nce", 6, N=9, D=4, dtype="float64"))
    assert x["keys"].shape == (9, 4) and x["keys"].dtype == torch.float64
    assert make_inputs(Case("supcon", 50, classes=3))["labels"].max() <= 2


@pytest.mark.parametrize("bad", [dict(loss="nope"), dict(dtype="int8"), dict(device="tpu"),
                                 dict(B=1), dict(loss="ntxent-simclr", B=7)])
def test_bad_cases_are_refused(bad):
    kw = dict(loss="supcon", B=8)
    kw.update(bad)
    with pytest.raises(ValueError):
        Case(**kw)


def test_case_roundtrips_through_a_dict_and_tiny_keeps_the_semantics():
    c = Case("info-nce", 4096, N=8192, dtype="bfloat16", device="cuda")
    assert Case.from_dict(c.to_dict()) == c
    t = tiny(c)
    assert (t.loss, t.dtype, t.device) == (c.loss, c.dtype, c.device) and t.B < 100
    assert c.flops == 8 * 4096 * 8192 * 128


def test_timer_runs_warmup_untimed_then_the_repeats_and_quotes_the_median():
    calls = []

    def step(x):
        calls.append(1)
        return (x["emb"] ** 2).sum()

    inputs = make_inputs(Case("supcon", 8, D=4))
    out = time_steps(step, inputs, "cpu", warmup=2, repeats=5)
    assert len(calls) == 7 and len(out["times_s"]) == 5
    assert out["time_s"] == sorted(out["times_s"])[2]
    assert out["value"] == pytest.approx(float((inputs["emb"].detach() ** 2).sum()))
    assert inputs["emb"].grad is not None


def test_timer_stops_repeating_after_max_seconds_but_times_one_step():
    import time

    out = time_steps(lambda x: time.sleep(0.05), make_inputs(Case("supcon", 8, D=4)), "cpu",
                     warmup=0, repeats=50, max_seconds=0.01)
    assert len(out["times_s"]) == 1 and out["time_s"] >= 0.05


def test_get_impl_loads_an_impl_from_a_module_path_and_refuses_other_things():
    assert get_impl("pml") is IMPLS["pml"]
    assert isinstance(get_impl(f"{STANDINS}:FAST"), Impl)
    with pytest.raises(ValueError, match="does not name"):
        get_impl("fastcontrast.bench.cases:LOSSES")
    with pytest.raises(ValueError, match="unknown implementation"):
        get_impl("numpy")
    assert get_impl(f"{STANDINS}:FAST").role == SUBJECT
