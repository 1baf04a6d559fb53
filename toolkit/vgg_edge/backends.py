"""Each edge runtime behind one small interface: open a model file on a device, then run batches.

`formats.FORMATS` names the backend of every format. A backend's runtime package is imported only
when a model is opened (or a device asked about), so the edge side needs just the one it uses.
`*_unavailable(device)` says why a runtime cannot use a device here (None when it can): bench
asks before timing, so an absent GPU becomes a skipped row with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    run: Callable[[np.ndarray], np.ndarray]  # model-dtype batch -> raw output batch
    n_outputs: int | None  # the class count the runtime reports (None when the model leaves it dynamic)


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


#: The ONNX Runtime execution providers behind each device, preferred first.
ORT_PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "TensorRT": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def onnxruntime(model: Path, threads: int | None, device: str) -> Backend:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=ORT_PROVIDERS[device])
    if session.get_providers()[0] != ORT_PROVIDERS[device][0]:  # ORT falls back silently; a GPU figure must come from the GPU
        raise RuntimeError(f"{ORT_PROVIDERS[device][0]} did not start (running on {session.get_providers()[0]})")
    name = session.get_inputs()[0].name
    return Backend(lambda x: session.run(None, {name: x})[0], _static(session.get_outputs()[0].shape[-1]))


def onnxruntime_unavailable(device: str) -> str | None:
    import onnxruntime as ort

    provider, have = ORT_PROVIDERS[device][0], ort.get_available_providers()
    if provider not in have:
        return f"{provider} is not in this onnxruntime {ort.__version__} (has {', '.join(have)}); needs onnxruntime-gpu and an NVIDIA GPU"
    return None


def litert(model: Path, threads: int | None, device: str) -> Backend:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=threads or None)
    input_index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]
    state: dict[str, Any] = {"batch": None}

    def run(x: np.ndarray) -> np.ndarray:
        if state["batch"] != len(x):  # TFLite tensors have a fixed batch: resize, then re-allocate
            interpreter.resize_tensor_input(input_index, list(x.shape))
            interpreter.allocate_tensors()
            state["batch"] = len(x)
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"]).copy()

    return Backend(run, _static(int(output["shape"][-1])))


def litert_unavailable(device: str) -> str | None:
    return None  # CPU only; its devices list says so


def openvino(model: Path, threads: int | None, device: str) -> Backend:
    import openvino as ov

    # On CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO would otherwise run float layers in bf16
    # (measured: max |dp| 2.6e-2 against Keras for an fp32 export); the artifact's precision is the promise.
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
    if threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(model), device, config)
    request = compiled.create_infer_request()
    classes = compiled.output(0).get_partial_shape()[-1]
    return Backend(lambda x: request.infer({0: x})[compiled.output(0)], classes.get_length() if classes.is_static else None)


def openvino_unavailable(device: str) -> str | None:
    import openvino as ov

    have = ov.Core().available_devices
    if device not in have:
        return f"OpenVINO {ov.get_version().split('-')[0]} sees no {device} device (has {', '.join(have)})"
    return None


def keras_unavailable(device: str) -> str | None:
    return None  # the baseline runs on the CPU only
