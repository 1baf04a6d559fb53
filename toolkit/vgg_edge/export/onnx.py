"""ONNX: tf2onnx from the Keras model (opset 17); fp16 by onnxruntime's float16 pass; dynamic and
int8 by onnxruntime.quantization (int8: pre-processing, then static QDQ with a calibration reader,
optionally leaving named Keras layers in float).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .base import Attempt, Conversion, Exporter, SourceModel
from .calibration import CalibrationReader
from .diagnose import keras_layer, sqnr_db, weighted_layers

OPSET = 17  # tf2onnx 1.17 accepts 13-18


class OnnxExporter(Exporter):
    ranked_fallback = True

    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        return [
            Attempt("per-tensor MinMax", {"per_channel": False, "method": "MinMax"}),
            Attempt("per-channel MinMax", {"per_channel": True, "method": "MinMax"}),
            Attempt("per-channel Percentile", {"per_channel": True, "method": "Percentile"}),
        ]

    def convert(self, source: SourceModel, dest: Path, precision: str, calibration: CalibrationReader | None, attempt: Attempt) -> Conversion:
        import onnx

        float_path = _float_graph(source)  # converted once, quantized per precision
        dest.mkdir(parents=True, exist_ok=True)
        model_path = dest / self.model_file
        settings: dict = {"converter": "tf2onnx.convert.from_keras", "opset": OPSET}
        if precision == "fp32":
            shutil.copyfile(float_path, model_path)
        elif precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True), str(model_path))
            settings["fp16"] = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
        elif precision == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(float_path), str(model_path), weight_type=QuantType.QUInt8)
            settings["quantization"] = (
                "onnxruntime.quantization.quantize_dynamic: uint8 weights; activations quantized at run time with one scale "
                "per input batch, so a prediction depends slightly on the batch it is in"
            )
        elif precision == "int8":
            settings["float_layers"] = attempt.options.get("float_layers", [])
            settings["quantization"] = _quantize_static(source, model_path, calibration, attempt)
        graph = onnx.load(str(model_path), load_external_data=False).graph
        return Conversion(_tensor_spec(graph.input[0]), _tensor_spec(graph.output[0]), settings)

    def layer_errors(self, source: SourceModel, artifact: Path, images: np.ndarray) -> dict[str, float]:
        """onnxruntime's QDQ debugger (`qdq_loss_debug`): every tensor of the pre-processed float graph (the one
        that was quantized, so the tensor names match) and of the QDQ model becomes an output; both run on
        `images`; each float activation is matched with the QDQ model's dequantized one and scored
        (`xmodel_err`, with `sqnr_db`). The debugger runs with graph optimizations off, i.e. it simulates int8
        in float (DequantizeLinear -> float Conv) where onnxruntime would fuse integer kernels: the same
        rounding points, the accumulation order may differ slightly.
        """
        import onnx
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations, compute_activation_error, create_activation_matching, modify_model_output_intermediate_tensors,
        )

        prepared = _prepared_graph(source)
        graph = onnx.load(str(prepared)).graph
        outputs = {layer: nodes[-1].output[0] for layer, nodes in _layer_nodes(graph, source).items()}
        activations = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in (("float", prepared), ("qdq", artifact / self.model_file)):
                augmented = Path(tmp) / f"{name}.onnx"
                modify_model_output_intermediate_tensors(str(path), str(augmented))
                activations[name] = collect_activations(str(augmented), _Reader(graph.input[0].name, [images]))
        matching = create_activation_matching(activations["qdq"], activations["float"])
        for tensor in outputs.values():  # a layer left in float has no Q/DQ pair after it: its own output is what follows reads
            quantized = activations["qdq"][tensor]
            matching.setdefault(tensor, {"pre_qdq": quantized, "post_qdq": quantized, "float": activations["float"][tensor]})
        errors = compute_activation_error(matching, lambda float_, quantized: sqnr_db(np.concatenate(float_), np.concatenate(quantized)))
        return {layer: errors[tensor]["xmodel_err"] for layer, tensor in outputs.items()}


def _float_graph(source: SourceModel) -> Path:
    """The Keras model through tf2onnx, converted once per source."""

    def from_keras(path: Path) -> None:
        import tensorflow as tf
        import tf2onnx

        signature = (tf.TensorSpec(source.input_shape, tf.float32, name="image"),)
        tf2onnx.convert.from_keras(source.model, input_signature=signature, opset=OPSET, output_path=str(path))

    return source.cached("float.onnx", from_keras)


def _prepared_graph(source: SourceModel) -> Path:
    """The float graph after onnxruntime's quantization pre-processing (shape inference, MatMul+Add -> Gemm): what
    `quantize_static` quantizes, so its node and tensor names are the int8 model's."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path = _float_graph(source)
    return source.cached("prepared.onnx", lambda path: quant_pre_process(str(float_path), str(path)))


def _layer_nodes(graph, source: SourceModel) -> dict[str, list]:
    """Each Keras layer with weights -> its nodes in graph order (the last one makes the layer's output: the Relu,
    the Softmax). tf2onnx names a node after the layer scope it came from."""
    names = [layer.name for layer in source.model.layers]
    nodes: dict[str, list] = {}
    for node in graph.node:
        if layer := keras_layer(node.name, names):
            nodes.setdefault(layer, []).append(node)
    return {layer: nodes[layer] for layer in weighted_layers(source.model) if layer in nodes}


class _Reader:
    """onnxruntime's calibration-reader protocol (`get_next`, then None) over float32 NHWC batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._feeds = ({input_name: batch} for batch in batches)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)

    def __iter__(self):
        return iter(self.get_next, None)


def _quantize_static(source: SourceModel, model_path: Path, calibration: CalibrationReader, attempt: Attempt) -> dict:
    """Shape-inference pre-processing, then static QDQ quantization calibrated on `calibration`; the nodes of the
    attempt's `float_layers` are excluded (left in float)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    prepared = _prepared_graph(source)
    graph = onnx.load(str(prepared)).graph
    options = attempt.options
    layer_nodes = _layer_nodes(graph, source)
    excluded = [node.name for layer in options.get("float_layers", []) for node in layer_nodes[layer]]
    quantize_static(
        str(prepared), str(model_path), _Reader(graph.input[0].name, calibration.batches()), quant_format=QuantFormat.QDQ,
        per_channel=options["per_channel"], activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, options["method"]), nodes_to_exclude=excluded,
    )
    return {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": "int8", "weights": "int8",
        "per_channel": options["per_channel"], "calibration_method": options["method"], "nodes_to_exclude": excluded,
    }


def _tensor_spec(value_info) -> dict:
    import onnx

    tensor = value_info.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return {"name": value_info.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}
