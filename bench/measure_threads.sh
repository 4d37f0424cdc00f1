#!/usr/bin/env bash
# 1 vs 2 torch threads for `fastcontrast experiment` and `fastcontrast bench`, alternating
# so that both see the same machine load; OMP_NUM_THREADS is unset so that --threads alone
# decides. Writes OUT/log.txt (one line per run: wall time, 1/5/15-min load average before
# and after) and each run's own results. bench/results/threads-cpu-20261201.md came from it.
#
#   bash bench/measure_threads.sh [OUT]        # about 25 minutes on a busy 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-threads-measurement}
mkdir -p "$OUT"
log=$OUT/log.txt
fc() { env -u OMP_NUM_THREADS .venv/bin/fastcontrast "$@"; }
timed() {   # timed LABEL THREADS REP COMMAND...
    local label=$1 t=$2 rep=$3; shift 3
    local s e la
    s=$(date +%s.%N); la=$(cut -d' ' -f1-3 /proc/loadavg)
    "$@" >"$OUT/$label-t$t-r$rep.stdout" 2>"$OUT/$label-t$t-r$rep.stderr"
    e=$(date +%s.%N)
    echo "$label threads=$t rep=$rep wall=$(echo "$e - $s" | bc) load_before=$la load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$log"
}
for rep in 1 2 3; do for t in 1 2; do   # the experiment's sweep, 1 epoch per stage, 1 seed
    timed experiment $t $rep fc experiment --seeds 1 --epochs 1 --classifier-epochs 1 --no-plots \
        --quiet --threads $t --out "$OUT/exp-t$t-r$rep"
done; done
for rep in 1 2 3; do for t in 1 2; do   # bench's default sweep, the CPU implementations
    timed bench $t $rep fc bench --impls fastcontrast-torch,dense-eager,pml --no-plots --quiet \
        --threads $t --out "$OUT/bench" --name "bench-t$t-r$rep"
done; done
for rep in 1 2; do for t in 1 2; do     # the default experiment itself (no plots)
    timed full-experiment $t $rep fc experiment --no-plots --quiet --threads $t --out "$OUT/full-t$t-r$rep"
done; done
