"""Each configuration in a fresh subprocess: peak memory, time, and OOM as a data point.

`probe(case, impl)` starts `python _child.py` with a time limit and (on CPU) an
address-space cap (RLIMIT_AS), and returns a record:

    status        "ok" | "oom" | "timeout" | "error" | "skipped"
    peak_rss_bytes  the child's peak resident set: VmHWM reported by the child, or, when it was
                    killed, the last VmHWM sampled from /proc/<pid>/status while waiting
                    (ru_maxrss is recorded too but not used: it includes the parent's image
                    from before exec)
    extra_bytes     CPU: peak_rss_bytes minus the peak RSS of an idle baseline child (same
                    imports, the implementation built, tiny inputs, no step run): it
                    includes the inputs and their gradients (2·B·D elements);
                    CUDA: the child's torch.cuda.max_memory_allocated beyond the inputs
    time_s, times_s, value, warmup_s  (from the child, when it finished)

Out of memory is recognised as MemoryError / "can't allocate memory" / CUDA OOM inside
the child, std::bad_alloc, or the child being killed by SIGKILL (the kernel's OOM killer)
without us having killed it. A child still running at the time limit is killed (with its
process group) and recorded as "timeout".
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cases import Case
from .impls import get_impl

CHILD = str(Path(__file__).with_name("_child.py"))
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
               "not enough memory", "bad_alloc", "unable to allocate", "memoryerror")


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_cap_bytes(margin_bytes: int = 3 * 2**30) -> int | None:
    """Available memory now minus a margin (3 GiB): a child never takes the machine down."""
    avail = available_memory_bytes()
    return None if avail is None else max(avail - margin_bytes, 2**30)


_IDLE_CHILD = ("import torch, fastcontrast\n"
               "for line in open('/proc/self/status'):\n"
               "    if line.startswith('VmPeak:'): print(int(line.split()[1]) * 1024)\n")
_idle_address_space = None


def idle_address_space_bytes() -> int:
    """The peak address space of an idle child (python with torch and fastcontrast imported):
    what a cap must leave before any work. A CUDA build of torch takes over 3 GB just to import,
    a CPU build a fraction of that, so fixed caps do not carry from one build to the other."""
    global _idle_address_space
    if _idle_address_space is None:
        out = subprocess.run([sys.executable, "-c", _IDLE_CHILD], capture_output=True, text=True,
                             check=True, timeout=300)
        _idle_address_space = int(out.stdout.split()[-1])
    return _idle_address_space


def relative_cap_bytes(extra_bytes: int) -> int:
    """An address-space cap of `extra_bytes` beyond an idle child of this build."""
    return idle_address_space_bytes() + int(extra_bytes)


def run_child(spec: dict, time_limit_s: float, cwd: str | None = None) -> dict:
    """Run one child on `spec`; return its result merged with status / peak / wall time."""
    with tempfile.TemporaryDirectory(prefix="fcbench-") as tmp:
        spec = dict(spec, result_path=os.path.join(tmp, "result.json"))
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        log_path = os.path.join(tmp, "log.txt")
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, CHILD, spec_path], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
            killed = False
            delay = 0.01
            sampled_hwm = 0
            while True:
                sampled_hwm = max(sampled_hwm, _vmhwm_of(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - started > time_limit_s:
                    _kill_group(proc.pid)
                    killed = True
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(delay)
                delay = min(delay * 1.5, 0.2)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - started
        with open(log_path, "rb") as f:
            log_tail = f.read()[-4000:].decode("utf-8", "replace")
        result = {}
        if os.path.exists(spec["result_path"]):
            with open(spec["result_path"]) as f:
                result = json.load(f)
    # VmHWM, not ru_maxrss: a child's ru_maxrss includes the parent's image from before exec
    result["peak_rss_bytes"] = result.get("vmhwm_bytes") or sampled_hwm or None
    result["peak_rss_source"] = "child VmHWM" if result.get("vmhwm_bytes") else "sampled VmHWM"
    result["ru_maxrss_bytes"] = usage.ru_maxrss * 1024
    result["wall_s"] = wall
    if killed:
        result["status"] = "timeout"
        result["error"] = f"killed after the time limit of {time_limit_s:g} s"
    elif "status" not in result:
        # died without writing a result: a signal, or a crash in C++
        code = proc.returncode
        text = log_tail.lower()
        if code == -signal.SIGKILL or any(m in text for m in OOM_MARKERS):
            result["status"] = "oom"
            result["error"] = f"child died (exit {code}) out of memory"
        else:
            result["status"] = "error"
            result["error"] = f"child died (exit {code}): {log_tail[-500:]}"
    if result.get("status") == "error" and "log" not in result:
        result["log"] = log_tail[-1500:]
    return result


def _vmhwm_of(pid: int) -> int:
    """VmHWM of a running process in bytes (0 once it has exited or without /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)   # the child leads its own session and group
    except ProcessLookupError:
        pass


def run_in_process(case: Case, impl: str, warmup: int, repeats: int, max_seconds) -> dict:
    """The CUDA alternative to a child: time and peak memory in this process, OOM caught
    (and the caching allocator emptied afterwards). No time limit can be enforced here."""
    import gc

    import torch

    from .measure import measure_in_process

    result = {}
    try:
        result.update(measure_in_process(case, get_impl(impl), warmup, repeats, max_seconds),
                      status="ok")
        if case.device == "cuda":
            result["device_name"] = torch.cuda.get_device_name()
    except Exception as exc:  # noqa: BLE001 - a failure is a data point
        text = f"{type(exc).__name__}: {exc}"
        oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
            m in text.lower() for m in OOM_MARKERS)
        result.update(status="oom" if oom else "error", error=text[:2000])
    finally:
        gc.collect()
        if case.device == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    return result


def _device_missing(case: Case) -> str | None:
    if case.device != "cuda":
        return None
    import torch
    return None if torch.cuda.is_available() else "needs CUDA"


class Prober:
    """Runs configurations in fresh children and subtracts a cached baseline per
    (implementation, loss, dtype, device). With isolation="inprocess" (meant for CUDA, where
    peak memory is the allocator's own figure) configurations run in this process instead:
    much less start-up time per configuration, no enforced time limit."""

    def __init__(self, *, warmup=1, repeats=3, time_limit_s=120.0, cap_bytes=None,
                 threads=None, max_seconds=None, cwd=None, sys_path=(), isolation="process"):
        if isolation not in ("process", "inprocess"):
            raise ValueError(f"isolation must be 'process' or 'inprocess', got {isolation!r}")
        self.isolation = isolation
        self.warmup, self.repeats = warmup, repeats
        self.time_limit_s, self.cap_bytes = time_limit_s, cap_bytes
        self.threads, self.max_seconds = threads, max_seconds
        self.cwd, self.sys_path = cwd, list(sys_path)
        self._baselines: dict[tuple, dict] = {}

    def _spec(self, case: Case, impl: str, mode: str) -> dict:
        return {
            "case": case.to_dict(), "impl": impl, "mode": mode, "warmup": self.warmup,
            "repeats": self.repeats, "max_seconds": self.max_seconds, "threads": self.threads,
            "cap_bytes": self.cap_bytes if case.device == "cpu" else None,
            "sys_path": self.sys_path,
        }

    def baseline(self, case: Case, impl: str) -> dict:
        key = (impl, case.loss, case.dtype, case.device)
        if key not in self._baselines:
            self._baselines[key] = run_child(self._spec(case, impl, "baseline"),
                                             self.time_limit_s, self.cwd)
        return self._baselines[key]

    def probe(self, case: Case, impl: str) -> dict:
        """One record for (case, impl): see the module docstring."""
        found = get_impl(impl)
        record = {"case": case.to_dict(), "impl": found.name, "role": found.role, "impl_spec": impl}
        why_not = found.why_not(case) or _device_missing(case)
        if why_not:
            record.update(status="skipped", error=why_not)
            return record
        if self.isolation == "inprocess":
            record.update(run_in_process(case, impl, self.warmup, self.repeats, self.max_seconds),
                          isolation="inprocess")
            record["extra_bytes"] = record.get("peak_extra_bytes")
            return record
        result = run_child(self._spec(case, impl, "work"), self.time_limit_s, self.cwd)
        record.update({k: v for k, v in result.items() if k not in ("mode", "finished_at")})
        if case.device == "cpu":
            base = self.baseline(case, impl)
            record["baseline_rss_bytes"] = base.get("peak_rss_bytes")
            if base.get("status") == "ok" and result.get("peak_rss_bytes"):
                record["extra_bytes"] = max(result["peak_rss_bytes"] - base["peak_rss_bytes"], 0)
        else:
            record["extra_bytes"] = result.get("peak_extra_bytes")
        if record["status"] == "oom" and case.device == "cpu" and self.cap_bytes:
            record["cap_bytes"] = self.cap_bytes
        return record
