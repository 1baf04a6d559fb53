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
