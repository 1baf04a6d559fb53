"""The edge side: load an exported artifact through its manifest and run it, without TensorFlow.

An artifact folder (written by `vgg-edge export`) holds the model file(s) and `manifest.json`.
`load_artifact` trusts nothing else: it reads the manifest through `manifest.read` (schema, every
file's sha256 and size, before a byte of the model is parsed), then opens the model in the
backend its format names (`formats.FORMATS`: onnxruntime, ai-edge-litert or openvino, imported
only then) on the device asked for (CPU unless told otherwise). `Predictor.predict`
takes raw RGB pixels decoded by `images.read_image` (the training pipeline's own decoder) and
returns probabilities; `Predictor.classify` goes from file paths to labelled results, decided by
the run's rule (argmax, or the operating point recorded at training: decision.py).

This module imports numpy and Pillow only; a test asserts TensorFlow is never imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import Backend
from .errors import VggEdgeError, check_range
from .images import IMAGE_SUFFIXES, find_images, read_image, read_images
from . import manifest
from .manifest import MANIFEST, ArtifactInfo

@dataclass(frozen=True)
class Prediction:
    """One file's result: the decided label (argmax or the operating point) with its probability, and the
    `top_k` (label, probability) pairs, most probable first."""

    path: str
    label: str
    confidence: float
    top: list[tuple[str, float]]


class Predictor:
    """An artifact opened in its runtime: `predict(pixels)` maps (n, s, s, 3) uint8 RGB to probabilities."""

    def __init__(self, info: ArtifactInfo, threads: int | None = None, device: str = "CPU"):
        if threads is not None:
            check_range("--threads", threads, 1)
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
        x = to_model_input(pixels, self.info.input)
        return from_model_output(np.asarray(self._run(x)), self.info.output)

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Decode one file exactly as training did."""
        return read_image(path, self.image_size)

    def classify(self, paths: Sequence[str | os.PathLike], top_k: int = 1, batch_size: int = 32) -> tuple[list[Prediction], dict[str, str]]:
        """Labelled predictions for the readable files, and a one-line reason for each unreadable one.

        Files are decoded a batch at a time, so a folder of any size runs in bounded memory.
        """
        check_range("--top-k", top_k, 1)
        check_range("--batch-size", batch_size, 1)
        results: list[Prediction] = []
        failures: dict[str, str] = {}
        for start in range(0, len(paths), batch_size):
            loaded = read_images(paths[start:start + batch_size], self.image_size)
            failures.update(loaded.failures)
            if not loaded.paths:
                continue
            probs = self.predict(loaded.pixels)
            for path, p, k in zip(loaded.paths, probs, self._decide(probs)):
                top = [(self.labels[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:top_k]]
                results.append(Prediction(str(path), self.labels[k], float(p[k]), top))
        return results, failures


def load_artifact(artifact: str | os.PathLike, threads: int | None = None, device: str = "CPU", allow_rejected: bool = False) -> Predictor:
    """Verify an artifact folder and open it in its runtime."""
    info = manifest.read(artifact)
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


def to_model_input(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """Raw 0-255 pixels to the model's input dtype; integer inputs are quantized with the model's own scale."""
    dtype = np.dtype(spec["dtype"])
    if dtype == np.float32:
        return pixels.astype(np.float32)
    q = spec.get("quantization")
    if not q:
        return pixels.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(pixels.astype(np.float32) / q["scale"] + q["zero_point"]), info.min, info.max).astype(dtype)


def from_model_output(raw: np.ndarray, spec: dict) -> np.ndarray:
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


def _open_backend(info: ArtifactInfo, threads: int | None, device: str) -> Backend:
    """The artifact's model opened in the runtime its format needs (imported only now)."""
    spec = info.spec
    device = spec.check_device(device)
    try:
        return spec.open(info.model_path, threads, device)
    except ImportError as exc:
        if _interrupted(exc):  # Ctrl-C inside the runtime's import surfaces as an ImportError: it is still Ctrl-C
            raise KeyboardInterrupt from None
        raise VggEdgeError(f"{info.model_path}: needs the {info.format} runtime ({exc.name} is not installed); {spec.install_hint()}") from None
    except Exception as exc:  # each runtime has its own exception types for a corrupt or foreign model
        raise VggEdgeError(f"{info.model_path}: the {info.format} runtime cannot load it on {device} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
