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
        for key, style in ((metric, "-"), (f"val_{metric}", "--"), (f"val_calibrated_{metric}", ":")):
            if history.get(key):
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        for start in phase_starts[1:]:
            ax.axvline(start + 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    save_figure(fig, dest)


def reliability_diagram(before: dict, after: dict, dest: Path, title: str = "test split") -> None:
    """Accuracy against confidence per bin, before and after temperature scaling (`temperature.reliability` tables)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    largest = max(max(before["count"]), max(after["count"]), 1)
    for table, name, style, marker in ((before, "before", "--", "o"), (after, "after temperature", "-", "s")):
        points = [(c, a, n) for c, a, n in zip(table["confidence"], table["accuracy"], table["count"]) if c is not None]
        line, = ax.plot([c for c, _, _ in points], [a for _, a, _ in points], style, linewidth=1, label=f"{name} (ECE {table['ece']:.3f})")
        ax.scatter([c for c, _, _ in points], [a for _, a, _ in points], s=[12 + 250 * n / largest for _, _, n in points],
                   marker=marker, color=line.get_color(), alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({title}, {before['bins']} bins; marker area: images in the bin)", fontsize=10)
    ax.legend(loc="upper left")
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


#: Colour by runtime, marker by precision: the same target looks the same in every bench plot.
_BENCH_COLOURS = {"keras": "black", "onnx": "tab:blue", "openvino": "tab:purple", "tflite": "tab:orange"}
_BENCH_MARKERS = {"fp32": "o", "fp16": "s", "dynamic": "^", "int8": "D"}
_SPARE_MARKERS = ("v", "P", "X", "<", ">", "*", "h")


def _bench_styles(targets: Sequence[dict]) -> list[dict]:
    """A distinct (colour, marker, fill) per target: a second target of the same runtime and precision
    (another device, run or a reference model) gets a hollow marker, further ones other markers."""
    seen: dict[tuple[str, str], int] = {}
    styles = []
    for t in targets:
        colour = _BENCH_COLOURS.get(t["format"], "tab:green")
        marker = _BENCH_MARKERS.get(t["precision"], "P")
        repeat = seen[(colour, marker)] = seen.get((colour, marker), -1) + 1
        if repeat >= 2:
            marker = _SPARE_MARKERS[(repeat - 2) % len(_SPARE_MARKERS)]
        styles.append({"color": colour, "marker": marker, "markerfacecolor": "none" if repeat % 2 else colour, "markeredgecolor": colour})
    return styles


def _log_axis(ax, which: str, values: Sequence[float]) -> bool:
    """Put the `which` ('x' or 'y') axis of `ax` on a log scale, ticks at 1-2-5, when `values` span more than 10x."""
    import matplotlib.ticker as ticker

    values = [v for v in values if v > 0]
    if not values or max(values) / min(values) <= 10:
        return False
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
    return True


def bench_latency_distribution(targets: Sequence[dict], dest: Path) -> None:
    """Box plot of every timed batch-1 call per target (primary thread count): the spread, not just the median."""
    plt = _pyplot()
    first = [t["measurements"][0] for t in targets]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(first) + 1.5))
    ax.boxplot([m["samples_ms"] for m in first], orientation="horizontal", whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(first) + 1), [f"{label} (b{m['batch']}, {m['threads']} thr)" for label, m in zip(_bench_labels(targets), first)])
    ax.invert_yaxis()
    log = _log_axis(ax, "x", [v for m in first for v in m["samples_ms"]])
    ax.set_xlabel(f"latency per call (ms{', log scale' if log else ''}); whiskers p1-p99")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, dest)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points that nothing beats on both: faster and at least as accurate, by latency."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def bench_pareto(targets: Sequence[dict], dest: Path) -> None:
    """Accuracy (with its 95% Wilson interval on the test images) against median latency at the first
    batch size; one legend entry per target; the Pareto front joined when it has two points or more."""
    from .bench import accuracy_interval

    plt = _pyplot()
    points = [(t["measurements"][0]["latency_ms"]["p50"], t["accuracy"], accuracy_interval(t), label, style)
              for t, label, style in zip(targets, _bench_labels(targets), _bench_styles(targets)) if t["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(8, 5))
    for x, y, ci, label, style in points:
        yerr = None if ci is None else [[y - ci[0]], [ci[1] - y]]
        ax.errorbar([x], [y], yerr=yerr, linestyle="none", markersize=7, capsize=3, elinewidth=1, alpha=0.85, label=label, clip_on=False,
                    ecolor=style["color"], **style)
    front = pareto_front([(x, y) for x, y, *_ in points])
    if len(front) >= 2:
        ax.plot(*zip(*front), "--", color="grey", linewidth=1, zorder=0, label="Pareto front")
    if points:
        lows = [ci[0] if ci else y for _, y, ci, *_ in points]
        highs = [ci[1] if ci else y for _, y, ci, *_ in points]
        pad = max(0.05 * (max(highs) - min(lows)), 0.002)
        ax.set_ylim(max(0.0, min(lows) - pad), min(1.0, max(highs) + pad))
    log = _log_axis(ax, "x", [x for x, *_ in points])
    first = targets[0]["measurements"][0] if targets else {"batch": 1, "threads": 1}
    ax.set_xlabel(f"median latency per call, batch {first['batch']}, {first['threads']} threads (ms{', log scale' if log else ''})")
    sizes = sorted({t["accuracy_n"] for t in targets if accuracy_interval(t)})
    n = f", n={sizes[0]}" if len(sizes) == 1 else ""
    ax.set_ylabel("test accuracy" + (f" (95% Wilson interval{n})" if sizes else " (test image count not recorded: no interval)"))
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    save_figure(fig, dest)


def bench_throughput(targets: Sequence[dict], dest: Path) -> None:
    """Images per second against batch size, one line per target (primary thread count)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    sweeps = []
    for t, label, style in zip(targets, _bench_labels(targets), _bench_styles(targets)):
        threads = t["measurements"][0]["threads"]
        sweep = sorted((m["batch"], m["throughput_ips"]) for m in t["measurements"] if m["threads"] == threads)
        ax.plot(*zip(*sweep), label=label, **style)
        sweeps.extend(ips for _, ips in sweep)
    ax.set_xscale("log", base=2)
    batches = sorted({m["batch"] for t in targets for m in t["measurements"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    log = _log_axis(ax, "y", sweeps)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"throughput (images/s{', log scale' if log else ''})")
    ax.set_title(f"Throughput vs batch size ({targets[0]['measurements'][0]['threads']} threads)" if targets else "Throughput vs batch size")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
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
