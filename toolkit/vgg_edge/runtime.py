"""The edge side: load an exported artifact through its manifest and run it, without TensorFlow.

An artifact folder (written by `vgg-edge export`) holds the model file(s) and `manifest.json`.
`load_artifact` trusts nothing else: it checks the manifest's schema, verifies every file's
sha256 and size before a byte of the model is parsed, then opens the model in the runtime its
format needs (onnxruntime, ai-edge-litert or openvino, imported only then). `Predictor.predict`
takes raw RGB pixels decoded by `images.read_image` (the training pipeline's own decoder) and
returns probabilities; `classify` goes from file paths to labelled results.

This module imports numpy and Pillow only; a test asserts TensorFlow is never imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VggEdgeError
from .fileio import read_json, sha256_file
from .images import read_image

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
    status: str  # "accepted" or "rejected" by the parity gate
    manifest: dict

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file


def read_manifest(artifact: str | os.PathLike, verify: bool = True) -> ArtifactInfo:
    """Parse and check `manifest.json`; with `verify`, every listed file's size and sha256 too."""
    folder = Path(artifact)
    if folder.is_file() and folder.name == MANIFEST:
        folder = folder.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise VggEdgeError(f"{manifest_path}: no manifest; only folders written by `vgg-edge export` can be loaded")
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
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise VggEdgeError(f"{manifest_path}: malformed manifest (bad or missing {exc}); re-export the model") from None
    if info.format not in FORMATS:
        raise VggEdgeError(f"{manifest_path}: unknown format {info.format!r}; expected one of {', '.join(FORMATS)}")
    n_out = info.output.get("shape", [None, None])[-1]
    if n_out is not None and n_out != len(info.labels):
        raise VggEdgeError(f"{manifest_path}: {len(info.labels)} labels but the model has {n_out} outputs; re-export the model")
    if info.model_file not in files:
        raise VggEdgeError(f"{manifest_path}: model file {info.model_file} is not listed under 'files'; re-export the model")
    if verify:
        for name, meta in files.items():
            path = folder / name
            if not path.is_file():
                raise VggEdgeError(f"{path}: named in the manifest but missing; copy the whole artifact folder again")
            if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
                raise VggEdgeError(f"{path}: sha256 or size differs from the manifest (tampered or truncated); copy the artifact again")
    return info


class Predictor:
    """An artifact opened in its runtime: `predict(pixels)` maps (n, s, s, 3) uint8 RGB to probabilities."""

    def __init__(self, info: ArtifactInfo, threads: int | None = None, device: str = "CPU"):
        self.info = info
        self._run = _open_backend(info, threads, device)

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def predict(self, pixels: np.ndarray) -> np.ndarray:
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


def load_artifact(artifact: str | os.PathLike, threads: int | None = None, device: str = "CPU", allow_rejected: bool = False) -> Predictor:
    """Verify an artifact folder and open it in its runtime."""
    info = read_manifest(artifact)
    if info.status != "accepted" and not allow_rejected:
        raise VggEdgeError(f"{info.path}: this artifact failed its parity gate ({info.status}); use an accepted export")
    return Predictor(info, threads, device)


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


def _open_backend(info: ArtifactInfo, threads: int | None, device: str):
    """A callable batch -> output for the artifact's runtime."""
    opener = {"onnx": _onnxruntime, "tflite": _litert, "openvino": _openvino}[info.format]
    try:
        return opener(info.model_path, threads, device)
    except ImportError as exc:
        extra = {"onnx": "onnx", "tflite": "tflite", "openvino": "openvino"}[info.format]
        raise VggEdgeError(f"{info.model_path}: needs the {info.format} runtime ({exc.name} is not installed); pip install 'vgg-edge[{extra}]'") from None
    except VggEdgeError:
        raise
    except Exception as exc:
        raise VggEdgeError(f"{info.model_path}: the {info.format} runtime cannot load it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _onnxruntime(model: Path, threads: int | None, device: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.upper() == "GPU" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model), options, providers=providers)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _litert(model: Path, threads: int | None, device: str):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads or None)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    state: dict[str, Any] = {"batch": None}

    def run(x: np.ndarray) -> np.ndarray:
        if state["batch"] != len(x):  # TFLite tensors have a fixed batch: resize, then re-allocate
            interpreter.resize_tensor_input(input_index, list(x.shape))
            interpreter.allocate_tensors()
            state["batch"] = len(x)
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return run


def _openvino(model: Path, threads: int | None, device: str):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads} if threads and device.upper() == "CPU" else {}
    compiled = core.compile_model(core.read_model(model), device.upper(), config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[compiled.output(0)]


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    confidence: float
    top: list[tuple[str, float]]


def classify(predictor: Predictor, paths: list[str | os.PathLike], top_k: int = 1, batch_size: int = 16) -> tuple[list[Prediction], dict[str, str]]:
    """Labelled predictions for the readable files, and a reason for each unreadable one."""
    from .images import read_images

    loaded = read_images(paths, predictor.image_size)
    results: list[Prediction] = []
    for start in range(0, len(loaded.paths), batch_size):
        probs = predictor.predict(loaded.pixels[start:start + batch_size])
        for path, p in zip(loaded.paths[start:start + batch_size], probs):
            order = np.argsort(-p)[:max(1, top_k)]
            top = [(predictor.labels[i], float(p[i])) for i in order]
            results.append(Prediction(str(path), top[0][0], top[0][1], top))
    return results, loaded.failures
