"""Per-layer int8 diagnosis on the session's trained run (32 px MNIST digits): each format's SQNR along
the network, named by Keras layer; float layers that the conversion really leaves in float; the
written report. The int8 models come from the exporters' own first int8 settings (no parity run:
what is tested here is conversion and measurement, not the gate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vgg_edge.export import ExportJob
from vgg_edge.formats import FORMATS
from vgg_edge.export.base import Attempt, Exporter, SourceModel
from vgg_edge.export.calibration import CalibrationReader
from vgg_edge.export.diagnose import EXACT_DB, Diagnosis, diagnose, keras_layer, sqnr_db, weighted_layers

CALIBRATION = 20  # images, as in test_export
MAX_DROP = 10.0
IMAGES = 16  # test images every layer is compared on


@dataclass
class Diagnosed:
    source: SourceModel
    reader: CalibrationReader
    images: np.ndarray
    artifacts: dict[str, tuple[Exporter, Path]]
    diagnosis: Diagnosis


@pytest.fixture(scope="module")
def diagnosed(trained_run, tmp_path_factory) -> Diagnosed:
    """Each format's first int8 attempt converted into a tmp folder, then diagnosed on a few test images."""
    out = tmp_path_factory.mktemp("int8")
    with ExportJob(trained_run, calibration_size=CALIBRATION) as job:
        reader = CalibrationReader(job.calibration)
        images = job.test[0][:IMAGES].astype(np.float32)
        artifacts = {}
        for fmt, spec in FORMATS.items():
            exporter = spec.make_exporter()
            exporter.convert(job.source, out / fmt, "int8", reader, exporter.int8_attempts(MAX_DROP)[0])
            artifacts[fmt] = (exporter, out / fmt)
        yield Diagnosed(job.source, reader, images, artifacts, diagnose(artifacts, job.source, images, "test"))


def test_sqnr_and_ranking_by_hand():
    reference = np.array([1.0, -1.0])
    assert sqnr_db(reference, reference + [0.1, -0.1]) == pytest.approx(20.0)  # 10 log10(2 / 0.02)
    assert sqnr_db(reference, reference) == EXACT_DB
    found = Diagnosis(images=4, split="val", sqnr_db={"x": {"a": 40.0, "b": 38.0, "c": 20.0, "d": 25.0}})
    assert found.ranking("x") == ["a", "c", "b", "d"]  # drops: 100-40, 38-20, 40-38, 20-25
    assert keras_layer("vgg_edge_1/block1_conv1_1/BiasAdd", ["block1_conv1", "block1_conv2"]) == "block1_conv1"
    assert keras_layer("x/block1_conv1_1/Relu;x/block1_conv1_1/BiasAdd", ["block1_conv2", "block1_conv1"]) == "block1_conv1"
    assert keras_layer("StatefulPartitionedCall_1:0", ["predictions"]) is None


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_layer_errors_name_every_weighted_keras_layer_in_model_order(diagnosed, fmt):
    errors = diagnosed.diagnosis.sqnr_db[fmt]
    assert list(errors) == weighted_layers(diagnosed.source.model)
    assert list(errors)[0] == "vgg16_preprocess" and list(errors)[-2:] == ["head_dense", "predictions"]
    assert all(math.isfinite(db) and 0 < db < EXACT_DB for db in errors.values()), errors


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_error_accumulates_along_depth(diagnosed, fmt):
    """Each model runs end to end: the deep layers carry all the noise before them. The softmax output is
    left out: a confident model's softmax squashes the noise back out, below the first convolution's
    (a run trained without flips measured 44 dB at 'predictions' against 40 dB at block1_conv1)."""
    errors = diagnosed.diagnosis.sqnr_db[fmt]
    convs = [db for layer, db in errors.items() if layer.startswith("block")]
    assert errors["head_dense"] < min(convs)
    assert np.mean(convs[-3:]) < np.mean(convs[:3])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_float_layers_leave_the_top_ranked_layer_in_float(diagnosed, tmp_path, fmt):
    exporter, plain = diagnosed.artifacts[fmt]
    layer = diagnosed.diagnosis.ranking(fmt)[0]
    first = exporter.int8_attempts(MAX_DROP)[0]
    attempt = Attempt(f"{first.name}, {layer} in float", {**first.options, "float_layers": [layer]})
    conversion = exporter.convert(diagnosed.source, tmp_path / fmt, "int8", diagnosed.reader, attempt)
    assert conversion.settings["float_layers"] == [layer]
    model_file = exporter.model_file
    assert (tmp_path / fmt / model_file).read_bytes() != (plain / model_file).read_bytes()
    float_weights = FLOAT_WEIGHTS[fmt](tmp_path / fmt / model_file, diagnosed.source)
    assert [name for name, is_float in float_weights.items() if is_float] == [layer]
    errors = exporter.layer_errors(diagnosed.source, tmp_path / fmt, diagnosed.images)
    assert list(errors) == list(diagnosed.diagnosis.sqnr_db[fmt])


def _onnx_float_weights(model: Path, source: SourceModel) -> dict[str, bool]:
    """Keras layer -> whether its Conv/Gemm reads its weight straight from an initializer (no DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(model)).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    names = [layer.name for layer in source.model.layers]
    return {
        keras_layer(node.name, names): node.input[1] not in dequantized
        for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul")
    }


def _tflite_float_weights(model: Path, source: SourceModel) -> dict[str, bool]:
    """Keras layer -> whether its CONV_2D/FULLY_CONNECTED computes in float32 (output and weights)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    names = [layer.name for layer in source.model.layers]
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            output, weights = (interpreter._get_tensor_details(i, 0) for i in (op["outputs"][0], op["inputs"][1]))
            found[keras_layer(output["name"], names)] = output["dtype"] == weights["dtype"] == np.float32
    return found


def _openvino_float_weights(model: Path, source: SourceModel) -> dict[str, bool]:
    """Keras layer -> whether its Convolution/MatMul has no FakeQuantize on its input and float Constant weights."""
    import openvino as ov

    from vgg_edge.export.openvino import _weighted_ops

    def float_input(op) -> bool:
        producers = [op.input_value(i).get_node() for i in (0, 1)]
        return producers[0].get_type_name() != "FakeQuantize" and producers[1].get_type_name() == "Constant"

    return {layer: float_input(op) for layer, op in _weighted_ops(ov.Core().read_model(model), source).items()}


FLOAT_WEIGHTS = {"onnx": _onnx_float_weights, "tflite": _tflite_float_weights, "openvino": _openvino_float_weights}


def test_diagnosis_writes_json_table_and_plot(diagnosed, tmp_path):
    found = diagnosed.diagnosis
    assert (found.images, found.split) == (IMAGES, "test")
    found.write(tmp_path / "diagnosis")
    written = tmp_path / "diagnosis"
    assert sorted(p.name for p in written.iterdir()) == ["diagnosis.json", "diagnosis.md", "diagnosis.png"]
    assert json.loads((written / "diagnosis.json").read_text()) == json.loads(json.dumps(found.record()))
    table = (written / "diagnosis.md").read_text().splitlines()
    assert table[2] == "| layer | " + " | ".join(FORMATS) + " |"
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| layer")]
    assert [row.split(" | ")[0][2:] for row in rows] == weighted_layers(diagnosed.source.model)
    assert (written / "diagnosis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert found.record_for("onnx") == {"images": IMAGES, "split": "test", "sqnr_db": found.sqnr_db["onnx"], "ranking": found.ranking("onnx")}
