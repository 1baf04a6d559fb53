"""One export: convert, run the result in its edge runtime on the recorded splits, gate, publish.

For every (format, precision) the flow is the same, whatever the format:

1. convert into a scratch folder with the exporter's first settings (`Exporter.attempts`);
2. write a provisional manifest and open the folder exactly as the edge device will
   (`manifest.read` verifies the hashes, `runtime.Predictor` feeds the pixels);
3. compare with the Keras model on the same images: the test split, plus the val split unless
   the converter tuned on it (`parity.compare`), and let the precision's gate judge them
   (`parity.Gate`: accepted, unproven or rejected); a quantized model that is rejected, or
   unproven with a drop its images do show, is converted again with the next settings, and every
   attempt is recorded;
4. when int8 still misses that way and the format supports it, diagnose the quantization layer by
   layer (`diagnose`) and try again keeping the 1, 2, 4, ... most sensitive layers in float (never
   all of them), until the gate passes: the fewest float layers that do, with their latency recorded;
5. write the final manifest last, then swap the folder in atomically: an accepted or unproven
   artifact at `<format>-<precision>/`, a rejected one at `<format>-<precision>.rejected/` (the
   published folder, if any, is left untouched).

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

from .. import formats, manifest
from ..errors import VggEdgeError, check_range
from ..fileio import atomic_dir, sha256_file
from ..model import batched_predict, preprocessing_record
from ..run import MODEL_FILE, RunDir
from ..runtime import Predictor
from ..ui import console, progress
from . import calibration as calib
from .base import PRECISIONS, Attempt, Exporter, SourceModel
from .diagnose import Diagnosis, diagnose
from .parity import STATUSES, Gate, Predictions, Verdict, compare

DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_MAX_DROP = 1.0  # percentage points: the non-inferiority margin of dynamic and int8 exports
BATCH = 32  # parity batch; ORT dynamic quantization scales activations per batch, so it is recorded
DIAGNOSIS_IMAGES = 16  # val images whose every layer is compared: millions of values a layer; every tensor is held in memory
LATENCY_RUNS = 20  # batch-1 calls timed per attempt: a rough cost of float fallbacks, not a benchmark


@dataclass
class ExportResult:
    format: str
    precision: str
    artifact: Path  # the published folder (`.rejected` when the gate rejected it)
    status: str  # accepted, unproven or rejected
    manifest: dict

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def published(self) -> bool:
        """Accepted or unproven: the artifact runs on devices (unproven is marked so wherever it is shown)."""
        return self.status != "rejected"

    @property
    def parity(self) -> dict:
        return self.manifest["parity"]

    @property
    def failures(self) -> list[str]:
        return self.manifest["gate"]["failures"]

    @property
    def unproven(self) -> list[str]:
        return self.manifest["gate"]["unproven"]


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
        if calibration_size is not None:
            check_range("--calibration-size", calibration_size, 1)
        self.run = RunDir.open(run_dir)
        self.calibration_size = calibration_size
        self.calibration_seed = calibration_seed
        self.diagnosis = Diagnosis(images=0, split="val", sqnr_db={})  # filled by the formats diagnosed so far
        self._scratch = Path(tempfile.mkdtemp(prefix="vgg-edge-export-"))

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> ExportJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @cached_property
    def source(self) -> SourceModel:
        return SourceModel(self.run.load_model(), self.run.image_size, lambda: self.val or self._images("train"), self._scratch, self.run.decision.decide)

    @cached_property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self._images("test")

    @cached_property
    def val(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The val split: more evidence for the gate (never seen by calibration), None if the run has none."""
        return self._images("val") if self.run.split.files("val") else None

    @cached_property
    def reference(self) -> dict[str, np.ndarray]:
        """The Keras model's probabilities on each evidence split: what every export is held to."""
        splits = {"test": self.test, **({"val": self.val} if self.val else {})}
        return {name: batched_predict(self.source.model, pixels, BATCH, f"keras reference {name}") for name, (pixels, _) in splits.items()}

    @cached_property
    def calibration(self) -> calib.CalibrationSet:
        size = self.calibration_size or DEFAULT_CALIBRATION_SIZE
        return calib.load(self.run.split, self.run.image_size, size, self.calibration_seed)

    def _images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        with progress(f"decode {split}", len(self.run.split.files(split))) as advance:
            return self.run.load_images(split, on_progress=advance)

    def export(
        self, format: str, precision: str, out: Path | None = None, max_drop: float = DEFAULT_MAX_DROP,
        require_proof: bool = False, diagnose: bool = False,
    ) -> ExportResult:
        spec = formats.get(format)
        if precision not in PRECISIONS:
            raise VggEdgeError(f"--precision {precision}: unknown; use one of {', '.join(PRECISIONS)}")
        check_range("--max-drop", max_drop, 0.0, 100.0)
        if self.calibration_size is not None and precision != "int8":
            console.print(f"[yellow]warning:[/] {format}-{precision} uses no calibration data; --calibration-size {self.calibration_size} is ignored")
        exporter = spec.make_exporter()
        dest = Path(out) if out else default_out(self.run.path, format, precision)
        gate = Gate.for_precision(precision, max_drop, require_proof)
        reader = calib.CalibrationReader(self.calibration) if precision == "int8" else None
        name = f"{format}-{precision}"
        tried: list[dict] = []
        kept: tuple[Path, dict, Verdict] | None = None

        def attempt(settings: Attempt) -> bool:
            """Convert and judge once; keeps the best so far; True when another setting is worth trying."""
            nonlocal kept
            folder = self._scratch / f"{name}-{len(tried)}"
            doc, verdict = self._attempt(exporter, folder, precision, reader, settings, gate)
            tried.append({"attempt": settings.name, "status": doc["status"], "failures": doc["gate"]["failures"], **_headline(doc)})
            if kept is None or _rank(doc) < _rank(kept[1]):
                kept = (folder, doc, verdict)
            if verdict.worth_retrying:
                reason = (verdict.failures or verdict.unproven)[0]  # the unproven lines come least settled first
                console.print(f"[yellow]{name} ({settings.name}) {verdict.status}:[/] {reason}; trying other settings", soft_wrap=True)
            return verdict.worth_retrying

        static = exporter.attempts(precision, max_drop)
        for settings in static:
            if not attempt(settings):
                break
        missed = kept[2].worth_retrying
        if precision == "int8" and (diagnose or missed):
            ranking = self._diagnose(exporter, kept[0])
            if missed and exporter.ranked_fallback:
                base = next(a for a in static if a.name == kept[1]["conversion"]["attempt"])
                for k in _doubling(len(ranking)):
                    layers = ranking[:k]
                    if not attempt(Attempt(f"{base.name}, {k} most sensitive layers in float", {**base.options, "float_layers": layers})):
                        break
        folder, doc, _ = kept
        doc["attempts"] = tried
        doc["diagnosis"] = self.diagnosis.record_for(format) if format in self.diagnosis.sqnr_db else None
        doc = manifest.write(folder, doc)
        status = doc["status"]
        published = _publish(folder, rejected_name(dest) if status == "rejected" else dest)
        if status != "rejected":
            shutil.rmtree(rejected_name(dest), ignore_errors=True)  # a stale failure report would contradict the good artifact
        for scratch in self._scratch.glob(f"{name}-*"):  # the attempts not kept
            shutil.rmtree(scratch, ignore_errors=True)
        return ExportResult(format, precision, published, status, doc)

    def _diagnose(self, exporter: Exporter, artifact: Path) -> list[str]:
        """Per-layer SQNR of `artifact` against the float model on val images; the layers ranked by the noise they add."""
        pixels = (self.val or self.test)[0][:DIAGNOSIS_IMAGES].astype(np.float32)
        with console.status(f"[bold]diagnosing {exporter.format}-int8[/] layer by layer"):
            found = diagnose({exporter.format: (exporter, artifact)}, self.source, pixels, "val" if self.val else "test")
        self.diagnosis = Diagnosis(found.images, found.split, {**self.diagnosis.sqnr_db, **found.sqnr_db})
        return found.ranking(exporter.format)

    def _attempt(self, exporter: Exporter, folder: Path, precision: str, reader, attempt: Attempt, gate: Gate) -> tuple[dict, Verdict]:
        """Convert with one set of settings, measure and judge it; returns its provisional manifest and the verdict."""
        name = f"{exporter.format}-{precision}"
        started = time.perf_counter()
        with console.status(f"[bold]converting {name}[/] ({attempt.name})"):
            conversion = exporter.convert(self.source, folder, precision, reader, attempt)
        seconds = time.perf_counter() - started
        doc = {
            "format": exporter.format, "precision": precision, "model_file": exporter.model_file,
            "labels": self.run.labels,
            "decision": self.run.decision.record(),
            "input": {**conversion.input, "layout": "NHWC", "range": [0, 255]},
            "output": conversion.output,
            "status": "rejected",  # provisional: only the gate may publish it
            "preprocessing": preprocessing_record(self.run.preprocess),
            "source": self.source_record,
            "calibration": self.calibration.record() if reader else None,
            "conversion": {"attempt": attempt.name, "settings": conversion.settings, "seconds": round(seconds, 2)},
            "gate": {"bounds": gate.record(), "failures": [], "unproven": []},
            "parity": None,
            "versions": manifest.tool_versions(),
        }
        doc = manifest.write(folder, doc)
        predictor = Predictor(manifest.read(folder))  # the edge device's own loading and input handling
        evidence = [Predictions("test", self.test[1], self.reference["test"], _predict_all(predictor, self.test[0], f"parity {name} test"))]
        if self.val and not attempt.tunes_on_val:
            evidence.append(Predictions("val", self.val[1], self.reference["val"], _predict_all(predictor, self.val[0], f"parity {name} val")))
        doc["parity"] = compare(evidence, self.run.labels, gate.confidence, self.run.decision.decide) | {"batch_size": BATCH}
        if self.val and attempt.tunes_on_val:
            doc["parity"]["evidence"]["excluded"] = {"val": "the converter tuned on it"}
        doc["conversion"]["latency_ms_batch1"] = _latency_ms(predictor, self.test[0][:1])
        verdict = gate.judge(doc["parity"])
        doc["status"] = verdict.status
        doc["gate"].update(failures=verdict.failures, unproven=verdict.unproven, shown_drop=verdict.shown_drop)
        return doc, verdict

    @cached_property
    def source_record(self) -> dict:
        """Where the artifact comes from: the run, its model's and split's hashes."""
        return {
            "run": str(self.run.path.resolve()), "run_name": self.run.name, "model_file": MODEL_FILE,
            "model_sha256": sha256_file(self.run.model_path), "split_sha256": sha256_file(self.run.split_path),
            "parity_split": "test", "test_images": int(len(self.test[1])), "val_images": int(len(self.val[1])) if self.val else 0,
        }


def export_many(
    run_dir: str | Path, formats: Sequence[str], precisions: Sequence[str], out: Path | None = None,
    max_drop: float = DEFAULT_MAX_DROP, calibration_size: int | None = None, calibration_seed: int = 0,
    require_proof: bool = False, diagnose: bool = False,
) -> list[ExportResult]:
    """Every format x precision; `out` is the parent folder (default `exported/<run>/`).

    Any int8 diagnosis (asked for, or made because an attempt was rejected) is written across
    formats as `<out>/diagnosis/` (one table, one plot).
    """
    with ExportJob(run_dir, calibration_size, calibration_seed) as job:
        root = Path(out) if out else default_root(job.run.path)
        results = [job.export(f, p, root / f"{f}-{p}", max_drop, require_proof, diagnose) for f in formats for p in precisions]
        if job.diagnosis.sqnr_db:
            job.diagnosis.write(root / "diagnosis")
        return results


def export_run(
    run_dir: str | Path, format: str, precision: str, out: Path | None = None,
    max_drop: float = DEFAULT_MAX_DROP, calibration_size: int | None = None, calibration_seed: int = 0,
    require_proof: bool = False, diagnose: bool = False,
) -> ExportResult:
    """Export one run to one format and precision; `out` is the artifact folder (default `exported/<run>/<format>-<precision>/`)."""
    with ExportJob(run_dir, calibration_size, calibration_seed) as job:
        result = job.export(format, precision, out, max_drop, require_proof, diagnose)
        if job.diagnosis.sqnr_db:
            job.diagnosis.write(result.artifact.parent / "diagnosis")
        return result


def _predict_all(predictor: Predictor, pixels: np.ndarray, description: str) -> np.ndarray:
    with progress(description, len(pixels)) as advance:
        probs = []
        for start in range(0, len(pixels), BATCH):
            probs.append(predictor.predict(pixels[start:start + BATCH]))
            advance(len(probs[-1]))
    return np.concatenate(probs)


def _latency_ms(predictor: Predictor, image: np.ndarray) -> float:
    """Median batch-1 latency over a few calls after a warm-up: what a float fallback costs, roughly."""
    for _ in range(3):
        predictor.predict(image)
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def _doubling(n: int) -> list[int]:
    """1, 2, 4, ... below n: few attempts to find few float layers. Never all n: a model with every
    layer in float is no int8 model (measured: brain MRI's ONNX 'int8' then ran at fp32's latency)."""
    sizes, k = [], 1
    while k < n:
        sizes.append(k)
        k *= 2
    return sizes


def _publish(folder: Path, dest: Path) -> Path:
    """Move the finished folder's files into `dest`, swapped in whole."""
    with atomic_dir(dest) as tmp:
        for item in folder.iterdir():
            shutil.move(str(item), tmp / item.name)
    return dest


def _headline(doc: dict) -> dict:
    parity = doc["parity"]
    return {
        "accuracy": parity["accuracy"], "accuracy_drop_pp": parity["accuracy_drop_pp"], "flip_rate": parity["flip_rate"],
        "max_abs_prob_diff": parity["max_abs_prob_diff"], "latency_ms_batch1": doc["conversion"]["latency_ms_batch1"],
        "float_layers": doc["conversion"]["settings"].get("float_layers", []),
    }


def _rank(doc: dict) -> tuple[int, float]:
    """How attempts compare: the better verdict, then the smaller worst drop of accuracy or a class's sensitivity."""
    parity = doc["parity"]
    worst = max([parity["accuracy_drop_pp"], *(d for d in parity["sensitivity_drop_pp"].values() if d is not None)])
    return STATUSES.index(doc["status"]), worst
