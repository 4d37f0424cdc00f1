"""One benchmark configuration in a fresh process: `python _child.py SPEC.json`.

Run as a script (not with -m) so that the memory cap is set before anything is imported:
the cap applies to torch's import as well as to the work. The result is written as JSON to
spec["result_path"]; the parent reads the peak RSS of this process from os.wait4, so it is
known even when the process is killed.

spec: case (dict), impl (name), mode ("work" | "baseline"), warmup, repeats, max_seconds,
      cap_bytes (address-space cap, CPU only), threads, sys_path (prepended).
"""
import json
import os
import resource
import sys
import time
import traceback

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
               "not enough memory", "bad_alloc", "unable to allocate")


def _vmhwm_bytes():
    """Peak RSS of this process image (VmHWM). Unlike ru_maxrss it starts afresh at exec, so
    it does not inherit the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _write(path, result):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "oom"
    if type(exc).__name__ == "OutOfMemoryError":   # torch.cuda.OutOfMemoryError
        return "oom"
    text = str(exc).lower()
    return "oom" if any(m in text for m in OOM_MARKERS) else "error"


def main(spec_path: str) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # no bench/ shadowing
    with open(spec_path) as f:
        spec = json.load(f)
    cap = spec.get("cap_bytes")
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
    for p in reversed(spec.get("sys_path", [])):
        sys.path.insert(0, p)
    result = {"status": "error", "mode": spec["mode"]}
    try:
        import importlib

        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        from fastcontrast.bench.cases import Case, make_inputs, tiny
        from fastcontrast.bench.impls import get_impl
        from fastcontrast.bench.measure import measure_in_process

        case = Case.from_dict(spec["case"])
        impl = get_impl(spec["impl"])
        for module in impl.imports:
            importlib.import_module(module)
        if spec["mode"] == "baseline":
            # the idle process: same imports (the loss family's modules included), the
            # implementation built, inputs of a tiny batch made; no step runs
            for module in (f"fastcontrast.{case.family}", f"fastcontrast._torch.{case.family}"):
                try:
                    importlib.import_module(module)
                except ImportError:
                    pass
            impl.build(case)
            make_inputs(tiny(case))
            out = {}
        else:
            out = measure_in_process(case, impl, spec.get("warmup", 1), spec.get("repeats", 3),
                                     spec.get("max_seconds"))
        result.update(out, status="ok")
        result["device_name"] = (torch.cuda.get_device_name() if case.device == "cuda"
                                 else "cpu")
    except BaseException as exc:  # noqa: B902 - everything is a data point here
        result.update(status=_status_of(exc), error=f"{type(exc).__name__}: {exc}"[:2000],
                      traceback=traceback.format_exc()[-3000:])
    result["vmhwm_bytes"] = _vmhwm_bytes()
    result["finished_at"] = time.time()
    _write(spec["result_path"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
