"""pytest-benchmark: the pair-margin family, every implementation side by side (see conftest.py)."""
import pytest

from fastcontrast.bench.cases import case_id, full_size, pytest_entries


@pytest.mark.parametrize("case, impl", pytest_entries("pair_margin", full_size()), ids=case_id)
def test_pair_margin(bench_case, case, impl):
    bench_case(case, impl)
