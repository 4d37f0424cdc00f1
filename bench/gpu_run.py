"""The GPU run, in stages ordered by value, each with its own time budget and each writing its
results before the next starts (called by bench/gpu_run.sh; see there for the command).

    stage 0  smoke: every kernel variant × float32/float16/bfloat16 once at a small shape, each
             in a fresh process (fastcontrast.bench.smoke), Triton against the PyTorch path; a
             compile error or an illegal memory access is reported by name, and only the
             failing families are left out of the later stages
    stage 1  the acceptance benchmarks (`fastcontrast bench --suite gpu`, headline rows first;
             the JSON is rewritten after every configuration, so a cut keeps what was measured)
    stage 2  the GPU test modules in parallel (pytest-xdist), a per-test timeout, stopped with
             SIGINT at the budget so that pytest still writes its report

What comes back is at most 8 files in OUT_DIR, named <prefix>-*: summary.md (device,
versions, stage times, pass counts, the headline table), smoke.json, bench.json, bench.md,
tests.xml, logs.tgz (every log, the CSV and the plots) and cache.tgz (the Triton and Inductor
caches: give it to the next run with --cache FILE, or leave it at bench/gpu-cache.tgz, and
it skips the cold compiles). --rehearse runs the same stages on the CPU (kernels in the
Triton interpreter, smoke sizes, short budgets), as CI does, so that this script cannot rot
between GPU runs.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILES = 8
GPU_TEST_FILES = ["tests/kernels/test_softmax_gpu.py", "tests/kernels/test_pair_margin_gpu.py",
                  "tests/kernels/test_triplet_gpu.py", "tests/test_syncs.py"]


class Plan:
    """Budgets (seconds) and sizes of one run."""

    def __init__(self, rehearse: bool):
        from fastcontrast.bench.smoke import DTYPES, VARIANTS
        self.rehearse = rehearse
        if rehearse:
            self.smoke = [(v, "float32") for v in VARIANTS] + [("supcon", "bfloat16"), ("contrastive", "float16")]
            self.smoke_rows, self.smoke_workers, self.smoke_budget, self.smoke_timeout = 40, 2, 150, 90
            self.suite, self.bench_budget = "gpu-rehearse", 150
            self.bench_args = ["--warmup", "1", "--repeats", "2", "--max-seconds", "5", "--memory-cap", "none",
                               "--no-plots"]
            self.test_budget, self.test_workers, self.test_timeout = 120, 0, 120
        else:
            self.smoke = [(v, d) for v in VARIANTS for d in DTYPES]
            self.smoke_rows, self.smoke_workers, self.smoke_budget, self.smoke_timeout = 200, 8, 60, 45
            self.suite, self.bench_budget = "gpu", 240
            self.bench_args = ["--warmup", "2", "--repeats", "10", "--max-seconds", "8"]
            self.test_budget, self.test_workers, self.test_timeout = 120, 8, 90


def run_bounded(cmd, budget_s, log_path, env, stop=signal.SIGINT):
    """Run cmd with its output in log_path; at the budget send `stop` (pytest and the bench CLI
    finish their reports on SIGINT), then SIGKILL 20 s later. -> (exit code, seconds, cut?)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        cut = False
        try:
            code = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            cut = True
            os.killpg(proc.pid, stop)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
    return code, time.perf_counter() - started, cut


def smoke_stage(plan: Plan, device: str, env, logs: Path) -> list[dict]:
    deadline = time.perf_counter() + plan.smoke_budget

    def one(variant, dtype):
        left = deadline - time.perf_counter()
        if left <= 1:
            return {"variant": variant, "dtype": dtype, "status": "skipped", "error": "stage budget spent"}
        cmd = [sys.executable, "-m", "fastcontrast.bench.smoke", variant, dtype, device, str(plan.smoke_rows)]
        log = logs / f"smoke-{variant}-{dtype}.log"
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                                 timeout=min(plan.smoke_timeout, left))
        except subprocess.TimeoutExpired as exc:
            log.write_text(str(exc.stdout or "") + str(exc.stderr or ""))
            return {"variant": variant, "dtype": dtype, "status": "error", "error": "timeout (compile or hang)"}
        log.write_text(out.stdout + out.stderr)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:  # a crash of the process itself (e.g. a CUDA fault)
            tail = (out.stderr or out.stdout)[-800:]
            return {"variant": variant, "dtype": dtype, "status": "error",
                    "error": f"process exit {out.returncode}: {tail}"}
        return json.loads(lines[-1])

    from fastcontrast.bench.smoke import VARIANTS
    with concurrent.futures.ThreadPoolExecutor(plan.smoke_workers) as pool:
        results = list(pool.map(lambda vd: one(*vd), plan.smoke))
    for r in results:
        r.setdefault("family", VARIANTS[r["variant"]][0])
        r.pop("traceback", None)
    return results


def junit_counts(path: Path) -> dict:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not path.exists():
        return counts
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "triton", "numpy", "pytorch_metric_learning", "pytest", "xdist"):
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            out[name] = "not installed"
    return out


def device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'cpu'})"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower().replace("nvidia", "")) or "gpu"


def headline(bench_md: Path, rows: int = 40) -> str:
    if not bench_md.exists():
        return "(no benchmark table: stage 1 wrote nothing)"
    lines = bench_md.read_text().splitlines()
    return "\n".join(lines[:rows]) + ("\n…" if len(lines) > rows else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "bench/results")
    p.add_argument("--rehearse", action="store_true", help="the same stages on the CPU (Triton interpreter)")
    p.add_argument("--cache", default=None, help="a cache.tgz of an earlier run (default: bench/gpu-cache.tgz "
                   "or .whl/gpu-cache.tgz when present)")
    args = p.parse_args(argv)

    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if args.rehearse:
        env["TRITON_INTERPRET"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="fc-gpu-run-"))
    logs, cache = work / "logs", work / "cache"
    logs.mkdir()
    env["TRITON_CACHE_DIR"], env["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "triton"), str(cache / "inductor")
    cache_in = args.cache or next((c for c in ("bench/gpu-cache.tgz", ".whl/gpu-cache.tgz")
                                   if (ROOT / c).exists()), None)
    if cache_in:
        with tarfile.open(ROOT / cache_in) as tar:
            tar.extractall(work, filter="data")

    plan = Plan(args.rehearse)
    device = "cpu" if args.rehearse else "cuda"
    name = device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    prefix = f"{'rehearsal-cpu' if args.rehearse else slug(name)}-{date}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stage_times, notes = {}, []
    print(f"device: {name}; versions: {versions()}; out: {out}/{prefix}-*", flush=True)

    # stage 0 -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    smoke = smoke_stage(plan, device, env, logs)
    stage_times["0 smoke"] = time.perf_counter() - t0
    (out / f"{prefix}-smoke.json").write_text(json.dumps(smoke, indent=1))
    broken = sorted({r["family"] for r in smoke if r["status"] == "error"})
    for r in smoke:
        print(f"  smoke {r['variant']:22s} {r['dtype']:9s} {r['status']:8s} "
              f"{r.get('value_err', float('nan')):.1e} {r.get('grad_err', float('nan')):.1e} {r.get('error', '')[:100]}",
              flush=True)
    if broken:
        notes.append(f"families left out of the benchmarks after a smoke error: {', '.join(broken)}")

    # stage 1 -------------------------------------------------------------------------------
    bench_dir = work / "bench"
    cmd = [sys.executable, "-m", "fastcontrast.bench", "--suite", plan.suite, "--out", str(bench_dir),
           "--name", f"{prefix}-bench", "--quiet", *plan.bench_args]
    if broken:
        cmd += ["--skip-families", ",".join(broken)]
    code, seconds, cut = run_bounded(cmd, plan.bench_budget, logs / "bench.log", env)
    stage_times["1 benchmarks"] = seconds
    notes.append(f"benchmarks: exit {code}{', cut at the stage budget' if cut else ''}")
    for ext in ("json", "md"):
        src = bench_dir / f"{prefix}-bench.{ext}"
        if src.exists():
            shutil.copy(src, out / src.name)

    # stage 2 -------------------------------------------------------------------------------
    junit = out / f"{prefix}-tests.xml"
    cmd = [sys.executable, "-m", "pytest", *GPU_TEST_FILES, "-q", "-rfEs", "-p", "no:cacheprovider",
           "-o", "addopts=", "--timeout", str(plan.test_timeout), f"--junitxml={junit}"]
    if plan.test_workers:
        cmd += ["-n", str(plan.test_workers)]
    code, seconds, cut = run_bounded(cmd, plan.test_budget, logs / "gpu-tests.log", env)
    stage_times["2 GPU tests"] = seconds
    tests = junit_counts(junit)
    notes.append(f"GPU tests: exit {code}{', stopped at the stage budget' if cut else ''}")

    # bundles and the summary ------------------------------------------------------------------
    with tarfile.open(out / f"{prefix}-logs.tgz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
        if bench_dir.exists():
            tar.add(bench_dir, arcname="bench")
    if cache.exists():
        with tarfile.open(out / f"{prefix}-cache.tgz", "w:gz") as tar:
            tar.add(cache, arcname="cache")
    ok = sum(r["status"] == "ok" for r in smoke)
    summary = [f"# {'CPU rehearsal' if args.rehearse else 'GPU run'} {prefix}", "",
               f"- device: **{name}**", f"- versions: {json.dumps(versions())}",
               f"- command: `bash bench/gpu_run.sh{' --rehearse' if args.rehearse else ''}`",
               f"- stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stage_times.items()),
               f"- smoke: {ok}/{len(smoke)} ok" + (f"; not ok: " + ", ".join(
                   f"{r['variant']}/{r['dtype']} ({r['status']})" for r in smoke if r["status"] != "ok")
                   if ok < len(smoke) else ""),
               f"- GPU tests: {tests.get('passed', 0)} passed, {tests['failures']} failed, {tests['errors']} errors, "
               f"{tests['skipped']} skipped",
               *[f"- {n}" for n in notes], "",
               f"## Benchmarks ({name})", "", headline(out / f"{prefix}-bench.md"), ""]
    (out / f"{prefix}-summary.md").write_text("\n".join(summary))
    files = sorted(f.name for f in out.iterdir() if f.name.startswith(prefix))
    print("\n".join(summary[:10]))
    print(f"{len(files)} files: {' '.join(files)}")
    shutil.rmtree(work, ignore_errors=True)
    if len(files) > MAX_FILES:
        print(f"error: {len(files)} files, more than the {MAX_FILES} that come back", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
