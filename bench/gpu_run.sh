#!/usr/bin/env bash
# Everything a GPU session owes, in one call (fits the 10-minute limit of one command):
#   1. the GPU tests of the kernels:   pytest tests/kernels -k gpu
#   2. every GPU benchmark case of the kernel issues (fastcontrast bench --suite gpu):
#      semi-hard at B=2048 (PML and TF Addons semantics) vs PML and dense eager; the softmax
#      family at B=16384 bf16 vs dense eager, torch.compile and a matmul; batch-hard and
#      pair-margin at B=16384; semi-hard / batch-all at B=65536; InfoNCE / NT-Xent at
#      B=N=262144; the other modes at B=4096.
# Results: <out>/<gpu>-<date>-{gpu-tests.txt,gpu-tests.xml,bench.json,bench.csv,bench.md,*.png}
#
#   bash bench/gpu_run.sh [OUT_DIR]        (default: $OUT if set, else bench/results)
#
# Works without pytorch-metric-learning (its cases are then recorded as skipped) and
# without pytest-benchmark / tqdm / matplotlib. Time budgets (seconds) can be changed with
# GPU_TESTS_TIMEOUT and GPU_BENCH_TIMEOUT.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-bench/results}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

# `import fastcontrast.kernels` needs the package installed (kernels/ is mapped to it)
if ! "$PY" -c "import fastcontrast.kernels" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || true
fi
if ! "$PY" -c "import fastcontrast.kernels" 2>/dev/null; then
    # no install possible (offline, old setuptools): map the package by hand in this copy
    [ -e fastcontrast/kernels ] || ln -s ../kernels fastcontrast/kernels
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import fastcontrast.kernels" || { echo "fastcontrast does not import" >&2; exit 1; }
fi
"$PY" - <<'PYEOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "NONE")
for m in ("triton", "pytorch_metric_learning", "pytest_benchmark", "matplotlib", "tqdm"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except ImportError:
        print(m, "not installed")
PYEOF

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 \
      | tr 'A-Z' 'a-z' | sed 's/nvidia//g; s/[^a-z0-9]//g')
PREFIX="${GPU:-gpu}-$(date -u +%Y%m%d-%H%M)"

# 1. GPU tests (addopts cleared: --benchmark-disable needs pytest-benchmark)
timeout -k 10 "${GPU_TESTS_TIMEOUT:-170}" "$PY" -m pytest tests/kernels -k gpu -q -p no:cacheprovider \
    -o addopts="" -rfEs --junitxml="$OUT_DIR/$PREFIX-gpu-tests.xml" \
    > "$OUT_DIR/$PREFIX-gpu-tests.txt" 2>&1
echo "GPU tests: exit $? ($OUT_DIR/$PREFIX-gpu-tests.txt)"
tail -n 15 "$OUT_DIR/$PREFIX-gpu-tests.txt"

# 2. GPU benchmark suite, in-process (CUDA peak memory from the allocator); the JSON is
#    rewritten after every configuration, so a run cut short keeps what it measured
timeout -k 20 "${GPU_BENCH_TIMEOUT:-350}" "$PY" -m fastcontrast.bench --suite gpu --out "$OUT_DIR" \
    --name "$PREFIX-bench" --warmup 2 --repeats 10 --max-seconds 8
echo "bench: exit $?"
ls -la "$OUT_DIR" | grep "$PREFIX" || true
