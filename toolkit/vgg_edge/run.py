"""The run directory: what `train` writes and every later command reads.

    runs/<name>/
      model.keras          inference model (raw RGB 0-255 in, probabilities out)
      labels.json          class names, in output order
      config.json          the full TrainConfig
      split.json           every file with its split, label and sha256 (the recorded test split)
      history.json         per-epoch metrics of both phases
      metrics.json         test-split metrics (accuracy, per-class sensitivity/specificity, AUC...)
      report.json          timings, selection (kept phase and epoch), calibration, mixed precision, augmentation
      decision.json        the decision rule (argmax or an operating point) and the temperature folded into the model
      curves.png, confusion_matrix.png, reliability.png

`vgg-edge import` writes the same layout for a model trained elsewhere (config.json then records
where it came from and its preprocessing; there is no history, report or plots). `RunDir.write`
is the one writer, `RunDir.open` the one reader; the file names are the constants below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .data import SplitManifest, load_split
from .decision import DecisionRule
from .errors import VggEdgeError
from .fileio import atomic_dir, atomic_path, read_json, write_json

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.json"
DECISION_FILE = "decision.json"
REQUIRED = (MODEL_FILE, LABELS_FILE, CONFIG_FILE, SPLIT_FILE)


@dataclass
class RunContents:
    """Everything a run directory holds, before it is written."""

    model: Any  # the Keras inference model: raw RGB 0-255 in, probabilities out
    labels: list[str]
    config: dict
    split: SplitManifest
    decision: dict  # {"rule": DecisionRule.record(), "temperature": float}
    metrics: dict
    history: list[dict] | None = None  # training phases; None for an imported model
    report: dict | None = None


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path))
        for name in REQUIRED:
            if not (run.path / name).is_file():
                raise VggEdgeError(f"{run.path / name}: missing; {run.path} is not a complete run directory (run `vgg-edge train --out {run.path}`)")
        return run

    @classmethod
    def write(cls, out: str | Path, contents: RunContents, figures: Callable[[Path], None] | None = None) -> RunDir:
        """Write every file into a temporary folder, then swap it in whole; `figures(folder)` adds the plots."""
        with atomic_dir(Path(out)) as tmp:
            with atomic_path(tmp / MODEL_FILE) as model_tmp:
                contents.model.save(model_tmp)
            write_json(tmp / LABELS_FILE, {"labels": contents.labels})
            write_json(tmp / CONFIG_FILE, contents.config)
            contents.split.save(tmp / SPLIT_FILE)
            write_json(tmp / METRICS_FILE, contents.metrics)
            write_json(tmp / DECISION_FILE, contents.decision)
            if contents.history is not None:
                write_json(tmp / HISTORY_FILE, {"phases": contents.history})
            if contents.report is not None:
                write_json(tmp / REPORT_FILE, contents.report)
            if figures:
                figures(tmp)
        return cls(Path(out))

    @staticmethod
    def looks_like(path: Path) -> bool:
        """Whether `path` is (meant to be) a run directory: it has a model file."""
        return (path / MODEL_FILE).is_file()

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def split_path(self) -> Path:
        return self.path / SPLIT_FILE

    @cached_property
    def config(self) -> dict:
        return read_json(self.path / CONFIG_FILE)

    @cached_property
    def labels(self) -> list[str]:
        return list(read_json(self.path / LABELS_FILE)["labels"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def preprocess(self) -> str:
        """The preprocessing baked into the model (model.PREPROCESSING); runs trained here use vgg16's."""
        return self.config.get("preprocess", "vgg16")

    @cached_property
    def split(self) -> SplitManifest:
        return SplitManifest.load(self.path / SPLIT_FILE)

    @cached_property
    def metrics(self) -> dict:
        """The test-split metrics recorded when the run was written (empty if the file is gone)."""
        path = self.path / METRICS_FILE
        return read_json(path) if path.is_file() else {}

    @cached_property
    def decision(self) -> DecisionRule:
        """How the run's probabilities become decisions (argmax for runs written before operating points)."""
        path = self.path / DECISION_FILE
        rule = read_json(path).get("rule") if path.is_file() else None
        try:
            return DecisionRule.from_record(self.labels, rule)
        except VggEdgeError as exc:
            raise VggEdgeError(f"{path}: {exc}; re-run `vgg-edge train`") from None

    @property
    def temperature(self) -> float:
        """The temperature folded into the model's last layer at training (1.0: none, or a run from before calibration)."""
        path = self.path / DECISION_FILE
        return float(read_json(path).get("temperature", 1.0)) if path.is_file() else 1.0

    def load_model(self):
        """The Keras inference model. `safe_mode` stays on: loading never unpickles code."""
        import keras

        try:
            return keras.saving.load_model(self.model_path, safe_mode=True, compile=False)
        except Exception as exc:
            raise VggEdgeError(f"{self.model_path}: cannot load the model ({str(exc).splitlines()[0]}); re-run `vgg-edge train`") from None

    def load_images(self, split: str, limit: int | None = None, on_progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (uint8) and integer labels of a recorded split, hashes verified."""
        loaded, y = load_split(self.split, split, self.image_size, on_progress=on_progress)
        if loaded.failures:
            first = next(iter(loaded.failures.values()))
            raise VggEdgeError(f"{len(loaded.failures)} recorded {split} images no longer decode: {first}")
        pixels = loaded.pixels
        if limit is not None:
            pixels, y = pixels[:limit], y[:limit]
        return pixels, y
