"""pytest-benchmark: the softmax family, every implementation side by side (see conftest.py)."""
import pytest

from fastcontrast.bench.cases import case_id, full_size, pytest_entries


@pytest.mark.parametrize("case, impl", pytest_entries("softmax", full_size()), ids=case_id)
def test_softmax(bench_case, case, impl):
    bench_case(case, impl)
