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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .data import SplitManifest, load_split
from .decision import DecisionRule
from .errors import VggEdgeError
from .fileio import read_json


DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path))
        for name in ("model.keras", "labels.json", "config.json", "split.json"):
            if not (run.path / name).is_file():
                raise VggEdgeError(f"{run.path / name}: missing; {run.path} is not a complete run directory (run `vgg-edge train --out {run.path}`)")
        return run

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @cached_property
    def config(self) -> dict:
        return read_json(self.path / "config.json")

    @cached_property
    def labels(self) -> list[str]:
        return list(read_json(self.path / "labels.json")["labels"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @cached_property
    def split(self) -> SplitManifest:
        return SplitManifest.load(self.path / "split.json")

    @cached_property
    def decision(self) -> DecisionRule:
        """How the run's probabilities become decisions (argmax for runs written before operating points)."""
        path = self.path / DECISION_FILE
        rule = read_json(path).get("rule") if path.is_file() else None
        try:
            return DecisionRule.from_record(self.labels, rule)
        except VggEdgeError as exc:
            raise VggEdgeError(f"{path}: {exc}; re-run `vgg-edge train`") from None

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
