"""Results: the JSON document, CSV, the terminal / markdown tables and the PNG plots.

A results document (one JSON file per run):

    {"schema": "fastcontrast-bench/1", "command": "...", "argv": [...], "date": "...",
     "machine": {...}, "versions": {...}, "settings": {...}, "records": [...]}

Every record is one (case, implementation) with the fields of probe.Prober.probe. Ratios are
only ever formed between records of the same document (one run, one machine).
"""
from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path

from .impls import BASELINE, IMPLS, SUBJECT, YARDSTICK

SCHEMA = "fastcontrast-bench/1"
CSV_FIELDS = ["loss", "B", "N", "D", "dtype", "classes", "device", "impl", "status", "time_s",
              "time_min_s", "cpu_time_s",
              "extra_bytes", "peak_rss_bytes", "baseline_rss_bytes", "cap_bytes", "value",
              "tflops", "error"]


# ---------------------------------------------------------------- environment ---------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if names:
            return names[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine_info() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "memory_bytes": mem,
            "load_average_at_start": load,
            "gpu": gpu_name(), "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    out = {}
    for dist in ("torch", "triton", "numpy", "pytorch-metric-learning", "fastcontrast"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import torch
        out["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        out["cuda"] = None
    return out


def new_document(argv: list[str], settings: dict, command: str | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "command": command or " ".join(shlex.quote(a) for a in argv),
        "argv": list(argv),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "records": [],
    }


def device_label(doc: dict) -> str:
    """The device the figures were measured on, for table captions."""
    devices = {r["case"]["device"] for r in doc["records"]}
    m = doc["machine"]
    if "cuda" in devices:
        names = {r.get("device_name") for r in doc["records"] if r.get("device_name")} - {"cpu"}
        return next(iter(names), None) or m.get("gpu") or "GPU"
    return f"{m.get('cpu')} ({m.get('cpu_count')} cores)"


# ---------------------------------------------------------------- files ---------------

def write_json(doc: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a fastcontrast bench results file (schema {doc.get('schema')!r})")
    return doc


def tflops(record: dict) -> float | None:
    case = record["case"]
    if record.get("status") != "ok" or not record.get("time_s"):
        return None
    per_pair = 2 if record["impl"] == "matmul" else 8
    from .cases import LOSSES
    if not LOSSES[case["loss"]].flops_per_pair:
        return None
    n = case["N"] if case.get("N") is not None else case["B"]
    return per_pair * case["B"] * n * case["D"] / record["time_s"] / 1e12


def write_csv(doc: dict, path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in doc["records"]:
            c = r["case"]
            row = {k: c.get(k) for k in ("loss", "B", "N", "D", "dtype", "classes", "device")}
            row.update({k: r.get(k) for k in ("impl", "status", "time_s", "time_min_s", "cpu_time_s",
                                               "extra_bytes",
                                               "peak_rss_bytes", "baseline_rss_bytes",
                                               "cap_bytes", "value", "error")})
            row["tflops"] = tflops(r)
            w.writerow(row)


# ---------------------------------------------------------------- formatting ----------

def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= size:
            return f"{b / size:.2f} {unit}" if unit == "GiB" else f"{b / size:.0f} {unit}"
    return f"{b:.0f} B"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}×" if x >= 100 else f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def status_text(r: dict) -> str:
    s = r.get("status")
    if s == "oom":
        cap = r.get("cap_bytes")
        return f"OOM (cap {fmt_bytes(cap)})" if cap else "OOM"
    if s == "timeout":
        return "timeout"
    if s == "skipped":
        return "skipped"
    if s == "error":
        return "error"
    return ""


def _group(doc: dict) -> dict:
    """case name -> {impl: record}, in the order the cases first appear."""
    groups: dict[str, dict] = {}
    for r in doc["records"]:
        groups.setdefault(r["case"]["name"], {})[r["impl"]] = r
    return groups


def _roles(doc: dict) -> dict:
    roles = {}
    for r in doc["records"]:
        impl = IMPLS.get(r["impl"])
        roles[r["impl"]] = r.get("role") or (impl.role if impl else BASELINE)
    return roles


def comparison_rows(doc: dict, include_skipped: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table: one row per (case, implementation); for the
    fastcontrast rows the speed-up and the memory ratio against every baseline of the case."""
    groups = _group(doc)
    roles = _roles(doc)
    baselines = []
    for recs in groups.values():
        for name, r in recs.items():
            if roles[name] == BASELINE and name not in baselines and r.get("status") != "skipped":
                baselines.append(name)
    header = ["case", "implementation", "time", "peak extra mem", "status"]
    for b in baselines:
        header += [f"speed-up vs {b}", f"memory ÷ vs {b}"]
    rows = []
    for case_name, recs in groups.items():
        for name, r in recs.items():
            if r.get("status") == "skipped" and not include_skipped:
                continue
            ok = r.get("status") == "ok"
            t = r.get("time_s") if ok else None
            row = [case_name, name, fmt_time(t), fmt_bytes(r.get("extra_bytes")), status_text(r)]
            if name == "matmul" or (roles[name] == YARDSTICK):
                tf = tflops(r)
                row[4] = (row[4] + " " if row[4] else "") + (f"{tf:.1f} TFLOP/s" if tf else "")
            for b in baselines:
                base = recs.get(b)
                if roles[name] != SUBJECT or base is None or not ok:
                    row += ["", ""]
                    continue
                row += list(_ratios(r, base))
            rows.append(row)
    return header, rows


def _ratios(r: dict, base: dict) -> tuple[str, str]:
    status = base.get("status")
    if status in ("oom", "timeout"):
        label = "OOM" if status == "oom" else "timeout"
        return (f"{label} → ∞", f"{label} → ∞")
    if status != "ok":
        return ("-", "-")
    speed = base["time_s"] / r["time_s"] if r.get("time_s") else None
    m_r, m_b = r.get("extra_bytes"), base.get("extra_bytes")
    mem = m_b / m_r if (m_r and m_b is not None and m_r > 0) else None
    return fmt_ratio(speed), fmt_ratio(mem)


def _cell(r: dict | None, field: str) -> str:
    if r is None:
        return ""
    if r.get("status") == "ok":
        return fmt_time(r.get("time_s")) if field == "time" else fmt_bytes(r.get("extra_bytes"))
    if r.get("status") == "skipped":
        return "n/a"
    return status_text(r)


def wide_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """One row per case: time and memory of every implementation, then the speed-up and
    memory ratio of each fastcontrast implementation against each baseline (README form)."""
    groups = _group(doc)
    roles = _roles(doc)
    impls, subjects, baselines = [], [], []
    for recs in groups.values():
        for name, r in recs.items():
            if r.get("status") == "skipped" or name in impls:
                continue
            impls.append(name)
            (subjects if roles[name] == SUBJECT else baselines if roles[name] == BASELINE else []).append(name)
    # N (references: InfoNCE keys, a memory bank) only when some case has its own
    with_n = any(next(iter(recs.values()))["case"].get("N") is not None for recs in groups.values())
    header = ["loss", "B"] + (["N"] if with_n else []) + ["D", "dtype"]
    for name in impls:
        header += [f"{name} time", f"{name} memory"]
    pairs = [(s_, b) for s_ in subjects for b in baselines]
    for s_, b in pairs:
        prefix = "" if len(subjects) == 1 else f"{s_} "
        header += [f"{prefix}speed-up vs {b}", f"{prefix}memory ÷ vs {b}"]
    # throughput of the softmax family against one matmul of the same shape (8·B·N·D FLOP
    # per forward+backward vs 2·B·N·D for the matmul)
    yardstick = "matmul" if "matmul" in impls else None
    if yardstick:
        header += [f"{s_} % of matmul FLOP/s" for s_ in subjects]
    rows = []
    for recs in groups.values():
        c = next(iter(recs.values()))["case"]
        n = [str(c["N"]) if c.get("N") is not None else str(c["B"])] if with_n else []
        row = [c["loss"], str(c["B"]), *n, str(c["D"]), c["dtype"]]
        for name in impls:
            row += [_cell(recs.get(name), "time"), _cell(recs.get(name), "memory")]
        for s_, b in pairs:
            r, base = recs.get(s_), recs.get(b)
            if r is None or base is None or r.get("status") != "ok":
                row += ["", ""]
            else:
                row += list(_ratios(r, base))
        if yardstick:
            mm = tflops(recs[yardstick]) if yardstick in recs else None
            for s_ in subjects:
                tf = tflops(recs[s_]) if s_ in recs else None
                row.append(f"{100 * tf / mm:.0f}% ({tf:.2g} vs {mm:.2g} TFLOP/s)" if tf and mm else "")
        rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c or " " for c in r) + " |" for r in rows]
    return "\n".join(out)


def memory_definition(doc: dict) -> str:
    if doc["settings"].get("isolation") == "inprocess" or any(
            r["case"]["device"] == "cuda" for r in doc["records"]):
        return "memory = peak torch.cuda.max_memory_allocated beyond the inputs"
    return ("memory = peak RSS of a fresh process per configuration minus that of an idle "
            "process with the same imports (the inputs are included)")


def markdown_report(doc: dict, source: str | None = None) -> str:
    header, rows = wide_rows(doc)
    lines = [f"Measured on **{device_label(doc)}**, {doc['date'][:10]}, torch "
             f"{doc['versions'].get('torch')}, forward+backward, median of "
             f"{doc['settings'].get('repeats')} after {doc['settings'].get('warmup')} warm-up; "
             f"{memory_definition(doc)}."]
    cap = doc["settings"].get("cap_bytes")
    if cap:
        lines[0] += f" Each process ran under an address-space cap of {fmt_bytes(cap)}."
    if doc.get("interrupted"):
        lines[0] += " The run was cut short; cases not listed were not measured."
    lines += ["", markdown_table(header, rows), ""]
    lines.append(f"Command: `{doc['command']}`" + (f" — data: `{source}`" if source else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- plots ---------------

def plot(doc: dict, out_dir: str | Path, prefix: str) -> list[str]:
    """One PNG per (loss, D, dtype, device) with at least two batch sizes: time and memory vs
    B, log-log, one line per implementation; OOM / timeouts marked with a cross."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    series: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in doc["records"]:
        c = r["case"]
        if r.get("status") == "skipped":
            continue
        key = (c["loss"], c["D"], c["dtype"], c["device"])
        series[key][r["impl"]].append(r)
    paths = []
    for (loss, D, dtype, device), by_impl in series.items():
        sizes = {r["case"]["B"] for recs in by_impl.values() for r in recs}
        if len(sizes) < 2:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        positive = [False, False]
        for name, recs in sorted(by_impl.items()):
            recs = sorted(recs, key=lambda r: r["case"]["B"])
            for ax, field in zip(axes, ("time_s", "extra_bytes")):
                ok = [r for r in recs if r.get("status") == "ok" and r.get(field)]
                positive[field == "extra_bytes"] |= bool(ok)
                scale = 1 if field == "time_s" else 2**20
                line, = ax.plot([r["case"]["B"] for r in ok], [r[field] / scale for r in ok],
                                marker="o", label=name)
                failed = [r for r in recs if r.get("status") in ("oom", "timeout")]
                for r in failed:
                    y = r.get(field) if field == "extra_bytes" else None
                    if y is None and ok:
                        y = ok[-1][field]
                    if y is None:
                        continue
                    ax.plot([r["case"]["B"]], [y / scale], marker="X", markersize=11,
                            color=line.get_color(), linestyle="none")
                    ax.annotate("OOM" if r["status"] == "oom" else "timeout",
                                (r["case"]["B"], y / scale), textcoords="offset points",
                                xytext=(4, 6), fontsize=8, color=line.get_color())
        for ax, label, has_data in zip(axes, ("forward+backward time (s)", "peak extra memory (MiB)"),
                                       positive):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
            if has_data:
                ax.set_yscale("log")
            ax.set_xlabel("batch size B")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{loss}, D={D}, {dtype}, {device_label(doc) if device == 'cuda' else 'CPU'}",
                     fontsize=10)
        fig.tight_layout()
        path = Path(out_dir) / f"{prefix}-{loss}-D{D}-{dtype}-{device}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths
