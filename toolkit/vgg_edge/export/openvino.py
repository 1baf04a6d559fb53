"""OpenVINO IR: SavedModel -> `ov.convert_model` -> `ov.save_model`.

fp32 needs `compress_to_fp16=False` (the default silently writes fp16 weights); fp16 is that
compression; dynamic is NNCF weight compression (int8 weights, float activations, no
calibration); int8 is `nncf.quantize` on the calibration set, and its fallback is
`nncf.quantize_with_accuracy_control`, which keeps the most sensitive layers in float until the
accuracy drop on the run's VALIDATION split is within the gate's bound (the test split stays
unseen until the parity run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VggEdgeError
from .base import Attempt, Conversion, Exporter, SourceModel
from .calibration import CalibrationReader
from .diagnose import sqnr_db, weighted_layers


class OpenvinoExporter(Exporter):
    ranked_fallback = False  # quantize_with_accuracy_control ranks the layers and keeps the sensitive ones in float itself

    def int8_attempts(self, max_drop: float) -> list[Attempt]:
        return [
            Attempt("nncf.quantize", {}),
            Attempt("nncf.quantize_with_accuracy_control on the val split", {"accuracy_control": True, "max_drop": max_drop}, tunes_on_val=True),
        ]

    def convert(self, source: SourceModel, dest: Path, precision: str, calibration: CalibrationReader | None, attempt: Attempt) -> Conversion:
        import openvino as ov

        model = ov.convert_model(str(source.saved_model))
        settings: dict = {"converter": "openvino.convert_model(SavedModel from keras model.export)"}
        if precision == "dynamic":
            import nncf

            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            settings["quantization"] = "nncf.compress_weights(INT8_ASYM): int8 weights, float activations"
        elif precision == "int8":
            model, settings["quantization"] = _quantize(model, source, calibration, attempt.options)
            settings["float_layers"] = _float_layers(model, source)  # what the graph holds: accuracy control chooses its own
        dest.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, dest / self.model_file, compress_to_fp16=precision == "fp16")
        settings["compress_to_fp16"] = precision == "fp16"
        return Conversion(_port_spec(model.inputs[0], "float32"), _port_spec(model.outputs[0], "float32"), settings)

    def layer_errors(self, source: SourceModel, artifact: Path, images: np.ndarray) -> dict[str, float]:
        """The float model (`convert_model` of the SavedModel, as `convert` starts) and the artifact, each with
        every layer's output added as a model output (`Model.add_outputs`), compiled for the CPU in f32 (it
        would otherwise run float layers in bf16 on CPUs that have it) and run on `images`."""
        import openvino as ov

        core = ov.Core()
        outputs = {}
        for name, model in (("float", ov.convert_model(str(source.saved_model))), ("int8", core.read_model(artifact / self.model_file))):
            ports = {layer: _layer_output(op) for layer, op in _weighted_ops(model, source).items()}
            added = model.add_outputs(list(ports.values()))
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            result = compiled(images)
            first = len(compiled.outputs) - len(added)
            outputs[name] = {layer: result[first + i] for i, layer in enumerate(ports)}
        return {layer: sqnr_db(value, outputs["int8"][layer]) for layer, value in outputs["float"].items()}


def _quantize(model, source: SourceModel, calibration: CalibrationReader, options: dict):
    import nncf

    dataset = nncf.Dataset(list(calibration.batches()))
    size = len(calibration)
    if not options.get("accuracy_control"):
        ops = _weighted_ops(model, source)
        ignored = [ops[layer].get_friendly_name() for layer in options.get("float_layers", [])]
        quantized = nncf.quantize(model, dataset, subset_size=size, ignored_scope=nncf.IgnoredScope(names=ignored))
        return quantized, {"tool": "nncf.quantize", "preset": "performance", "subset_size": size, "ignored_scope": ignored}
    pixels, labels = source.validation
    reference = source.decide(source.model.predict(pixels.astype(np.float32), batch_size=32, verbose=0))
    items = [(pixels[i:i + 32].astype(np.float32), labels[i:i + 32], reference[i:i + 32]) for i in range(0, len(pixels), 32)]
    classes = int(source.model.output_shape[-1])

    def parity_metric(compiled, batches) -> float:
        """The parity gate's criterion on (a subset of) the val split: 1 minus the largest drop of accuracy or of a
        class's sensitivity (NNCF divides by the float model's metric, so it must not be 0)."""
        predicted, truth, keras = (np.concatenate(part) for part in zip(*((source.decide(compiled(x)[0]), y, r) for x, y, r in batches)))
        return 1.0 + float(np.min(_recalls(predicted, truth, classes) - _recalls(keras, truth, classes)))

    quantized = nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items, lambda item: item[0]), parity_metric,
        max_drop=options["max_drop"] / 100, drop_type=nncf.DropType.ABSOLUTE, subset_size=size,
    )
    return quantized, {
        "tool": "nncf.quantize_with_accuracy_control", "subset_size": size, "validation": f"val split, {len(pixels)} images; metric: largest drop of accuracy or any class's sensitivity vs Keras",
        "max_drop_pp": options["max_drop"],
    }


def _float_layers(model, source: SourceModel) -> list[str]:
    """The Keras layers whose Convolution or MatMul the quantized `model` computes in float, read from the graph:
    those an ignored scope kept and those NNCF's accuracy control reverted."""
    return [layer for layer, op in _weighted_ops(model, source).items() if not _quantized(op.input_value(1).get_node())]


def _quantized(node, hops: int = 3) -> bool:
    """Whether a weight input is int8: a FakeQuantize (NNCF's graph in memory) or an int8 constant (the saved IR)
    within `hops` nodes (a Convert, Multiply or Reshape may stand between)."""
    kind = node.get_type_name()
    if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8")):
        return True
    return hops > 0 and any(_quantized(value.get_node(), hops - 1) for value in node.input_values())


def _weighted_ops(model, source: SourceModel) -> dict:
    """Each Keras layer with weights -> its Convolution or MatMul node. Matched by position, not by name: the TF
    frontend's transpose sinking renames most nodes ('Convolution_161', numbered by a process-wide counter, so
    the same layer is named differently by each conversion); VGG is a chain, and its weighted ops in graph
    order are the Keras layers with weights in model order."""
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    layers = weighted_layers(source.model)
    if len(ops) != len(layers):
        raise VggEdgeError(f"the OpenVINO model has {len(ops)} Convolution/MatMul nodes for {len(layers)} Keras layers with weights: cannot match them")
    return dict(zip(layers, ops))


def _layer_output(op):
    """A weighted node's layer output: past its bias Add and activation, and the FakeQuantize that NNCF put
    after them, if any (the value the next layer reads)."""
    node = op
    while True:
        consumers = [target.get_node() for target in node.output(0).get_target_inputs()]
        if len(consumers) != 1 or consumers[0].get_type_name() not in ("Add", "Relu", "Softmax", "FakeQuantize"):
            return node.output(0)
        node = consumers[0]
        if node.get_type_name() == "FakeQuantize":
            return node.output(0)


def _port_spec(port, dtype: str) -> dict:
    shape = [None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
    return {"name": port.get_any_name(), "shape": shape, "dtype": dtype}


def _recalls(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Accuracy, then each class's sensitivity (1.0 for a class absent from `truth`)."""
    per_class = [(predicted[truth == c] == c).mean() if (truth == c).any() else 1.0 for c in range(classes)]
    return np.array([(predicted == truth).mean(), *per_class])
