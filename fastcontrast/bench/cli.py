"""`fastcontrast bench`: time and memory-profile fastcontrast against its baselines.

    fastcontrast bench                                  # a ~1 minute CPU sweep
    fastcontrast bench --losses triplet-semihard --batch-sizes 1024,2048,8192 \\
        --impls fastcontrast-torch,pml --memory-cap 20GiB
    fastcontrast bench --suite gpu                      # issues' GPU acceptance cases
    fastcontrast bench report results.json [--markdown OUT.md] [--plots DIR]

Every configuration runs in a fresh process (time limit, memory cap on CPU); a sweep over
batch sizes stops for an implementation after it ran out of memory or time.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import signal
import sys
from pathlib import Path

from .._cli_common import DefaultsHelpFormatter, default_threads, THREADS_DEFAULT_HELP, check_out_folder
from . import report
from .cases import DTYPES, LOSSES, SUITES, Case, Entry, suite
from .impls import IMPLS, get_impl
from .probe import Prober, available_memory_bytes, default_cap_bytes, relative_cap_bytes

DEFAULT_LOSSES = "triplet-semihard,ntxent-simclr"
DEFAULT_BATCHES = "64,128,256"
DEFAULT_IMPLS = "fastcontrast-triton,fastcontrast-torch,dense-eager,dense-compile,pml"


def _csv_list(choices=None, kind=str, name="value"):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {name} list")
        out = []
        for t in items:
            try:
                v = kind(t)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{name} {t!r} is not a valid {kind.__name__}") from None
            if choices is not None and v not in choices and not (isinstance(v, str) and ":" in v):
                raise argparse.ArgumentTypeError(f"unknown {name} {t!r}; choose from {', '.join(choices)}")
            if kind is int and v < 2:
                raise argparse.ArgumentTypeError(f"{name} must be >= 2, got {v}")
            out.append(v)
        return out
    return parse


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v
    return parse


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


class RelativeBytes(int):
    """A size given as '+2GiB': that much beyond an idle child's address space."""


def parse_bytes(text: str) -> int | None:
    """'20GiB', '512MB', '1.5g', 'none' (no cap), 'auto' → bytes (None for none); '+2GiB' →
    RelativeBytes (beyond the address space of an idle child of this torch build)."""
    t = text.strip().lower()
    if t in ("none", "off", "0"):
        return None
    if t == "auto":
        return -1
    if t.startswith("+"):
        return RelativeBytes(parse_bytes(t[1:]))
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", t)
    if not m or m.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 16GiB, 512MB or 'none'")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value < 2**28:
        raise argparse.ArgumentTypeError(f"{text!r} is below 256 MiB: torch alone does not fit")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcontrast bench",
        description="Time forward+backward and profile peak memory of fastcontrast against "
                    "dense PyTorch, torch.compile and pytorch-metric-learning. Each "
                    "configuration runs in a fresh process. `fastcontrast bench report FILE.json` "
                    "re-renders tables and plots from a results file.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="run a predefined list of cases "
                   "instead of the --losses × --batch-sizes sweep")
    p.add_argument("--losses", type=_csv_list(list(LOSSES), name="loss"), default=DEFAULT_LOSSES,
                   help=f"comma-separated losses: {', '.join(LOSSES)}")
    p.add_argument("--batch-sizes", type=_csv_list(kind=int, name="batch size"),
                   default=DEFAULT_BATCHES, help="comma-separated batch sizes B")
    p.add_argument("--dim", type=_positive(int), default=128, help="embedding dimension D")
    p.add_argument("--classes", type=_positive(int), default=10, help="number of classes")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="embedding dtype")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available")
    p.add_argument("--impls", type=_csv_list(list(IMPLS), name="implementation"),
                   default=DEFAULT_IMPLS,
                   help=f"comma-separated implementations: {', '.join(IMPLS)} (those that cannot "
                        "run on a case are skipped)")
    p.add_argument("--repeats", type=_positive(int), default=3, help="timed steps (median quoted)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    p.add_argument("--max-seconds", type=_positive(float), default=10.0,
                   help="stop timing a configuration after this many seconds (at least one step)")
    p.add_argument("--time-limit", type=_positive(float), default=180.0,
                   help="seconds before a configuration's process is killed (recorded as timeout)")
    p.add_argument("--memory-cap", type=parse_bytes, default="auto",
                   help="address-space cap of each CPU process, e.g. 16GiB, or +2GiB beyond an idle process; 'auto' = available "
                        "memory minus 3 GiB; 'none' = no cap")
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="torch threads in each configuration's process " + THREADS_DEFAULT_HELP)
    p.add_argument("--isolation", choices=("auto", "process", "inprocess"), default="auto",
                   help="process: every configuration in a fresh process (peak RSS, memory cap, "
                        "time limit); inprocess: all in this process (CUDA peak memory from the "
                        "allocator, far less start-up time; no time limit); auto = process on "
                        "CPU, inprocess on CUDA")
    p.add_argument("--skip-families", type=_csv_list(["softmax", "pair_margin", "triplet"], name="family"),
                   default=[], help="leave out the cases of these loss families (bench/gpu_run.py "
                   "passes the families whose smoke test failed)")
    p.add_argument("--out", default="fastcontrast-bench", help="output folder")
    p.add_argument("--name", default=None, help="file name prefix (default <device>-<date>)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastcontrast bench report",
                                description="Tables and plots from results JSON files.")
    p.add_argument("files", nargs="+", help="results JSON files")
    p.add_argument("--markdown", default=None, help="write the markdown tables to this file")
    p.add_argument("--plots", default=None, help="write PNG plots into this folder")
    return p


def _device(arg: str) -> str:
    if arg != "auto":
        return arg
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def plan(args) -> list[Entry]:
    if args.suite:
        entries = suite(args.suite)
    else:
        device = _device(args.device)
        entries = [Entry(Case(loss, B, D=args.dim, dtype=args.dtype, classes=args.classes, device=device),
                         tuple(args.impls))
                   for loss in args.losses for B in sorted(args.batch_sizes)]
    skip = set(getattr(args, "skip_families", None) or ())
    return [e for e in entries if e.case.family not in skip]


def _progress(total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None     # a log file gets one line per configuration instead
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _sweep(jobs, prober, doc, json_path, bar, quiet):
    """Probe every (entry, implementation); after an implementation ran out of memory or
    time at some B, larger B of the same loss are recorded as skipped, not run."""
    failed_at: dict[tuple, dict] = {}   # (loss, dtype, device, D, impl) -> first failing record
    for entry, name in jobs:
        case = entry.case
        impl = get_impl(name)
        key = (case.loss, case.dtype, case.device, case.D, name)
        if bar is not None:
            bar.set_description(f"{case.loss} B={case.B} {impl.name}")
        prev = failed_at.get(key)
        if prev is not None and prev["case"]["B"] < case.B:
            record = {"case": case.to_dict(), "impl": impl.name, "role": impl.role,
                      "impl_spec": name, "status": "skipped",
                      "error": f"not run: {prev['status']} at B={prev['case']['B']}"}
        else:
            record = prober.probe(case, name)
        if entry.note:
            record["note"] = entry.note
        if record["status"] in ("oom", "timeout"):
            failed_at.setdefault(key, record)
        doc["records"].append(record)
        report.write_json(doc, json_path)       # after every record: a cut-short run keeps its data
        if bar is not None:
            bar.update(1)
        elif not quiet:
            extra = record.get("extra_bytes")
            print(f"{case.name} {record['impl']}: {record['status']} "
                  f"{report.fmt_time(record.get('time_s'))} {report.fmt_bytes(extra)}"
                  + (f" ({record['error'][:200]})" if record.get("error") else ""),
                  file=sys.stderr, flush=True)


def run(args, argv: list[str]) -> int:
    entries = plan(args)
    if any(e.case.device == "cuda" for e in entries):
        import torch
        if not torch.cuda.is_available():
            build_parser().error(f"{'--suite ' + args.suite if args.suite else '--device cuda'} "
                                 "needs a CUDA device and none is available")
    cap = args.memory_cap
    if cap == -1:
        cap = default_cap_bytes()
    elif isinstance(cap, RelativeBytes):
        cap = relative_cap_bytes(cap)
    avail = available_memory_bytes()
    if cap and avail and cap > avail:
        print(f"note: --memory-cap {report.fmt_bytes(cap)} is above the memory available now "
              f"({report.fmt_bytes(avail)})", file=sys.stderr)
    if args.threads is None:
        args.threads = default_threads()
    impls_asked = None if args.suite else list(args.impls)
    settings = {"warmup": args.warmup, "repeats": args.repeats, "max_seconds": args.max_seconds,
                "time_limit_s": args.time_limit, "cap_bytes": cap, "threads": args.threads,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "niceness": os.nice(0),
                "suite": args.suite,
                "impls": impls_asked}
    doc = report.new_document(["fastcontrast", "bench", *argv], settings)
    devices = {e.case.device for e in entries}
    slug = "cpu" if devices == {"cpu"} else re.sub(r"[^a-z0-9]+", "", (report.gpu_name() or "gpu").lower().replace("nvidia", ""))
    prefix = args.name or f"{slug}-{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{prefix}.json", out / f"{prefix}.csv"

    isolation = args.isolation
    if isolation == "auto":
        isolation = "process" if devices == {"cpu"} else "inprocess"
    if isolation == "inprocess" and "cpu" in devices:
        print("note: --isolation inprocess: CPU memory figures are not measured in-process",
              file=sys.stderr)
    settings["isolation"] = isolation
    if isolation == "inprocess":
        import torch
        torch.set_num_threads(args.threads)
    prober = Prober(warmup=args.warmup, repeats=args.repeats, time_limit_s=args.time_limit,
                    cap_bytes=cap, threads=args.threads, max_seconds=args.max_seconds,
                    cwd=os.getcwd(), sys_path=[os.getcwd()], isolation=isolation)
    jobs = [(e, name) for e in entries for name in (e.impls or tuple(IMPLS))]
    print(f"fastcontrast bench: {len(jobs)} configurations, {args.threads} torch "
          f"thread{'s' if args.threads != 1 else ''} per process (--threads), {isolation} "
          f"isolation → {out}", file=sys.stderr, flush=True)
    bar = _progress(len(jobs), args.quiet)
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _sweep(jobs, prober, doc, json_path, bar, args.quiet)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        report.write_json(doc, json_path)
        print(f"\ninterrupted after {len(doc['records'])} of {len(jobs)} configurations",
              file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if bar is not None:
            bar.close()
    try:
        doc["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    report.write_json(doc, json_path)
    report.write_csv(doc, csv_path)
    header, rows = report.comparison_rows(doc)
    print(f"\nfastcontrast bench on {report.device_label(doc)}, {args.threads} torch "
          f"thread{'s' if args.threads != 1 else ''}; forward+backward, median of "
          f"{args.repeats}; {report.memory_definition(doc)}"
          + (f"; CPU processes capped at {report.fmt_bytes(cap)}" if cap and "cpu" in devices else ""))
    print(report.text_table(header, rows))
    skipped = [r for r in doc["records"] if r["status"] == "skipped"]
    if skipped:
        reasons = sorted({f"{r['impl']}: {r['error']}" for r in skipped})
        print("skipped: " + "; ".join(reasons))
    errors = [r for r in doc["records"] if r["status"] == "error"]
    for r in errors:
        print(f"error in {r['case']['name']} {r['impl']}: {r.get('error')}", file=sys.stderr)
    written = [str(json_path), str(csv_path)]
    if not args.no_plots:
        if _matplotlib_missing():
            print("note: matplotlib is not installed, so no PNG plots were written "
                  "(pip install matplotlib)", file=sys.stderr)
        else:
            written += report.plot(doc, out, prefix)
    md_path = out / f"{prefix}.md"
    md_path.write_text(report.markdown_report(doc, json_path.name) + "\n")
    written.append(str(md_path))
    print("wrote " + ", ".join(written))
    return 0


def run_report(argv: list[str]) -> int:
    args = build_report_parser().parse_args(argv)
    parts = []
    for f in args.files:
        try:
            doc = report.load(f)
        except (OSError, ValueError) as exc:
            build_report_parser().error(f"cannot read {f}: {exc}")
        parts.append(f"### {Path(f).name}\n\n" + report.markdown_report(doc, Path(f).name))
        if args.plots:
            if _matplotlib_missing():
                build_report_parser().error("argument --plots: matplotlib is not installed, so "
                                            "no PNG plots can be written (pip install matplotlib)")
            check_out_folder(build_report_parser(), args.plots, "--plots")
            report.plot(doc, args.plots, Path(f).stem)
    text = "\n\n".join(parts) + "\n"
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        return run_report(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error("argument --warmup: must be >= 0")
    for name in args.impls:
        try:
            get_impl(name)
        except ValueError as exc:
            parser.error(f"argument --impls: {exc}")
    check_out_folder(parser, args.out)
    return run(args, argv)
