"""Each edge runtime behind one small interface: open a model file on a device, then run batches.

`formats.FORMATS` names the backend of every format. A backend's runtime package is imported only
when a model is opened (or a device asked about), so the edge side needs just the one it uses.
`*_unavailable(device)` says why a runtime cannot use a device here (None when it can): bench
asks before timing, so an absent GPU becomes a skipped row with its reason.
`*_streams(model, cores, device)` open a model for bench's throughput mode: several batches in
flight at once (`Streams`), the way each runtime is meant to be loaded for throughput.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    run: Callable[[np.ndarray], np.ndarray]  # model-dtype batch -> raw output batch
    n_outputs: int | None  # the class count the runtime reports (None when the model leaves it dynamic)


@dataclass(frozen=True)
class Streams:
    """A model opened for throughput: up to `requests` batches in flight on `streams` parallel executions.

    `start(x, done)` runs batch `x` and calls `done(output)` when it is finished (from a runtime
    thread); it blocks while every request is busy. `wait()` returns once every started batch is
    done. The contract of OpenVINO's `AsyncInferQueue`, which the other runtimes get from threads.
    """

    start: Callable[[np.ndarray, Callable[[np.ndarray], None]], None]
    wait: Callable[[], None]
    streams: int
    requests: int
    threads_per_stream: int | None  # None where the runtime does not say (a GPU)


def threaded_streams(runs: list[Callable[[np.ndarray], np.ndarray]], threads_per_stream: int | None) -> Streams:
    """`Streams` for a runtime without an async API: one thread per entry of `runs`, each entry used by one thread at a time.

    Entries may repeat a thread-safe `run` (one ONNX Runtime session) or be separate replicas (one
    LiteRT interpreter each). An error inside a run is raised by the next `start` or `wait`.
    """
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for run in runs:
        idle.put(run)
    pool = ThreadPoolExecutor(len(runs), thread_name_prefix="stream")
    errors: list[BaseException] = []

    def job(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, done: Callable[[np.ndarray], None]) -> None:
        try:
            done(run(x))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        finally:
            idle.put(run)

    def start(x: np.ndarray, done: Callable[[np.ndarray], None]) -> None:
        run = idle.get()
        if errors:
            idle.put(run)
            raise errors[0]
        pool.submit(job, run, x, done)

    def wait() -> None:
        held = [idle.get() for _ in runs]
        for run in held:
            idle.put(run)
        if errors:
            raise errors[0]

    return Streams(start, wait, len(runs), len(runs), threads_per_stream)


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


def onnxruntime_streams(model: Path, cores: int, device: str) -> Streams:
    """One session called from `cores` threads at once (its `run` is thread-safe) with one intra-op thread: a
    single-threaded stream per core sharing one copy of the weights (OpenVINO's hint chose one per core too, on 2 cores)."""
    run = onnxruntime(model, 1, device).run
    return threaded_streams([run] * cores, 1)


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


def litert_streams(model: Path, cores: int, device: str) -> Streams:
    """`cores` interpreters of one thread each, one per Python thread: an interpreter is not thread-safe."""
    return threaded_streams([litert(model, 1, device).run for _ in range(cores)], 1)


def litert_unavailable(device: str) -> str | None:
    return None  # CPU only; its devices list says so


def _openvino_config(threads: int | None, device: str) -> dict[str, Any]:
    """Compile settings every OpenVINO model gets here: f32 arithmetic and the thread count on the CPU."""
    # On CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO would otherwise run float layers in bf16
    # (measured: max |dp| 2.6e-2 against Keras for an fp32 export); the artifact's precision is the promise.
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
    if threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def openvino(model: Path, threads: int | None, device: str) -> Backend:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), device, _openvino_config(threads, device))
    request = compiled.create_infer_request()
    classes = compiled.output(0).get_partial_shape()[-1]
    return Backend(lambda x: request.infer({0: x})[compiled.output(0)], classes.get_length() if classes.is_static else None)


def openvino_streams(model: Path, cores: int, device: str) -> Streams:
    """Compiled with the THROUGHPUT hint on `cores` threads, as `benchmark_app -hint throughput` does: OpenVINO chooses
    the streams and the number of infer requests, which an `AsyncInferQueue` keeps busy."""
    import openvino as ov

    config = {**_openvino_config(cores, device), "PERFORMANCE_HINT": "THROUGHPUT"}
    compiled = ov.Core().compile_model(str(model), device, config)
    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    streams = int(compiled.get_property("NUM_STREAMS"))
    infer_queue = ov.AsyncInferQueue(compiled, requests)
    infer_queue.set_callback(lambda request, done: done(request.get_output_tensor(0).data.copy()))  # the request is reused next
    threads = int(compiled.get_property("INFERENCE_NUM_THREADS")) // streams if device == "CPU" else None
    return Streams(lambda x, done: infer_queue.start_async({0: x}, done), infer_queue.wait_all, streams, requests, threads)


def openvino_unavailable(device: str) -> str | None:
    import openvino as ov

    have = ov.Core().available_devices
    if device not in have:
        return f"OpenVINO {ov.get_version().split('-')[0]} sees no {device} device (has {', '.join(have)})"
    return None


def keras_unavailable(device: str) -> str | None:
    return None  # the baseline runs on the CPU only
