"""The `fastcontrast` command as a user meets it: --version, `python -m fastcontrast`, the
help text of both subcommands, the thread default and header, --out errors, no matplotlib."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastcontrast
from fastcontrast import cli
from fastcontrast._cli_common import default_threads
from fastcontrast.bench.cli import build_parser as bench_parser
from fastcontrast.bench.cli import main as bench_main
from fastcontrast.experiment.cli import build_parser as experiment_parser
from fastcontrast.experiment.cli import main as experiment_main

ROOT = Path(__file__).resolve().parents[1]
STANDINS = str(Path(__file__).with_name("bench") / "standins.py")
TINY_EXPERIMENT = ["--losses", "cross-entropy", "--batch-sizes", "32", "--max-steps", "2",
                   "--seeds", "1", "--quiet", "--train-size", "100", "--test-size", "50"]


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastcontrast {fastcontrast.__version__}"


def test_python_dash_m_fastcontrast_is_the_command():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "fastcontrast", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"fastcontrast {fastcontrast.__version__}"
    done = run()
    assert done.returncode == 0 and "experiment" in done.stdout and "bench" in done.stdout
    done = run("frobnicate")
    assert done.returncode == 2 and "unknown command" in done.stderr


@pytest.mark.parametrize("parser", [bench_parser, experiment_parser])
def test_help_states_each_default_once_and_never_none(parser):
    text = " ".join(parser().format_help().split())       # argparse wraps lines
    assert "(default: None)" not in text and "(default: False)" not in text
    formatter = parser()._get_formatter()
    for action in parser()._actions:                        # one stated default per option at most
        if action.help:
            assert formatter._get_help_string(action).lower().count("default") <= 1, action.dest
    assert "['" not in text and "']" not in text           # no Python lists


def test_experiment_help_shows_losses_default_as_typed():
    text = " ".join(experiment_parser().format_help().split())
    assert "or 'all' (default: the original study's, all but nt-xent)" in text
    assert "--classifier-batch-size CLASSIFIER_BATCH_SIZE stage-2 batch size (default: 32)" in text


@pytest.mark.parametrize("parser", [bench_parser, experiment_parser])
def test_help_documents_the_thread_default(parser):
    text = " ".join(parser().format_help().split())
    assert "OMP_NUM_THREADS when set, else 1" in text


def test_thread_default_is_one_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for bad in ("", "0", "-2", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert default_threads() == 1


@pytest.mark.parametrize("main", [bench_main, experiment_main])
def test_out_that_is_a_file_is_an_argparse_error(main, tmp_path, capsys):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    for out in (existing, existing / "sub"):
        with pytest.raises(SystemExit) as exc:
            main(["--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out" in err and str(existing) in err and "Traceback" not in err
    assert existing.read_text() == "{}"


def _bench_argv(tmp_path, *extra):
    return ["--losses", "contrastive", "--batch-sizes", "16,32", "--dim", "4",
            "--impls", f"{STANDINS}:FAST", "--repeats", "1", "--warmup", "0",
            "--memory-cap", "none", "--time-limit", "120", "--out", str(tmp_path),
            "--name", "run", "--quiet", *extra]


def test_bench_header_and_results_state_the_threads(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert bench_main(_bench_argv(tmp_path, "--isolation", "inprocess", "--no-plots")) == 0
    out, err = capsys.readouterr()
    assert any(line.startswith("fastcontrast bench: 2 configurations, 1 torch thread per process")
               for line in err.splitlines())
    assert "1 torch thread;" in out
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["settings"]["threads"] == 1


def test_bench_without_matplotlib_says_it_writes_no_png(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib fails
    assert bench_main(_bench_argv(tmp_path, "--isolation", "inprocess", "--threads", "2")) == 0
    out, err = capsys.readouterr()
    assert "matplotlib is not installed, so no PNG plots were written" in err
    assert "2 torch threads" in out and not list(tmp_path.glob("*.png"))
    with pytest.raises(SystemExit) as exc:
        bench_main(["report", str(tmp_path / "run.json"), "--plots", str(tmp_path / "p")])
    assert exc.value.code == 2 and "matplotlib is not installed" in capsys.readouterr().err


def test_experiment_header_states_the_threads(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import torch
    before = torch.get_num_threads()
    try:
        assert experiment_main([*TINY_EXPERIMENT, "--out", str(tmp_path), "--no-plots"]) == 0
        err = capsys.readouterr().err
        assert "1 torch thread (--threads)" in err.splitlines()[0]
        rep = json.loads((tmp_path / "results.json").read_text())
        assert rep["settings"]["threads"] == 1 and rep["machine"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_experiment_without_matplotlib_says_it_writes_no_png(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    import torch
    before = torch.get_num_threads()
    try:
        assert experiment_main([*TINY_EXPERIMENT, "--out", str(tmp_path), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert "matplotlib is not installed, so no PNG plots are written" in err
    assert not list(tmp_path.glob("*.png")) and " and plots" not in err
