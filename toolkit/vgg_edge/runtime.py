"""The edge side: load an exported artifact through its manifest and run it, without TensorFlow.

An artifact folder (written by `vgg-edge export`) holds the model file(s) and `manifest.json`.
`load_artifact` trusts nothing else: it checks the manifest's schema, verifies every file's
sha256 and size before a byte of the model is parsed, then opens the model in the runtime its
format needs (onnxruntime, ai-edge-litert or openvino, imported only then). `Predictor.predict`
takes raw RGB pixels decoded by `images.read_image` (the training pipeline's own decoder) and
returns probabilities; `Predictor.classify` goes from file paths to labelled results, decided by
the run's rule (argmax, or the operating point recorded at training: decision.py).

This module imports numpy and Pillow only; a test asserts TensorFlow is never imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .decision import DecisionRule
from .errors import VggEdgeError
from .fileio import read_json, sha256_file
from .images import IMAGE_SUFFIXES, find_images, read_image, read_images

MANIFEST = "manifest.json"
SCHEMA = "vgg-edge-artifact/1"
FORMATS = ("tflite", "onnx", "openvino")


@dataclass(frozen=True)
class ArtifactInfo:
    """What a manifest says about an artifact, checked against the files on disk."""

    path: Path  # the artifact folder
    format: str
    precision: str
    model_file: str
    labels: list[str]
    image_size: int
    input: dict  # name, shape, dtype, layout, range, optional quantization {scale, zero_point}
    output: dict  # name, shape, dtype, optional quantization
    status: str  # the parity gate's verdict: "accepted", "unproven" (runs, marked) or "rejected"
    manifest: dict

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file

    @property
    def decision(self) -> DecisionRule:
        """How probabilities become a label: argmax, or the operating point recorded at training."""
        try:
            return DecisionRule.from_record(self.labels, self.manifest.get("decision"))
        except VggEdgeError as exc:
            raise VggEdgeError(f"{self.path / MANIFEST}: {exc}; re-export the model") from None


def read_manifest(artifact: str | os.PathLike, verify: bool = True) -> ArtifactInfo:
    """Parse and check `manifest.json`; with `verify`, every listed file's size and sha256 too."""
    folder = Path(artifact)
    if folder.is_file():  # the manifest or the model file named instead of their folder
        folder = folder.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise VggEdgeError(f"{manifest_path}: no manifest; {_what_instead(folder)}")
    doc = read_json(manifest_path)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise VggEdgeError(f"{manifest_path}: not a {SCHEMA} manifest; re-export the model with this version of vgg-edge")
    try:
        info = ArtifactInfo(
            path=folder, format=doc["format"], precision=doc["precision"], model_file=doc["model_file"],
            labels=list(doc["labels"]), image_size=int(doc["input"]["shape"][1]), input=doc["input"],
            output=doc["output"], status=doc.get("status", "accepted"), manifest=doc,
        )
        files = dict(doc["files"])
        n_out = info.output["shape"][-1]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise VggEdgeError(f"{manifest_path}: malformed manifest (bad or missing {exc}); re-export the model") from None
    if info.format not in FORMATS:
        raise VggEdgeError(f"{manifest_path}: unknown format {info.format!r}; expected one of {', '.join(FORMATS)}")
    if n_out is not None and n_out != len(info.labels):
        raise VggEdgeError(f"{manifest_path}: {len(info.labels)} labels but the model has {n_out} outputs; re-export the model")
    if info.model_file not in files:
        raise VggEdgeError(f"{manifest_path}: model file {info.model_file} is not listed under 'files'; re-export the model")
    for name, meta in files.items():
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not isinstance(meta, dict):
            raise VggEdgeError(f"{manifest_path}: bad 'files' entry {name!r} (must be a name inside the artifact folder with its bytes and sha256); re-export the model")
        if not verify:
            continue
        if not path.is_file():
            raise VggEdgeError(f"{path}: named in the manifest but missing; copy the whole artifact folder again")
        if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
            raise VggEdgeError(f"{path}: sha256 or size differs from the manifest (tampered or truncated); copy the artifact again")
    return info


def _what_instead(folder: Path) -> str:
    """What a folder without a manifest is, and what to pass instead."""
    inside = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}")) if folder.is_dir() else []
    if inside:
        return f"it holds the artifacts {', '.join(inside)}: pass one of them, e.g. {folder / inside[0]}"
    if (folder / "model.keras").is_file() and (folder / "split.json").is_file():
        return f"it is a training run: export it first (vgg-edge export {folder} --format onnx), then pass the artifact folder"
    if not folder.exists():
        return "no such folder; pass an artifact folder written by `vgg-edge export` (e.g. exported/<run>/onnx-fp32)"
    return "only folders written by `vgg-edge export` can be loaded (e.g. exported/<run>/onnx-fp32)"


@dataclass(frozen=True)
class Prediction:
    """One file's result: the decided label (argmax or the operating point) with its probability, and the
    `top_k` (label, probability) pairs, most probable first."""

    path: str
    label: str
    confidence: float
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class _Backend:
    run: Callable[[np.ndarray], np.ndarray]  # model-dtype batch -> raw output batch
    n_outputs: int | None  # the class count the runtime reports (None when the model leaves it dynamic)


class Predictor:
    """An artifact opened in its runtime: `predict(pixels)` maps (n, s, s, 3) uint8 RGB to probabilities."""

    def __init__(self, info: ArtifactInfo, threads: int | None = None, device: str = "CPU"):
        self.info = info
        backend = _open_backend(info, threads, device)
        if backend.n_outputs is not None and backend.n_outputs != len(info.labels):
            raise VggEdgeError(
                f"{info.path / MANIFEST}: {len(info.labels)} labels but {info.model_path.name} has {backend.n_outputs} outputs; "
                "the labels belong to another model: re-export it"
            )
        self._run = backend.run
        self._decide = info.decision.decide  # checked only now: labels that belong to another model are named above

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for uint8 RGB pixels as `images.read_image` decodes them."""
        if pixels.ndim == 3:
            pixels = pixels[None]
        expected = (self.image_size, self.image_size, 3)
        if tuple(pixels.shape[1:]) != expected:
            raise VggEdgeError(f"input of shape {tuple(pixels.shape[1:])}, the model needs {expected}")
        x = _to_input(pixels, self.info.input)
        return _from_output(np.asarray(self._run(x)), self.info.output)

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Decode one file exactly as training did."""
        return read_image(path, self.image_size)

    def classify(self, paths: Sequence[str | os.PathLike], top_k: int = 1, batch_size: int = 32) -> tuple[list[Prediction], dict[str, str]]:
        """Labelled predictions for the readable files, and a one-line reason for each unreadable one.

        Files are decoded a batch at a time, so a folder of any size runs in bounded memory.
        """
        results: list[Prediction] = []
        failures: dict[str, str] = {}
        for start in range(0, len(paths), batch_size):
            loaded = read_images(paths[start:start + batch_size], self.image_size)
            failures.update(loaded.failures)
            if not loaded.paths:
                continue
            probs = self.predict(loaded.pixels)
            for path, p, k in zip(loaded.paths, probs, self._decide(probs)):
                top = [(self.labels[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:max(1, top_k)]]
                results.append(Prediction(str(path), self.labels[k], float(p[k]), top))
        return results, failures


def load_artifact(artifact: str | os.PathLike, threads: int | None = None, device: str = "CPU", allow_rejected: bool = False) -> Predictor:
    """Verify an artifact folder and open it in its runtime."""
    info = read_manifest(artifact)
    if info.status == "rejected" and not allow_rejected:
        raise VggEdgeError(f"{info.path}: this artifact failed its parity gate (rejected); use an accepted export")
    return Predictor(info, threads, device)


def expand_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], dict[str, str], int]:
    """Files as given and folders expanded to the image files below them.

    Returns the files, a reason for each path that names nothing usable (missing, a folder
    without images), and how many non-image entries the folders held (skipped, counted).
    """
    files: list[Path] = []
    failures: dict[str, str] = {}
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, ignored = find_images(path)
            skipped += ignored
            files.extend(found)
            if not found:
                failures[str(path)] = f"{path}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        elif path.is_file():
            files.append(path)
        else:
            failures[str(path)] = f"{path}: no such file or folder (or a broken symlink)"
    return files, failures, skipped


def _to_input(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """Raw 0-255 pixels to the model's input dtype; integer inputs are quantized with the model's own scale."""
    dtype = np.dtype(spec["dtype"])
    if dtype == np.float32:
        return pixels.astype(np.float32)
    q = spec.get("quantization")
    if not q:
        return pixels.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(pixels.astype(np.float32) / q["scale"] + q["zero_point"]), info.min, info.max).astype(dtype)


def _from_output(raw: np.ndarray, spec: dict) -> np.ndarray:
    q = spec.get("quantization")
    if q and raw.dtype != np.float32:
        return ((raw.astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)
    return raw.astype(np.float32)


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions that caused `exc`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _open_backend(info: ArtifactInfo, threads: int | None, device: str) -> _Backend:
    """The artifact's model opened in the runtime its format needs (imported only now)."""
    opener = {"onnx": _onnxruntime, "tflite": _litert, "openvino": _openvino}[info.format]
    try:
        return opener(info.model_path, threads, device)
    except ImportError as exc:
        if _interrupted(exc):  # Ctrl-C inside the runtime's import surfaces as an ImportError: it is still Ctrl-C
            raise KeyboardInterrupt from None
        raise VggEdgeError(f"{info.model_path}: needs the {info.format} runtime ({exc.name} is not installed); pip install 'vgg-edge[{info.format}]'") from None
    except Exception as exc:  # each runtime has its own exception types for a corrupt or foreign model
        raise VggEdgeError(f"{info.model_path}: the {info.format} runtime cannot load it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _onnxruntime(model: Path, threads: int | None, device: str) -> _Backend:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.upper() == "GPU" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model), options, providers=providers)
    name = session.get_inputs()[0].name
    return _Backend(lambda x: session.run(None, {name: x})[0], _static(session.get_outputs()[0].shape[-1]))


def _litert(model: Path, threads: int | None, device: str) -> _Backend:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads or None)
    input_index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]
    state: dict[str, Any] = {"batch": None}

    def run(x: np.ndarray) -> np.ndarray:
        if state["batch"] != len(x):  # TFLite tensors have a fixed batch: resize, then re-allocate
            interpreter.resize_tensor_input(input_index, list(x.shape))
            interpreter.allocate_tensors()
            state["batch"] = len(x)
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"]).copy()

    return _Backend(run, _static(int(output["shape"][-1])))


def _openvino(model: Path, threads: int | None, device: str) -> _Backend:
    import openvino as ov

    # On CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO would otherwise run float layers in bf16
    # (measured: max |dp| 2.6e-2 against Keras for an fp32 export); the artifact's precision is the promise.
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if device.upper() == "CPU" else {}
    if threads and device.upper() == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(model), device.upper(), config)
    request = compiled.create_infer_request()
    classes = compiled.output(0).get_partial_shape()[-1]
    return _Backend(lambda x: request.infer({0: x})[compiled.output(0)], classes.get_length() if classes.is_static else None)
