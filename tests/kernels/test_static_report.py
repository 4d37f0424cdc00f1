"""bench/static_report.py: the sm_90 build of the benchmarked kernel variants, with their
resource usage read from the cubin (registers, stack, main-loop instruction mix)."""
import json
import subprocess
import sys

import pytest

from tests.kernels.sm90 import NO_TOOLCHAIN, ROOT

SCRIPT = r"""
import json, sys
sys.path.insert(0, "bench")
from triton.backends import backends
if "nvidia" not in backends:
    sys.exit(%d)
import static_report
print(json.dumps(static_report.build()))
""" % NO_TOOLCHAIN


@pytest.fixture(scope="module")
def report():
    import os
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode == NO_TOOLCHAIN:
        pytest.skip("this triton has no CUDA backend")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_benchmarked_kernel_builds_and_is_read(report):
    names = [r["kernel"] for r in report["kernels"]]
    assert len(names) == 27 and any("softmax fwd" in n for n in names)
    assert sum(n.startswith("triplet") for n in names) == 8
    for r in report["kernels"]:
        assert r["registers"] and r["main_loop_instructions"] > 0, r


def test_softmax_kernels_use_tensor_cores_and_do_not_spill(report):
    for r in report["kernels"]:
        if r["kernel"].startswith("softmax"):
            assert r["main_loop_mix"].get("HGMMA", 0) > 0, r
            assert r["stack_bytes"] == 0 and r["spill_instructions"] == 0, r


def test_the_softmax_kernels_do_not_spill_and_are_set_against_the_yardstick(report):
    """Every softmax row carries its loop body over the yardstick's (bench/yardstick.py, a plain
    bf16 QKᵀ + online-LSE tile at the forward's tile size); the forward builds without spills."""
    (stick,) = [r for r in report["kernels"] if r["kernel"].startswith("yardstick")]
    assert stick["stack_bytes"] == 0 and stick["main_loop_mix"].get("HGMMA", 0) > 0, stick
    for r in report["kernels"]:
        if r["kernel"].startswith("softmax"):
            assert r["vs_yardstick"] == round(r["main_loop_instructions"] / stick["main_loop_instructions"], 2), r
        if r["kernel"].startswith("softmax fwd"):
            assert r["stack_bytes"] == 0 and r["spill_instructions"] == 0, r


def test_the_bf16_pair_margin_forward_does_not_spill(report):
    (fwd,) = [r for r in report["kernels"] if r["kernel"] == "pair-margin fwd euclidean bf16"]
    assert fwd["stack_bytes"] == 0 and fwd["main_loop_mix"].get("HGMMA", 0) > 0, fwd


@pytest.mark.parametrize("inputs", ["bf16", "fp32", "tf32"])
def test_the_pair_margin_kernels_do_not_spill(report, inputs):
    """bf16, float32 exact ("ieee": FFMA tile products) and tf32 (tensor cores): the tile sizes
    of default_blocks build without spills and without a stack frame (float32 spilled 0.9-5 KB
    at 64×64 / 4 warps, the bf16 backward 240-496 B at 64×64; per-tile count reductions of
    4 boolean tiles went through 8 B of local memory in the tf32 forward)."""
    rows = [r for r in report["kernels"] if r["kernel"].startswith("pair-margin") and r["kernel"].endswith(inputs)]
    assert len(rows) == 3
    for r in rows:
        assert r["stack_bytes"] == 0 and r["spill_instructions"] == 0, r
        assert (r["main_loop_mix"].get("HGMMA", 0) + r["main_loop_mix"].get("HMMA", 0) > 0) == (inputs != "fp32"), r


def test_the_triplet_kernels_do_not_spill(report):
    """The distance-tile kernels at the tiles and warps of kernels/triplet._tile_blocks per input
    type (at 64×64 on 4 warps batch-hard spilled 304 B in float32, 136 B in tf32, 24 B in bf16)
    and the sorted path's search kernels."""
    rows = [r for r in report["kernels"] if r["kernel"].startswith("triplet")]
    assert len(rows) == 8
    for r in rows:
        assert r["stack_bytes"] == 0 and r["spill_instructions"] == 0, r
    for r in rows:
        if "batch-hard" in r["kernel"] and not r["kernel"].endswith("fp32"):
            mix = r["main_loop_mix"]
            assert mix.get("HGMMA", 0) + mix.get("HMMA", 0) > 0, r   # tensor cores for bf16 and tf32


def test_the_triplet_rows_fill_the_gpu_at_b65536(report):
    rows = [r for r in report["kernels"] if r["kernel"].startswith("triplet")]
    assert all(r["programs_per_launch_b65536"] >= 2 * 132 for r in rows), rows


def test_triplet_launches_at_b65536_fill_the_gpu_and_scale_with_the_chunks():
    """Every Triton launch of a triplet forward or backward at B = N = 65536 has ≥ 2 programs
    per SM of a 132-SM GPU, and a call makes O(B / chunk) launches (the launch code run on
    meta tensors, bench/static_report.triplet_launches)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import static_report
    from fastcontrast.kernels import triplet as kt

    B = 65536
    chunks = -(-B // kt._chunk_rows(B, B, kt.CHUNK_ELEMENTS))
    assert chunks == 256
    summary = static_report.triplet_launch_summary(B)
    assert {row["case"] for row in summary} == set(static_report.TRIPLET_LAUNCH_CASES)
    for row in summary:
        assert row["launches"] <= 3 * chunks + 3, row
        for name, k in row["kernels"].items():
            assert k["min_programs"] >= 2 * 132, (row["case"], row["direction"], name, k)
    window = [row for row in summary if row["case"] == "semihard" and row["direction"] == "fwd"][0]
    assert window["kernels"]["_window_forward_kernel"] == dict(launches=chunks, min_programs=256 * 16,
                                                               max_programs=256 * 16)


def test_the_ntxent_forward_per_tile_of_work(report):
    """NT-Xent's forward per tile of work: the LSE loop plus the positive pass's loop times its
    tile visits per LSE tile (label-sorted rows: about 1/C of the tiles for C classes), within
    2× the yardstick at B = 16384 for SimCLR's view labels and for ten classes."""
    rows = {r["kernel"]: r for r in report["kernels"]}
    lse = rows["softmax fwd ntxent dot bf16"]["main_loop_instructions"]
    pos = rows["softmax fwd ntxent positive pass dot bf16"]["main_loop_instructions"]
    est = {(r["B"], r["labels"]): r for r in report["ntxent_per_tile"]}
    views = est[(16384, "views (2 rows per label)")]  # 128 sorted rows = 64 labels: two tiles of 64
    assert views["positive_tiles"] == 2 * 128 and views["lse_tiles"] == 128 * 256, views
    for (B, labels), r in est.items():
        assert r["instructions_per_tile"] == round(lse + r["positive_tiles"] / r["lse_tiles"] * pos, 1), r
        if B == 16384:
            assert r["vs_yardstick"] <= 2.0, r
