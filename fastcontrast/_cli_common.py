"""Pieces shared by the `fastcontrast` commands: help formatting, thread default, --out check."""
from __future__ import annotations

import argparse
import os


def format_default(value) -> str:
    """A default as it would be typed on the command line: lists comma-separated."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help, except where the help already states its
    default (it mentions "default"), where there is none to state (None, a flag's False) or
    for positional arguments."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None
                or default is False or default is argparse.SUPPRESS):
            return text
        shown = format_default(default).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


# Measured on a shared 2-core CPU (bench/results/threads-cpu-20261201.md): the experiment's
# small MLPs and the benchmark's per-configuration processes ran faster with one torch
# thread than with two, by far when other processes were busy (two threads spin against
# them). One thread is the default; OMP_NUM_THREADS or --threads chooses otherwise.
THREADS_DEFAULT_HELP = ("(default: OMP_NUM_THREADS when set, else 1: measured faster than 2 on a "
                        "2-core CPU, and on a busy machine more threads spin against other "
                        "processes; bench/results/threads-cpu-20261201.md)")


def default_threads() -> int:
    """OMP_NUM_THREADS when it is a positive integer, else 1."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return 1
    return value if value > 0 else 1


def check_out_folder(parser: argparse.ArgumentParser, path: str, option: str = "--out") -> None:
    """Create the output folder now, or stop with an argparse error that says why not."""
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument {option}: {path!r} is a file, not a folder; give a folder "
                     "(created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        parser.error(f"argument {option}: cannot create the folder {path!r}: "
                     f"{exc.strerror or exc}")
