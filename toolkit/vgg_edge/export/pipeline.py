"""One export: convert, run the result in its edge runtime on the recorded test split, gate, publish.

For every (format, precision) the flow is the same, whatever the format:

1. convert into a scratch folder with the exporter's first settings (`Exporter.attempts`);
2. write a provisional manifest and open the folder exactly as the edge device will
   (`runtime.read_manifest` verifies the hashes, `runtime.Predictor` feeds the pixels);
3. compare with the Keras model on the same test images (`parity.compare`) and check the
   precision's bounds (`parity.Gate`); a quantized model that misses them is converted again
   with the next settings, and every attempt is recorded;
4. write the final manifest last, then swap the folder in atomically: an accepted artifact at
   `<format>-<precision>/`, a failed one at `<format>-<precision>.rejected/` (the accepted
   folder, if any, is left untouched).

`ExportJob` loads the run, the Keras reference predictions and the calibration set once, so
exporting every format and precision pays for them once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import VggEdgeError
from ..fileio import atomic_dir, sha256_file
from ..run import RunDir
from ..runtime import FORMATS, Predictor, read_manifest
from ..ui import console, progress
from . import calibration as calib
from . import manifest as manifest_io
from .base import PRECISIONS, Attempt, Exporter, SourceModel
from .onnx import OnnxExporter
from .openvino import OpenvinoExporter
from .parity import Gate, compare
from .tflite import TfliteExporter

EXPORTERS: dict[str, type[Exporter]] = {"tflite": TfliteExporter, "onnx": OnnxExporter, "openvino": OpenvinoExporter}
DEFAULT_CALIBRATION_SIZE = 200
BATCH = 32  # parity batch; ORT dynamic quantization scales activations per batch, so it is recorded


@dataclass
class ExportResult:
    format: str
    precision: str
    artifact: Path  # the published folder (`.rejected` when the gate failed)
    accepted: bool
    manifest: dict

    @property
    def parity(self) -> dict:
        return self.manifest["parity"]

    @property
    def failures(self) -> list[str]:
        return self.manifest["gate"]["failures"]


def default_root(run_dir: Path) -> Path:
    """`exported/<run name>/`: where a run's artifacts go unless --out says otherwise."""
    return Path("exported") / RunDir(Path(run_dir)).name


def default_out(run_dir: Path, format: str, precision: str) -> Path:
    return default_root(run_dir) / f"{format}-{precision}"


def rejected_name(dest: Path) -> Path:
    return dest.with_name(dest.name + ".rejected")


class ExportJob:
    """A run opened for exporting; the heavy inputs are loaded on first use and shared."""

    def __init__(self, run_dir: str | Path, calibration_size: int | None = None, calibration_seed: int = 0):
        self.run = RunDir.open(run_dir)
        self.calibration_size = calibration_size
        self.calibration_seed = calibration_seed
        self._scratch = Path(tempfile.mkdtemp(prefix="vgg-edge-export-"))

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> ExportJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @cached_property
    def source(self) -> SourceModel:
        validation = self._images("val") if self.run.split.files("val") else self._images("train")
        return SourceModel(self.run.load_model(), self.run.image_size, validation, self._scratch)

    @cached_property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self._images("test")

    @cached_property
    def reference(self) -> np.ndarray:
        """The Keras model's probabilities on the test split: what every export is held to."""
        from ..training import batched_predict

        return batched_predict(self.source.model, self.test[0], BATCH, "keras reference")

    @cached_property
    def calibration(self) -> calib.CalibrationSet:
        size = self.calibration_size or DEFAULT_CALIBRATION_SIZE
        return calib.load(self.run.split, self.run.image_size, size, self.calibration_seed)

    def _images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        with progress(f"decode {split}", len(self.run.split.files(split))) as advance:
            return self.run.load_images(split, on_progress=advance)

    def export(self, format: str, precision: str, out: Path | None = None, max_drop: float = 1.0) -> ExportResult:
        if format not in EXPORTERS:
            raise VggEdgeError(f"--format {format}: unknown; use one of {', '.join(FORMATS)} or all")
        if precision not in PRECISIONS:
            raise VggEdgeError(f"--precision {precision}: unknown; use one of {', '.join(PRECISIONS)}")
        if self.calibration_size is not None and precision != "int8":
            console.print(f"[yellow]warning:[/] {format}-{precision} uses no calibration data; --calibration-size {self.calibration_size} is ignored")
        exporter = EXPORTERS[format]()
        dest = Path(out) if out else default_out(self.run.path, format, precision)
        gate = Gate.for_precision(precision, max_drop)
        reader = calib.CalibrationReader(self.calibration) if precision == "int8" else None
        attempts = exporter.attempts(precision, max_drop)
        tried: list[dict] = []
        best: tuple[Path, dict, list[str]] | None = None
        folders = [self._scratch / f"{format}-{precision}-{i}" for i in range(len(attempts))]
        for i, (attempt, folder) in enumerate(zip(attempts, folders)):
            doc, failures = self._attempt(exporter, folder, precision, reader, attempt, gate)
            tried.append({"attempt": attempt.name, "passed": not failures, "failures": failures, **_headline(doc["parity"])})
            if best is None or not failures or _worst_drop(doc["parity"]) < _worst_drop(best[1]["parity"]):
                best = (folder, doc, failures)
            if not failures:
                break
            if i + 1 < len(attempts):
                console.print(f"[yellow]{format}-{precision} ({attempt.name}) missed the gate:[/] {'; '.join(failures)}; trying {attempts[i + 1].name}")
        folder, doc, failures = best
        accepted = not failures
        doc["status"] = "accepted" if accepted else "rejected"
        doc["attempts"] = tried
        doc = manifest_io.write(folder, doc)
        published = _publish(folder, dest if accepted else rejected_name(dest))
        if accepted:
            shutil.rmtree(rejected_name(dest), ignore_errors=True)  # a stale failure report would contradict the good artifact
        for scratch in folders:  # the attempts not kept
            shutil.rmtree(scratch, ignore_errors=True)
        return ExportResult(format, precision, published, accepted, doc)

    def _attempt(self, exporter: Exporter, folder: Path, precision: str, reader, attempt: Attempt, gate: Gate) -> tuple[dict, list[str]]:
        """Convert with one set of settings and measure it; returns its provisional manifest and missed bounds."""
        name = f"{exporter.format}-{precision}"
        started = time.perf_counter()
        with console.status(f"[bold]converting {name}[/] ({attempt.name})"):
            conversion = exporter.convert(self.source, folder, precision, reader, attempt)
        seconds = time.perf_counter() - started
        doc = {
            "format": exporter.format, "precision": precision, "model_file": exporter.model_file,
            "labels": self.run.labels,
            "input": {**conversion.input, "layout": "NHWC", "range": [0, 255]},
            "output": conversion.output,
            "status": "rejected",  # provisional: only the gate may accept it
            "preprocessing": manifest_io.PREPROCESSING,
            "source": self.source_record,
            "calibration": self.calibration.record() if reader else None,
            "conversion": {"attempt": attempt.name, "settings": conversion.settings, "seconds": round(seconds, 2)},
            "gate": {"bounds": gate.record(), "failures": []},
            "parity": None,
            "versions": manifest_io.tool_versions(),
        }
        doc = manifest_io.write(folder, doc)
        predictor = Predictor(read_manifest(folder))  # the edge device's own loading and input handling
        pixels, y = self.test
        with progress(f"parity {name}", len(pixels)) as advance:
            probs = []
            for start in range(0, len(pixels), BATCH):
                probs.append(predictor.predict(pixels[start:start + BATCH]))
                advance(len(probs[-1]))
        doc["parity"] = compare(y, self.reference, np.concatenate(probs), self.run.labels) | {"batch_size": BATCH}
        failures = gate.failures(doc["parity"])
        doc["gate"]["failures"] = failures
        return doc, failures

    @cached_property
    def source_record(self) -> dict:
        """Where the artifact comes from: the run, its model's and split's hashes."""
        return {
            "run": str(self.run.path.resolve()), "run_name": self.run.name, "model_file": "model.keras",
            "model_sha256": sha256_file(self.run.model_path), "split_sha256": sha256_file(self.run.path / "split.json"),
            "parity_split": "test", "test_images": int(len(self.test[1])),
        }


def export_many(
    run_dir: str | Path, formats: Sequence[str], precisions: Sequence[str], out: Path | None = None,
    max_drop: float = 1.0, calibration_size: int | None = None, calibration_seed: int = 0,
) -> list[ExportResult]:
    """Every format x precision; `out` is the parent folder (default `exported/<run>/`)."""
    with ExportJob(run_dir, calibration_size, calibration_seed) as job:
        root = Path(out) if out else default_root(job.run.path)
        return [job.export(f, p, root / f"{f}-{p}", max_drop) for f in formats for p in precisions]


def export_run(
    run_dir: str | Path, format: str, precision: str, out: Path | None = None,
    max_drop: float = 1.0, calibration_size: int | None = None, calibration_seed: int = 0,
) -> ExportResult:
    """Export one run to one format and precision; `out` is the artifact folder (default `exported/<run>/<format>-<precision>/`)."""
    with ExportJob(run_dir, calibration_size, calibration_seed) as job:
        return job.export(format, precision, out, max_drop)


def _publish(folder: Path, dest: Path) -> Path:
    """Move the finished folder's files into `dest`, swapped in whole."""
    with atomic_dir(dest) as tmp:
        for item in folder.iterdir():
            shutil.move(str(item), tmp / item.name)
    return dest


def _headline(parity: dict) -> dict:
    keys = ("accuracy", "accuracy_drop_pp", "flip_rate", "max_abs_prob_diff")
    return {k: parity[k] for k in keys}


def _worst_drop(parity: dict) -> float:
    """The largest of the accuracy and per-class sensitivity drops: how a rejected attempt is ranked."""
    return max([parity["accuracy_drop_pp"], *(d for d in parity["sensitivity_drop_pp"].values() if d is not None)])
