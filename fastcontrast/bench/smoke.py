"""One kernel variant at a small shape, Triton against the PyTorch path: stage 0 of
bench/gpu_run.py, run once per (variant, dtype) in a fresh process so that an illegal memory
access or a compile error is reported by name and does not take the other variants down.

    python -m fastcontrast.bench.smoke VARIANT DTYPE [DEVICE [ROWS]]

(ROWS: batch rows, 200 by default; the CPU rehearsal uses a few dozen.)

prints one JSON line: {"variant", "family", "dtype", "status": "ok" | "mismatch" | "error",
"value_err", "grad_err", "seconds", "error"}. Relative errors are ‖a − b‖ / ‖b‖ against the
PyTorch path in float64 on the same inputs.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import torch

VARIANTS = {  # name -> (family, loss call)
    "supcon": ("softmax", lambda fc, x, y, b: fc.supcon_loss(x, y, temperature=0.2, backend=b)),
    "ntxent": ("softmax", lambda fc, x, y, b: fc.nt_xent_loss(x, y, temperature=0.3, backend=b)),
    "infonce-symmetric": ("softmax", lambda fc, x, y, b: fc.info_nce_loss(x[: len(x) // 2], x[len(x) // 2:],
                                                                          temperature=0.1, symmetric=True,
                                                                          backend=b)),
    "supcon-euclidean": ("softmax", lambda fc, x, y, b: fc.supcon_loss(x, y, distance="euclidean", normalize=True,
                                                                       backend=b)),
    # the margin losses on the raw rows: 16-bit normalized rows would round differently on the
    # two paths and flip mining decisions, which is not what this checks
    "contrastive": ("pair_margin", lambda fc, x, y, b: fc.contrastive_loss(x, y, pos_margin=2.0, neg_margin=7.0,
                                                                           backend=b, normalize=None)),
    "triplet-semihard": ("triplet", lambda fc, x, y, b: fc.triplet_margin_loss(
        x, y, mining="semihard", margin=0.5, miner_margin=1.0, backend=b, normalize=None)),
    "triplet-batch-all": ("triplet", lambda fc, x, y, b: fc.triplet_margin_loss(x, y, mining="batch_all",
                                                                                margin=0.5, backend=b, normalize=None)),
    "triplet-batch-hard": ("triplet", lambda fc, x, y, b: fc.triplet_margin_loss(x, y, mining="batch_hard",
                                                                                 margin=0.5, backend=b, normalize=None)),
    "triplet-semihard-tfa": ("triplet", lambda fc, x, y, b: fc.triplet_margin_loss(
        x, y, mining="semihard_tfa", margin=1.0, backend=b, normalize=None)),
    # the pair-based losses: the pair-weighted softmax kernels, kernels/lifted.py and the
    # pair-margin kernels with MarginLoss's β shift
    "multi-similarity": ("softmax", lambda fc, x, y, b: fc.multi_similarity_loss(x, y, backend=b)),
    "circle": ("softmax", lambda fc, x, y, b: fc.circle_loss(x, y, backend=b)),
    "lifted": ("softmax", lambda fc, x, y, b: fc.lifted_structure_loss(x, y, backend=b)),
    "margin": ("pair_margin", lambda fc, x, y, b: fc.margin_loss(x, y, backend=b)),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# float16/bfloat16 tiles round their operands; fp32 dots may run in tf32 if PyTorch allows it
TOLERANCE = {"float32": 2e-3, "float16": 3e-2, "bfloat16": 6e-2}


def run(variant: str, dtype_name: str, device: str, rows: int = 200) -> dict:
    import fastcontrast as fc
    family, call = VARIANTS[variant]
    out = {"variant": variant, "family": family, "dtype": dtype_name, "device": device}
    started = time.perf_counter()
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(rows, 72 if rows >= 100 else 20, generator=gen).to(DTYPES[dtype_name])
        y = torch.randint(0, 7, (rows,), generator=gen)
        xd, yd = x.to(device).detach().clone().requires_grad_(), y.to(device)
        loss = call(fc, xd, yd, "triton")
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        xr = x.double().requires_grad_()
        ref = call(fc, xr, y, "torch")
        ref.backward()
        rel = lambda a, b: float((a.double().cpu() - b).norm() / b.norm().clamp_min(1e-30))  # noqa: E731
        out["value_err"] = rel(loss.detach().reshape(1), ref.detach().reshape(1))
        out["grad_err"] = rel(xd.grad, xr.grad)
        finite = bool(torch.isfinite(loss).all()) and bool(torch.isfinite(xd.grad).all())
        ok = finite and max(out["value_err"], out["grad_err"]) <= TOLERANCE[dtype_name]
        out["status"] = "ok" if ok else "mismatch"
    except Exception as exc:  # a compile error, an illegal memory access: reported by name
        out["status"] = "error"
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        out["traceback"] = traceback.format_exc()[-4000:]
    out["seconds"] = time.perf_counter() - started
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3, 4) or argv[0] not in VARIANTS or argv[1] not in DTYPES:
        print(f"usage: python -m fastcontrast.bench.smoke {{{'|'.join(VARIANTS)}}} "
              f"{{{'|'.join(DTYPES)}}} [cpu|cuda [ROWS]]", file=sys.stderr)
        return 2
    device = argv[2] if len(argv) >= 3 else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = int(argv[3]) if len(argv) == 4 else 200
    print(json.dumps(run(argv[0], argv[1], device, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
