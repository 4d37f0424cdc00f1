#!/usr/bin/env bash
# Everything a GPU session owes, in one call that fits one 10-minute command with room for a
# rerun in a 15-minute device budget: staged (smoke ≤ 60 s, benchmarks 240 s, GPU tests 120 s),
# results written stage by stage, at most 8 files back (bench/gpu_run.py says what each is).
#
#   bash bench/gpu_run.sh [OUT_DIR] [--rehearse] [--cache FILE]
#
# OUT_DIR: default $OUT if set, else bench/results. --rehearse: the same stages on the CPU with
# the kernels in the Triton interpreter (CI runs this). --cache: an earlier run's cache.tgz.
#
# Nothing is downloaded. pytorch-metric-learning, absent from the GPU image, is installed from
# .whl/ when present (its cases are recorded as skipped otherwise); fetch it here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform any -d .whl pytorch-metric-learning==2.9.0
# (a pure-Python wheel; `.whl/` is in .gitignore) and name `.whl` in the device call's carry.
set -u
cd "$(dirname "$0")/.."
ARGS=()
for a in "$@"; do
    case "$a" in
        --rehearse|--cache|--cache=*) ARGS+=("$a") ;;
        -*) ARGS+=("$a") ;;
        *) if [ ${#ARGS[@]} -gt 0 ] && [ "${ARGS[-1]}" = "--cache" ]; then ARGS+=("$a"); else OUT_DIR="$a"; fi ;;
    esac
done
OUT_DIR=${OUT_DIR:-${OUT:-bench/results}}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import pytorch_metric_learning" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/fc-site .whl/*.whl \
        && export PYTHONPATH="/tmp/fc-site${PYTHONPATH:+:$PYTHONPATH}"
fi
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
exec "$PY" bench/gpu_run.py --out "$OUT_DIR" "${ARGS[@]}"
