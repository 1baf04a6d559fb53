"""Per-layer diagnosis of int8 drift: where along the network a quantized model parts from the float one.

Each format measures (`Exporter.layer_errors`) the signal-to-quantization-noise ratio of every
Keras layer's output, running its float and its int8 model end to end on the same images, so
the noise at a layer is all the noise accumulated up to it. The layer across which the SQNR
falls most is the one that adds the most noise: the first to keep in float when int8 misses
its gate (`Diagnosis.ranking`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import plots
from ..fileio import write_bytes, write_json
from .base import Exporter, SourceModel

# Outputs this close count as identical: float32 rounding between two engines reads ~120 dB, int8 ~40.
# It caps `sqnr_db` (identical outputs read 100, not inf, and the record stays JSON) and is the
# level "before" the first layer in `Diagnosis.ranking` (the raw pixels are exact).
EXACT_DB = 100.0


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum(reference^2) / sum((reference - test)^2)) over all elements, capped at EXACT_DB."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(test, np.float64)) ** 2)
    signal = np.sum(reference**2)
    if noise * 10 ** (EXACT_DB / 10) <= signal:
        return EXACT_DB
    return float(10 * np.log10(signal / noise))


def weighted_layers(model) -> list[str]:
    """The Keras layers with weights, in model order: the layers a diagnosis reports and a fallback keeps in float."""
    return [layer.name for layer in model.layers if layer.weights]


def keras_layer(name: str, layers: Sequence[str]) -> str | None:
    """The Keras layer (one of `layers`) that a converted node or tensor is named after, if any.

    Converters keep TF's name scopes, 'vgg_edge_1/block1_conv1_1/BiasAdd' (Keras suffixes '_1' to a
    layer called inside a traced function), and TFLite joins the names of the ops it fused with ';'.
    """
    for part in re.split(r"[;/]", name):
        for layer in layers:
            if re.fullmatch(rf"{re.escape(layer)}(_\d+)?", part):
                return layer
    return None


@dataclass
class Diagnosis:
    """SQNR in dB of each layer's output, int8 against float, per format, on `images` images of `split`."""

    images: int
    split: str
    sqnr_db: dict[str, dict[str, float]]  # format -> Keras layer (model order) -> dB

    def ranking(self, format: str) -> list[str]:
        """The format's layers, the one whose SQNR drops most across it first: the most sensitive to int8."""
        drops, previous = {}, EXACT_DB
        for layer, db in self.sqnr_db[format].items():
            drops[layer], previous = previous - db, db
        return sorted(drops, key=drops.__getitem__, reverse=True)

    def record_for(self, format: str) -> dict:
        """One format's part, for its artifact's manifest."""
        return {"images": self.images, "split": self.split, "sqnr_db": self.sqnr_db[format], "ranking": self.ranking(format)}

    def record(self) -> dict:
        return {
            "images": self.images, "split": self.split, "sqnr_db": self.sqnr_db,
            "ranking": {format: self.ranking(format) for format in self.sqnr_db},
        }

    def write(self, folder: Path) -> None:
        """diagnosis.json (the record), diagnosis.md (a table: layers x formats) and diagnosis.png (SQNR along depth)."""
        folder = Path(folder)
        write_json(folder / "diagnosis.json", self.record())
        write_bytes(folder / "diagnosis.md", self._table().encode())
        plots.layer_sqnr(self.sqnr_db, self._layers(), f"{self.images} {self.split} images", folder / "diagnosis.png")

    def _layers(self) -> list[str]:
        """Every layer any format reports, in model order (a converter may fold a layer away)."""
        return list(dict.fromkeys(layer for layers in self.sqnr_db.values() for layer in layers))

    def _table(self) -> str:
        formats = list(self.sqnr_db)
        lines = [
            f"SQNR (dB) of each layer's output, int8 against float, on {self.images} {self.split} images; higher is closer.",
            "",
            "| layer | " + " | ".join(formats) + " |",
            "|---|" + "---:|" * len(formats),
        ]
        for layer in self._layers():
            cells = (f"{self.sqnr_db[f][layer]:.1f}" if layer in self.sqnr_db[f] else "-" for f in formats)
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def diagnose(
    exporters_and_artifacts: dict[str, tuple[Exporter, Path]], source: SourceModel, images: np.ndarray, split: str,
) -> Diagnosis:
    """Each format's int8 artifact measured layer by layer on `images` (float32 raw NHWC pixels; a handful:
    every layer's output of every image is held in memory)."""
    measured = {
        format: exporter.layer_errors(source, artifact, images)
        for format, (exporter, artifact) in exporters_and_artifacts.items()
    }
    return Diagnosis(images=len(images), split=split, sqnr_db=measured)
