"""TFLite (LiteRT): SavedModel -> `TFLiteConverter.from_saved_model`.

fp16 stores float16 weights; dynamic quantizes weights to int8 with float activations (no
calibration); int8 is full-integer (`TFLITE_BUILTINS_INT8`, per-channel weights) calibrated by a
representative dataset, with int8 input and output tensors whose scale and zero point the
manifest carries. TFLite's converter calibrates by min/max only, so its fallback keeps the float
ends instead: float input/output tensors and the dense head in float (via the quantization
debugger's deny-list).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .base import Attempt, Conversion, Exporter, SourceModel
from .calibration import CalibrationReader


class TfliteExporter(Exporter):
    format = "tflite"
    model_file = "model.tflite"

    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        return [
            Attempt("full int8, int8 input/output", {"io": "int8"}),
            Attempt("int8, float input/output and dense head", {"io": "float32", "float_ops": ["FULLY_CONNECTED"]}),
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
            flatbuffer, settings["quantization"] = _full_int8(tf, converter, calibration, attempt.options)
        else:
            flatbuffer = converter.convert()
        dest.mkdir(parents=True, exist_ok=True)
        (dest / self.model_file).write_bytes(flatbuffer)
        return Conversion(*_io_specs(flatbuffer), settings)


def _full_int8(tf, converter, calibration: CalibrationReader, options: dict) -> tuple[bytes, dict]:
    def representative_dataset():
        for batch in calibration.batches():
            yield [batch]

    converter.representative_dataset = representative_dataset
    float_ops = options.get("float_ops", [])
    settings = {
        "tool": "TFLiteConverter representative_dataset", "calibration_method": "MinMax", "per_channel": True,
        "io": options["io"], "float_ops": float_ops,
    }
    if options["io"] == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if not float_ops:
        return converter.convert(), settings
    with warnings.catch_warnings():  # the debugger uses TF's own (deprecated) interpreter internally
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated", category=UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops),
        )
        return debugger.get_nondebug_quantized_model(), settings


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
