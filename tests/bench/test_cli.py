"""`fastcontrast bench` end to end (stand-in implementations, tiny sizes) and its errors."""
import csv
import json
from pathlib import Path

import pytest

from fastcontrast.bench import main
from fastcontrast.bench.cli import build_parser, parse_bytes

STANDINS = str(Path(__file__).with_name("standins.py"))


def test_cli_runs_end_to_end_and_writes_json_csv_png_and_a_table(tmp_path, capsys):
    # FAST is a subject, GROWS a baseline that runs out of memory above B=32: the sweep
    # records the OOM at B=64 and does not try GROWS at B=128
    impls = f"{STANDINS}:FAST,{STANDINS}:GROWS"
    argv = ["--losses", "contrastive", "--batch-sizes", "32,64,128", "--dim", "8",
            "--impls", impls, "--repeats", "2", "--warmup", "0", "--memory-cap", "+2GiB",
            "--time-limit", "120", "--out", str(tmp_path), "--name", "run", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["command"].startswith("fastcontrast bench --losses contrastive")
    assert doc["argv"][2:] == argv
    for key in ("date", "machine", "versions", "settings"):
        assert doc[key]
    assert doc["versions"]["torch"] and doc["machine"]["cpu"]
    from fastcontrast.bench.probe import idle_address_space_bytes
    assert doc["settings"]["cap_bytes"] == idle_address_space_bytes() + 2 * 2**30
    status = {(r["impl"], r["case"]["B"]): (r["status"], r.get("error", "")) for r in doc["records"]}
    assert {k: v[0] for k, v in status.items()} == {
        ("fast-standin", 32): "ok", ("grows-standin", 32): "ok",
        ("fast-standin", 64): "ok", ("grows-standin", 64): "oom",
        ("fast-standin", 128): "ok", ("grows-standin", 128): "skipped",
    }
    assert status[("grows-standin", 128)][1] == "not run: oom at B=64"
    ok = [r for r in doc["records"] if r["status"] == "ok"]
    assert all(r["time_s"] > 0 and len(r["times_s"]) == 2 and r["extra_bytes"] >= 0 for r in ok)
    assert all(r["value"] is not None for r in ok)

    rows = list(csv.DictReader(open(tmp_path / "run.csv")))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok", "oom", "skipped"}
    assert float(rows[0]["time_s"]) > 0

    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["run-contrastive-D8-float32-cpu.png"]
    assert (tmp_path / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = printed.splitlines()
    assert any("speed-up vs grows-standin" in l and "memory ÷ vs grows-standin" in l for l in lines)
    fast64 = next(l for l in lines if l.startswith("contrastive-B64-D8-float32-cpu") and "fast-standin" in l)
    assert fast64.count("OOM → ∞") == 2                      # both ratios against the OOM
    grows64 = next(l for l in lines if l.startswith("contrastive-B64-D8-float32-cpu") and "grows" in l)
    assert "OOM (cap " in grows64
    fast32 = next(l for l in lines if l.startswith("contrastive-B32-D8-float32-cpu") and "fast-standin" in l)
    assert "×" in fast32

    # the report subcommand re-renders the same file
    md = tmp_path / "tables.md"
    assert main(["report", str(tmp_path / "run.json"), "--markdown", str(md)]) == 0
    assert "| contrastive | 32 | 8 | float32 |" in md.read_text()


@pytest.mark.parametrize("argv, option", [
    (["--losses", "tripplet"], "--losses"),
    (["--losses", ""], "--losses"),
    (["--batch-sizes", "12x"], "--batch-sizes"),
    (["--batch-sizes", "1"], "--batch-sizes"),
    (["--dim", "0"], "--dim"),
    (["--dtype", "float8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--impls", "numpy"], "--impls"),
    (["--impls", "nowhere.py:X"], "--impls"),
    (["--memory-cap", "12XB"], "--memory-cap"),
    (["--memory-cap", "1MB"], "--memory-cap"),
    (["--repeats", "-1"], "--repeats"),
    (["--warmup", "-2"], "--warmup"),
    (["--time-limit", "soon"], "--time-limit"),
    (["--suite", "everything"], "--suite"),
    (["--frobnicate"], "--frobnicate"),
])
def test_bad_options_give_an_argparse_error_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "error" in err


def test_report_of_a_file_that_is_not_results_errors_clearly(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(bad)])
    assert exc.value.code == 2 and "not a fastcontrast bench results file" in capsys.readouterr().err


def test_sizes_parse_with_units():
    assert parse_bytes("20GiB") == 20 * 2**30
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1.5g") == int(1.5 * 2**30)
    assert parse_bytes("none") is None
    assert parse_bytes("+2GiB") == 2 * 2**30 and type(parse_bytes("+2GiB")).__name__ == "RelativeBytes"


def test_defaults_are_the_quick_cpu_sweep():
    args = build_parser().parse_args([])
    assert args.losses == ["triplet-semihard", "ntxent-simclr"]
    assert args.batch_sizes == [64, 128, 256] and args.dim == 128 and args.dtype == "float32"


def test_inprocess_isolation_and_an_interrupted_run_keep_their_records(tmp_path, capsys):
    impls = f"{STANDINS}:FAST,{STANDINS}:INTERRUPTS,{STANDINS}:RAISES_OOM"
    argv = ["--losses", "supcon", "--batch-sizes", "16,64", "--dim", "4", "--impls", impls,
            "--isolation", "inprocess", "--repeats", "1", "--out", str(tmp_path), "--name", "g",
            "--no-plots"]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["interrupted"] is True and doc["settings"]["isolation"] == "inprocess"
    got = [(r["impl"], r["case"]["B"], r["status"]) for r in doc["records"]]
    assert got == [("fast-standin", 16, "ok"), ("interrupts", 16, "ok"), ("raises-oom", 16, "oom"),
                   ("fast-standin", 64, "ok")]
    assert len(list(csv.DictReader(open(tmp_path / "g.csv")))) == 4
    assert "interrupted after 4 of 6" in capsys.readouterr().err


def test_a_gpu_suite_without_cuda_is_a_clear_error(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "gpu"])
    assert exc.value.code == 2 and "--suite gpu needs a CUDA device" in capsys.readouterr().err
