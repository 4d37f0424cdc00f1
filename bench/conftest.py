"""pytest-benchmark suites: one benchmark group per case, one test per implementation.

    pytest bench                                   # CI: tiny sizes, --benchmark-disable (smoke)
    FASTCONTRAST_BENCH_SIZE=full pytest bench --benchmark-enable \
        --benchmark-json=bench/results/pytest-<device>.json
    FASTCONTRAST_BENCH_ROUNDS=10 ...               # timed rounds per benchmark (default 5)

pytest-benchmark's own table then compares the implementations of each case. GPU cases
are skipped without CUDA; CUDA steps end with torch.cuda.synchronize() so the wall time
is the GPU time. Peak memory of the in-process run goes to extra_info (CUDA); the fresh
process per configuration figures come from `fastcontrast bench`.
"""
import os

import pytest
import torch

from fastcontrast.bench.cases import full_size, make_inputs
from fastcontrast.bench.impls import get_impl
from fastcontrast.bench.measure import run_step

FULL = full_size()
ROUNDS = int(os.environ.get("FASTCONTRAST_BENCH_ROUNDS", "5"))


@pytest.fixture
def bench_case(benchmark):
    """bench_case(case, impl_name): time forward+backward of `impl_name` on `case`."""
    def run(case, impl_name):
        if case.device == "cuda" and not torch.cuda.is_available():
            pytest.skip("needs CUDA")
        impl = get_impl(impl_name)
        why_not = impl.why_not(case)
        if why_not:
            pytest.skip(why_not)
        benchmark.group = case.name
        benchmark.extra_info.update(case=case.to_dict(), impl=impl.name)
        cuda = case.device == "cuda"
        step = impl.build(case)
        inputs = make_inputs(case)

        def once():
            loss = run_step(step, inputs)
            if cuda:
                torch.cuda.synchronize()
            return loss

        loss = once()                                  # warm-up: compilation, autotuning
        if loss is not None:
            value = float(loss.detach().float().cpu())
            assert value == value and abs(value) != float("inf"), f"{impl.name}: loss {value}"
            benchmark.extra_info["value"] = value
        if cuda:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        benchmark.pedantic(once, rounds=ROUNDS if FULL else 1, iterations=1, warmup_rounds=0)
        if cuda:
            benchmark.extra_info["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
    return run
