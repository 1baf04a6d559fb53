"""PNG figures, drawn headless with matplotlib's Agg backend and written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, dest: Path) -> None:
    plt = _pyplot()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def training_curves(history: dict[str, list[float]], phase_starts: Sequence[int], dest: Path) -> None:
    """Accuracy and loss per epoch, train and validation, with the fine-tuning start marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if history.get(key):
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        for start in phase_starts[1:]:
            ax.axvline(start + 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    save_figure(fig, dest)


def confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], dest: Path, title: str = "test split") -> None:
    plt = _pyplot()
    import numpy as np

    cm = np.asarray(cm)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({title})")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    save_figure(fig, dest)


def _bench_labels(targets: Sequence[dict]) -> list[str]:
    """'onnx-int8 CPU' per target, prefixed with its run when the bench covers several runs."""
    several = len({t["run"] for t in targets}) > 1
    return [f"{Path(t['run']).name + '/' if several else ''}{t['name']} {t['device']}" for t in targets]


def bench_latency_distribution(targets: Sequence[dict], dest: Path) -> None:
    """Box plot of every timed batch-1 call per target (primary thread count): the spread, not just the median."""
    plt = _pyplot()
    first = [t["measurements"][0] for t in targets]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(first) + 1.5))
    ax.boxplot([m["samples_ms"] for m in first], orientation="horizontal", whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(first) + 1), [f"{label} (b{m['batch']}, {m['threads']} thr)" for label, m in zip(_bench_labels(targets), first)])
    ax.invert_yaxis()
    ax.set_xlabel("latency per call (ms); whiskers p1-p99")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, dest)


def bench_pareto(targets: Sequence[dict], dest: Path) -> None:
    """Accuracy against median batch-1 latency; the Pareto front (nothing both faster and more accurate) joined."""
    plt = _pyplot()
    points = [(t["measurements"][0]["latency_ms"]["p50"], t["accuracy"], label) for t, label in zip(targets, _bench_labels(targets)) if t["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(8, 5))
    for x, y, label in points:
        ax.scatter(x, y, s=30)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front, best = [], -1.0
    for x, y, _ in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    if front:
        ax.plot(*zip(*front), "--o", color="grey", markerfacecolor="none", markersize=10, label="Pareto front")
        ax.legend()
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    save_figure(fig, dest)


def bench_throughput(targets: Sequence[dict], dest: Path) -> None:
    """Images per second against batch size, one line per target (primary thread count)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for t, label in zip(targets, _bench_labels(targets)):
        threads = t["measurements"][0]["threads"]
        sweep = sorted((m["batch"], m["throughput_ips"]) for m in t["measurements"] if m["threads"] == threads)
        ax.plot(*zip(*sweep), marker="o", label=label)
    ax.set_xscale("log", base=2)
    batches = sorted({m["batch"] for t in targets for m in t["measurements"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title("Throughput vs batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, dest)


def layer_sqnr(sqnr_db: dict[str, dict[str, float]], layers: Sequence[str], images: str, dest: Path) -> None:
    """int8 against float along the network: one line of per-layer SQNR (dB) per format."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) + 2), 4.5))
    for format, values in sqnr_db.items():
        ax.plot([layers.index(layer) for layer in values], list(values.values()), marker="o", label=format)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_ylabel("SQNR (dB), higher is closer to float")
    ax.set_title(f"int8 against float, layer by layer ({images})")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, dest)
