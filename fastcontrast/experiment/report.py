"""Tables (markdown and JSON) and plots (PCA of test embeddings, accuracy vs batch size and,
for a temperature sweep, accuracy vs τ)."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from .losses import BASELINE, TEMPERATURE_LOSSES, TITLES


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; the deviation is None for a single value."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_std of no values")
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else None)


def fmt_acc(cell: dict) -> str:
    if not cell.get("accuracies"):
        return "—"
    m, s = cell["accuracy_mean"], cell["accuracy_std"]
    if s is None:
        return f"{100 * m:.2f} (1 seed)"
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def row_title(loss: str, temperature: float | None = None) -> str:
    """Title of a table row or plot line: the loss, with its τ when one is given."""
    return TITLES[loss] if temperature is None else f"{TITLES[loss]}, τ = {temperature:g}"


def temperatures(settings: dict) -> list[float]:
    """The τ values a run used for its temperature losses (older runs: --temperature only)."""
    return list(settings.get("temperatures") or [settings["temperature"]])


def is_sweep(settings: dict) -> bool:
    return bool(settings.get("temperatures"))


def rows(settings: dict) -> list[tuple[str, float | None]]:
    """(loss, τ) per table row: each temperature loss once per τ, the others once (τ None)."""
    taus = temperatures(settings)
    return [(loss, tau) for loss in settings["losses"]
            for tau in (taus if loss in TEMPERATURE_LOSSES else [None])]


def cell_key(cell: dict) -> tuple:
    # results written before the τ sweep existed carry no "temperature"; their single τ is
    # settings["temperature"], which by_row() supplies
    return cell["loss"], cell.get("temperature"), cell["batch_size"]


def by_row(cells: list[dict], settings: dict) -> dict:
    taus = temperatures(settings)
    out = {}
    for c in cells:
        loss, tau, bs = cell_key(c)
        if tau is None and loss in TEMPERATURE_LOSSES and len(taus) == 1:
            tau = taus[0]
        out[(loss, tau, bs)] = c
    return out


def summary_table(cells: list[dict], settings: dict) -> str:
    """(Loss, τ) × batch size grid of test accuracy (%), mean ± std over seeds; τ appears in
    the row title only when the run swept it."""
    found = by_row(cells, settings)
    batch_sizes = settings["batch_sizes"]
    head = "| loss | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |"
    lines = [head, "|" + "---|" * (len(batch_sizes) + 1)]
    for loss, tau in rows(settings):
        row = [fmt_acc(found.get((loss, tau, b), {})) for b in batch_sizes]
        title = row_title(loss, tau if is_sweep(settings) else None)
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def temperature_table(cells: list[dict], settings: dict) -> str:
    """Temperature loss × batch size rows, one column per τ (test accuracy %, mean ± std)."""
    found = by_row(cells, settings)
    taus = temperatures(settings)
    lines = ["| loss | batch | " + " | ".join(f"τ = {t:g}" for t in taus) + " |",
             "|---|---:|" + "---|" * len(taus)]
    for loss in settings["losses"]:
        if loss not in TEMPERATURE_LOSSES:
            continue
        for b in settings["batch_sizes"]:
            row = [fmt_acc(found.get((loss, t, b), {})) for t in taus]
            lines.append(f"| {TITLES[loss]} | {b} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def detail_table(cells: list[dict]) -> str:
    lines = ["| loss | τ | batch | lr | seeds | test accuracy % | stage 1 s | stage 2 s "
             "| stage-1 peak memory | stage-2 peak memory |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        tau = "—" if c.get("temperature") is None else f"{c['temperature']:g}"
        lines.append(
            f"| {TITLES[c['loss']]} | {tau} | {c['batch_size']} | {c['lr']:g} | "
            f"{len(c['accuracies'])} | "
            f"{fmt_acc(c)} | {c['stage1_s_mean']:.1f} | {c['stage2_s_mean']:.1f} | "
            f"{fmt_bytes(c['peak_bytes_max'])} | {fmt_bytes(c.get('stage2_peak_bytes_max'))} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    s = report["settings"]
    parts = [
        f"# Two-stage contrastive study: {report['dataset']['name']}",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Machine: {report['machine']['device_name']}, {report['machine']['cpu']}, "
        f"torch {report['machine']['torch']}, fastcontrast {report['machine']['fastcontrast']}  ",
        f"Data: {report['dataset']['train']} train / {report['dataset']['test']} test examples "
        f"from {report['dataset']['source']}  ",
        f"Stage 1: {s['epochs']} epochs, Adam, learning rate per batch size; stage 2: "
        f"{s['classifier_epochs']} epochs, batch {s['classifier_batch_size']}, "
        f"lr {s['classifier_lr']:g}; the baseline trains {s['epochs']} epochs at each batch size "
        f"and learning rate. Loss conventions: {s['semantics']}; margin {s['margin']:g}, "
        + (f"temperatures {', '.join(f'{t:g}' for t in temperatures(s))} (swept for "
           f"{', '.join(TITLES[n] for n in TEMPERATURE_LOSSES)})" if is_sweep(s)
           else f"temperature {s['temperature']:g}")
        + f". Seeds: {', '.join(map(str, s['seeds']))}.",
        "",
        "Test accuracy (%), mean ± std over seeds:",
        "",
        summary_table(report["results"], s),
        "",
    ]
    if is_sweep(s) and any(n in TEMPERATURE_LOSSES for n in s["losses"]):
        parts += ["Test accuracy (%) by temperature τ, mean ± std over seeds:", "",
                  temperature_table(report["results"], s), ""]
    parts += [
        "Per configuration (times are per seed, mean; peak memory is the largest over seeds, "
        "per stage: "
        + ("peak CUDA memory allocated" if report["machine"]["device"].startswith("cuda")
           else "peak resident-set growth of the process during the stage, sampled every 2 ms")
        + "; stage 1 is the training with the loss, or the baseline's training):",
        "",
        detail_table(report["results"]),
    ]
    short = [c for c in report["results"] if c.get("incomplete")]
    if short:
        parts += ["", "Fewer seeds than asked (the run stopped first): "
                  + ", ".join(f"{row_title(c['loss'], c.get('temperature') if is_sweep(s) else None)}"
                              f" at batch {c['batch_size']} "
                              f"({len(c['accuracies'])} seeds)" for c in short) + "."]
    if report.get("missing"):
        parts += ["", "Not run (the run stopped first): "
                  + ", ".join(f"{row_title(m['loss'], m.get('temperature') if is_sweep(s) else None)}"
                              f" at batch {m['batch_size']}"
                              for m in report["missing"]) + "."]
    return "\n".join(parts) + "\n"


def write_tables(report: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
        f.write("\n")
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(markdown(report))


def pca_2d(train: np.ndarray | None, test: np.ndarray) -> np.ndarray:
    """Project test onto the first two principal axes (fitted on train if given)."""
    fit = test if train is None else train
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return (test - mean) @ vt[:2].T


def plot_pca(embeddings: dict, labels: np.ndarray, class_names: list[str], title: str,
             path: str) -> None:
    """One panel per loss (keys: loss names or row titles): test embeddings projected on
    their first two principal axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(embeddings)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes.flat, names):
        xy = embeddings[name]
        for c in range(len(class_names)):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.5, color=cmap(c % 10),
                       label=class_names[c], linewidths=0)
        ax.set_title(TITLES.get(name, name), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("PC1", fontsize=8)
        ax.set_ylabel("PC2", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="center right", markerscale=4, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(cells: list[dict], losses: list[str], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    taus = sorted({c.get("temperature") for c in cells if c["loss"] in TEMPERATURE_LOSSES})
    for loss in losses:
        for tau in (taus if loss in TEMPERATURE_LOSSES and len(taus) > 1 else [None]):
            pts = sorted((c["batch_size"], c["accuracy_mean"], c["accuracy_std"] or 0.0)
                         for c in cells if c["loss"] == loss and c["accuracies"]
                         and (tau is None or c.get("temperature") == tau))
            if not pts:
                continue
            b, m, s = (np.array(v, dtype=float) for v in zip(*pts))
            style = "--" if loss == BASELINE else "-"
            ax.errorbar(b, 100 * m, yerr=100 * s, marker="o", linestyle=style, capsize=3,
                        label=row_title(loss, tau))
    ax.set_xscale("log", base=2)
    bss = sorted({c["batch_size"] for c in cells})
    ax.set_xticks(bss)
    ax.set_xticklabels([str(b) for b in bss])
    ax.set_xlabel("stage-1 batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_temperature(cells: list[dict], losses: list[str], title: str, path: str) -> None:
    """One panel per batch size: accuracy vs τ for each temperature loss (error bars: std
    over seeds); the losses without a temperature, if run, as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bss = sorted({c["batch_size"] for c in cells})
    fig, axes = plt.subplots(1, len(bss), figsize=(4.6 * len(bss), 4.0), squeeze=False,
                             sharey=True)
    for ax, bs in zip(axes.flat, bss):
        here = [c for c in cells if c["batch_size"] == bs and c["accuracies"]]
        for loss in losses:
            if loss in TEMPERATURE_LOSSES:
                pts = sorted((c["temperature"], c["accuracy_mean"], c["accuracy_std"] or 0.0)
                             for c in here if c["loss"] == loss)
                if pts:
                    t, m, s = (np.array(v, dtype=float) for v in zip(*pts))
                    ax.errorbar(t, 100 * m, yerr=100 * s, marker="o", capsize=3,
                                label=TITLES[loss])
            else:
                flat = [c for c in here if c["loss"] == loss]
                if flat:
                    ax.axhline(100 * flat[0]["accuracy_mean"], linewidth=1,
                               linestyle="--" if loss == BASELINE else ":",
                               color="black" if loss == BASELINE else None,
                               label=TITLES[loss])
        ax.set_xscale("log")
        ts = sorted({c["temperature"] for c in here if c["loss"] in TEMPERATURE_LOSSES})
        if ts:
            ax.set_xticks(ts)
            ax.set_xticklabels([f"{t:g}" for t in ts])
            ax.minorticks_off()
        ax.set_xlabel("temperature τ")
        ax.set_title(f"stage-1 batch size {bs}", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("test accuracy (%)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)
