#!/usr/bin/env bash
# What CI can check of the GPU run without a GPU (needs .venv, made by .ci/run):
#  1. `bash bench/gpu_run.sh --rehearse`: the staged GPU run on the CPU (kernels in the Triton
#     interpreter), which must finish and write at most 8 files;
#  2. kernel tests against triton 3.6.0, the GPU machine's version (its interpreter needs
#     numpy < 2.4), in a second venv, so that a triton version break shows here and not on the
#     GPU machine: every sm_90 build (the version-sensitive compiler path) and, per kernel file,
#     the interpreter tests of edge cases, half precision, opcheck and torch.compile; the full
#     parameter grids already ran on the main triton (all of tests/kernels took 10 min here).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--- gpu checks: rehearsal of bench/gpu_run.sh (at ${SECONDS} s)"
bash bench/gpu_run.sh "$work/out" --rehearse
count=$(ls "$work/out" | wc -l)
[ "$count" -le 8 ] || { echo "the rehearsal wrote $count files, more than 8" >&2; exit 1; }
grep -q "smoke:" "$work/out"/*-summary.md

echo "--- gpu checks: kernel tests on triton 3.6.0 (at ${SECONDS} s)"
python3 -m venv "$work/venv36"
"$work/venv36/bin/pip" install -q torch==2.13.0
"$work/venv36/bin/pip" install -q "triton==3.6.0" "numpy<2.4" "pytest>=7" pytest-timeout pytest-xdist "hypothesis>=6"
"$work/venv36/bin/pip" install -q --no-deps -e .
"$work/venv36/bin/python" -c "import triton; assert triton.__version__ == '3.6.0', triton.__version__"
subset="sm90 or static_report or test_tiles or test_host or opcheck or compile or single_class or half"
subset="$subset or determinis or near_duplicates or parameters_travel or label_edge"
"$work/venv36/bin/python" -m pytest tests/kernels -n auto -q -p no:cacheprovider -o addopts="" --timeout 900 \
    -k "$subset"
echo "--- gpu checks: done (at ${SECONDS} s)"
