"""The one exporter interface: each format implements `convert`, the pipeline does the rest.

A format module (tflite, onnx, openvino) knows how to turn the Keras model into its own model
file(s) at a precision, and which settings to try, in order, when a quantized model misses its
parity gate. Everything else (calibration data, the parity run, the gate, the manifest, the
atomic publishing) is shared and lives in `pipeline.py`.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .calibration import CalibrationReader

if TYPE_CHECKING:
    from ..formats import Format

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


@dataclass(frozen=True)
class Attempt:
    """One set of converter settings; `name` is what the report says was tried."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    tunes_on_val: bool = False  # the converter measures itself on the val split, which then cannot judge it


@dataclass
class Conversion:
    """What a converter produced: the tensors' names and types as the edge runtime must feed them."""

    input: dict  # name, shape, dtype (+ quantization {scale, zero_point} for integer inputs)
    output: dict  # name, shape, dtype (+ quantization)
    settings: dict  # the converter settings actually used, for the manifest


class SourceModel:
    """The trained Keras model, with a SavedModel export made once and shared by the formats that need it."""

    def __init__(self, model, image_size: int, validation: Callable[[], tuple[np.ndarray, np.ndarray]], scratch: Path,
                 decide: Callable[[np.ndarray], np.ndarray] | None = None):
        self.model = model
        self.image_size = image_size
        self._validation = validation
        self.decide = decide or (lambda probs: probs.argmax(axis=1))  # the run's decision rule (decision.py)
        self._scratch = scratch

    @cached_property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, labels) of the run's val split, for accuracy-aware quantizers: decoded only when one asks."""
        return self._validation()

    @cached_property
    def saved_model(self) -> Path:
        """`model.export(dir)`: the route the TFLite and OpenVINO converters take (measured to match Keras)."""
        path = Path(tempfile.mkdtemp(prefix="savedmodel-", dir=self._scratch))
        self.model.export(str(path), format="tf_saved_model", verbose=False)
        return path

    def cached(self, name: str, make: Callable[[Path], None]) -> Path:
        """A scratch file built once by `make(path)` and shared by later conversions (e.g. the float ONNX graph)."""
        path = self._scratch / name
        if not path.exists():
            make(path)
        return path

    @property
    def input_shape(self) -> list:
        return [None, self.image_size, self.image_size, 3]


class Exporter(ABC):
    """Converts a `SourceModel` into one format at one precision; made by `formats.Format.make_exporter`."""

    # True: when int8 misses its gate, the pipeline retries keeping the k most sensitive layers
    # (`Attempt.options["float_layers"]`) in float; False: the toolchain's own fallback already ranks them.
    ranked_fallback: ClassVar[bool]

    def __init__(self, spec: Format):
        self.spec = spec

    @property
    def format(self) -> str:
        return self.spec.name

    @property
    def model_file(self) -> str:
        """The file the edge runtime opens (the format table's)."""
        return self.spec.model_file

    def attempts(self, precision: str, max_drop: float) -> list[Attempt]:
        """Settings to try in order until the gate passes: one for float and dynamic, fallbacks for int8."""
        return self.int8_attempts(max_drop) if precision == "int8" else [Attempt("default")]

    @abstractmethod
    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        """The format's default int8 settings first, then what its toolchain offers when the gate is missed."""

    @abstractmethod
    def convert(self, source: SourceModel, dest: Path, precision: str, calibration: CalibrationReader | None, attempt: Attempt) -> Conversion:
        """Write the model file(s) for `precision` into the empty folder `dest`."""

    @abstractmethod
    def layer_errors(self, source: SourceModel, artifact: Path, images: np.ndarray) -> dict[str, float]:
        """SQNR (dB) of each Keras layer's output, the int8 model in `artifact` (written by `convert`) against
        the float model, both run end to end on `images` (float32 raw NHWC pixels); in model order."""
