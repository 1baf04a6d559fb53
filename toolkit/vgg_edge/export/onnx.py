"""ONNX: tf2onnx from the Keras model (opset 17); fp16 by onnxruntime's float16 pass; dynamic and
int8 by onnxruntime.quantization (int8: pre-processing, then static QDQ with a calibration reader).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import Attempt, Conversion, Exporter, SourceModel
from .calibration import CalibrationReader

OPSET = 17  # tf2onnx 1.17 accepts 13-18


class OnnxExporter(Exporter):
    format = "onnx"
    model_file = "model.onnx"

    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        return [
            Attempt("per-tensor MinMax", {"per_channel": False, "method": "MinMax"}),
            Attempt("per-channel MinMax", {"per_channel": True, "method": "MinMax"}),
            Attempt("per-channel Percentile", {"per_channel": True, "method": "Percentile"}),
            Attempt("per-channel MinMax, first and last layers in float", {"per_channel": True, "method": "MinMax", "float_ends": True}),
        ]

    def convert(self, source: SourceModel, dest: Path, precision: str, calibration: CalibrationReader | None, attempt: Attempt) -> Conversion:
        import onnx
        import tensorflow as tf
        import tf2onnx

        def from_keras(path: Path) -> None:
            signature = (tf.TensorSpec(source.input_shape, tf.float32, name="image"),)
            tf2onnx.convert.from_keras(source.model, input_signature=signature, opset=OPSET, output_path=str(path))

        float_path = source.cached("float.onnx", from_keras)  # converted once, quantized per precision
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
            settings["quantization"] = _quantize_static(source, float_path, model_path, calibration, attempt)
        graph = onnx.load(str(model_path), load_external_data=False).graph
        return Conversion(_tensor_spec(graph.input[0]), _tensor_spec(graph.output[0]), settings)


def _quantize_static(source: SourceModel, float_path: Path, model_path: Path, calibration: CalibrationReader, attempt: Attempt) -> dict:
    """Shape-inference pre-processing, then static QDQ quantization calibrated on `calibration`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, input_name: str):
            self._batches = ({input_name: batch} for batch in calibration.batches())

        def get_next(self):
            return next(self._batches, None)

    prepared = source.cached("prepared.onnx", lambda path: quant_pre_process(str(float_path), str(path)))
    graph = onnx.load(str(prepared)).graph
    options = attempt.options
    excluded = _end_layers(graph) if options.get("float_ends") else []
    quantize_static(
        str(prepared), str(model_path), Reader(graph.input[0].name), quant_format=QuantFormat.QDQ,
        per_channel=options["per_channel"], activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, options["method"]), nodes_to_exclude=excluded,
    )
    return {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": "int8", "weights": "int8",
        "per_channel": options["per_channel"], "calibration_method": options["method"], "float_nodes": excluded,
    }


def _end_layers(graph) -> list[str]:
    """The first two convolutions (the in-graph preprocessing and block1_conv1) and the last dense layer."""
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    dense = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    return convs[:2] + dense[-1:]


def _tensor_spec(value_info) -> dict:
    import onnx

    tensor = value_info.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return {"name": value_info.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}
