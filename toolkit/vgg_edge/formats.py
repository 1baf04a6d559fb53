"""The formats a model can take, one row each: what runtime, export, bench and the tests read.

A row names the file the edge runtime opens, the package that runs it (and the pip extra that
installs it), the devices that runtime can be asked for, the exporter that writes it and the
backend that opens it. Adding a format means a row here, an `Exporter` subclass in
`export/<name>.py` and a backend in `backends.py`; nothing else lists formats.

The Keras model of a run is a row too (`KERAS`): bench times it as the baseline; it is not an
export format.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import backends
from .errors import VggEdgeError

if TYPE_CHECKING:
    from .export.base import Exporter


@dataclass(frozen=True)
class Format:
    name: str
    model_file: str  # the file the runtime opens, inside the artifact folder (or the run directory for Keras)
    module: str  # imported to run it (found without importing by bench, imported by the backend)
    package: str  # the pip distribution of that module
    extra: str  # `pip install 'vgg-edge[<extra>]'` installs it
    devices: tuple[str, ...]  # what the runtime can be asked to run on, CPU first
    exporter: str  # "module:Class" of the converter; imported only when exporting
    open: Callable[..., backends.Backend] | None  # (model path, threads, device) -> Backend
    unavailable: Callable[[str], str | None]  # device -> why this runtime cannot use it here, or None
    streams: Callable[..., backends.Streams] | None  # (model path, cores, device) -> Streams, for bench's throughput mode

    def make_exporter(self) -> Exporter:
        module, name = self.exporter.split(":")
        return getattr(importlib.import_module(module), name)(self)

    def check_device(self, device: str) -> str:
        """`device` as this runtime names it, or a one-line error listing the ones it has."""
        for known in self.devices:
            if device.lower() == known.lower():
                return known
        raise VggEdgeError(f"device {device!r}: the {self.name} runtime runs on {', '.join(self.devices)}")

    def install_hint(self) -> str:
        return f"pip install 'vgg-edge[{self.extra}]'"


FORMATS: dict[str, Format] = {
    f.name: f for f in (
        Format("tflite", "model.tflite", "ai_edge_litert", "ai-edge-litert", "tflite", ("CPU",),
               "vgg_edge.export.tflite:TfliteExporter", backends.litert, backends.litert_unavailable, backends.litert_streams),
        Format("onnx", "model.onnx", "onnxruntime", "onnxruntime", "onnx", ("CPU", "CUDA", "TensorRT"),
               "vgg_edge.export.onnx:OnnxExporter", backends.onnxruntime, backends.onnxruntime_unavailable, backends.onnxruntime_streams),
        Format("openvino", "model.xml", "openvino", "openvino", "openvino", ("CPU", "GPU"),
               "vgg_edge.export.openvino:OpenvinoExporter", backends.openvino, backends.openvino_unavailable, backends.openvino_streams),
    )
}

KERAS = Format("keras", "model.keras", "tensorflow", "tensorflow", "full", ("CPU",), "", None, backends.keras_unavailable, None)

#: Every runtime bench can time: the export formats and the Keras baseline.
RUNTIMES: dict[str, Format] = {KERAS.name: KERAS, **FORMATS}


def get(name: str) -> Format:
    """The export format called `name`, or a one-line error listing the formats."""
    if name not in FORMATS:
        raise VggEdgeError(f"--format {name}: unknown; use one of {', '.join(FORMATS)}")
    return FORMATS[name]
