"""TFLite (LiteRT): SavedModel -> `TFLiteConverter.from_saved_model`.

fp16 stores float16 weights; dynamic quantizes weights to int8 with float activations (no
calibration); int8 is full-integer (`TFLITE_BUILTINS_INT8`, per-channel weights) calibrated by a
representative dataset, with int8 input and output tensors whose scale and zero point the
manifest carries. TFLite's converter calibrates by min/max only, so its fallbacks keep things in
float instead: float input/output tensors, or named Keras layers (via the quantization
debugger's deny-list).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .base import Attempt, Conversion, Exporter, SourceModel
from .calibration import CalibrationReader
from .diagnose import keras_layer, sqnr_db, weighted_layers


class TfliteExporter(Exporter):
    ranked_fallback = True

    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        return [
            Attempt("full int8, int8 input/output", {"io": "int8"}),
            Attempt("int8, float input/output", {"io": "float32"}),
        ]

    def convert(self, source: SourceModel, dest: Path, precision: str, calibration: CalibrationReader | None, attempt: Attempt) -> Conversion:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model))
        settings: dict = {"converter": "tf.lite.TFLiteConverter.from_saved_model (after keras model.export)"}
        if precision != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            converter.target_spec.supported_types = [tf.float16]
            settings["quantization"] = "float16 weights (supported_types=[tf.float16])"
        elif precision == "dynamic":
            settings["quantization"] = "dynamic range: int8 weights, float activations (Optimize.DEFAULT, no representative dataset)"
        if precision == "int8":
            settings["float_layers"] = float_layers = attempt.options.get("float_layers", [])
            flatbuffer, settings["quantization"] = _full_int8(tf, converter, calibration, attempt.options, _float_tensors(source, float_layers))
        else:
            flatbuffer = converter.convert()
        dest.mkdir(parents=True, exist_ok=True)
        (dest / self.model_file).write_bytes(flatbuffer)
        return Conversion(*_io_specs(flatbuffer), settings)

    def layer_errors(self, source: SourceModel, artifact: Path, images: np.ndarray) -> dict[str, float]:
        """The float model (converted without optimizations) and the int8 artifact run in the LiteRT interpreter
        with `experimental_preserve_all_tensors`, each layer's last output tensor read back (int8 dequantized
        with its scale and zero point) and compared.

        Not `tf.lite.experimental.QuantizationDebugger`: its per-layer statistics compare each quantized op
        with a float op fed the same dequantized input (the error a layer adds on its own, not the error
        accumulated up to it), its model statistics cover the final output only, and it re-converts from
        the converter rather than reading the artifact.
        """
        float_outputs = _layer_outputs(_float_model(source).read_bytes(), images, source)
        int8_outputs = _layer_outputs((artifact / self.model_file).read_bytes(), images, source)
        return {layer: sqnr_db(value, int8_outputs[layer]) for layer, value in float_outputs.items() if layer in int8_outputs}


def _full_int8(tf, converter, calibration: CalibrationReader, options: dict, float_tensors: list[str]) -> tuple[bytes, dict]:
    """Full-integer conversion calibrated on `calibration`; the ops writing `float_tensors` stay in float."""
    def representative_dataset():
        for batch in calibration.batches():
            yield [batch]

    converter.representative_dataset = representative_dataset
    int8_io = options["io"] == "int8"
    settings = {
        "tool": "TFLiteConverter representative_dataset", "calibration_method": "MinMax", "per_channel": True,
        "io": options["io"], "denylisted_nodes": float_tensors,
    }
    if int8_io:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if not float_tensors:
        return converter.convert(), settings
    with warnings.catch_warnings():  # the debugger uses TF's own (deprecated) interpreter internally
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset,
            # the debugger's own quantizer ignores inference_input/output_type: fully_quantize makes the io int8
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_tensors, fully_quantize=int8_io),
        )
        return debugger.get_nondebug_quantized_model(), settings


def _float_model(source: SourceModel) -> Path:
    """The SavedModel converted without optimizations, once per source: the reference whose tensor names the
    int8 conversions keep."""
    import tensorflow as tf

    def convert(path: Path) -> None:
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model)).convert())

    return source.cached("float.tflite", convert)


def _interpreter(flatbuffer: bytes):
    """An interpreter that keeps every tensor readable. Without the default XNNPACK delegate: the tensors
    inside a delegated partition are never written, whatever `experimental_preserve_all_tensors` says."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(
        model_content=flatbuffer, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def _layer_tensors(interpreter, source: SourceModel) -> dict[str, list[int]]:
    """Each Keras layer with weights -> the output tensors of its ops, in graph order. An op named after no
    layer (SOFTMAX, a QUANTIZE or DEQUANTIZE the converter added) belongs to the layer whose tensor it reads.
    (The op list is the interpreter's private API, the one TF's own quantization debugger uses.)"""
    names = [layer.name for layer in source.model.layers]
    owner: dict[int, str] = {}
    tensors: dict[str, list[int]] = {}
    for op in interpreter._get_ops_details():
        output = op["outputs"][0]
        name = interpreter._get_tensor_details(output, 0)["name"]
        layer = keras_layer(name, names) or next((owner[i] for i in op["inputs"] if i in owner), None)
        if layer:
            owner[output] = layer
            tensors.setdefault(layer, []).append(output)
    return {layer: tensors[layer] for layer in weighted_layers(source.model) if layer in tensors}


def _float_tensors(source: SourceModel, float_layers: list[str]) -> list[str]:
    """The tensor names of the float model's ops for `float_layers`: the quantization debugger's deny-list."""
    if not float_layers:
        return []
    interpreter = _interpreter(_float_model(source).read_bytes())
    tensors = _layer_tensors(interpreter, source)
    return [interpreter._get_tensor_details(i, 0)["name"] for layer in float_layers for i in tensors[layer]]


def _layer_outputs(flatbuffer: bytes, images: np.ndarray, source: SourceModel) -> dict[str, np.ndarray]:
    """Every layer's output on `images` (one batch), as float32."""
    interpreter = _interpreter(flatbuffer)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.int8:
        images = np.clip(np.round(images / scale + zero_point), -128, 127)
    interpreter.set_tensor(detail["index"], images.astype(detail["dtype"]))
    interpreter.invoke()

    def read(index: int) -> np.ndarray:
        value = interpreter.get_tensor(index)
        scale, zero_point = interpreter._get_tensor_details(index, 0)["quantization"]
        return (value.astype(np.float32) - zero_point) * scale if value.dtype == np.int8 else value

    return {layer: read(tensors[-1]) for layer, tensors in _layer_tensors(interpreter, source).items()}


def _io_specs(flatbuffer: bytes) -> tuple[dict, dict]:
    """Input and output tensors as the interpreter sees them (with their quantization, if integer)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)

    def spec(detail: dict) -> dict:
        out = {
            "name": detail["name"], "shape": [None if d < 0 else int(d) for d in detail["shape_signature"]],
            "dtype": detail["dtype"].__name__,
        }
        scale, zero_point = detail["quantization"]
        if detail["dtype"].__name__ != "float32" and scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return out

    return spec(interpreter.get_input_details()[0]), spec(interpreter.get_output_details()[0])
