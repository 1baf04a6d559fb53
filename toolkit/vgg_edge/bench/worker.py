"""What runs inside one worker process: time one target at one thread count, or probe devices.

Started by the runner as `python -m vgg_edge.bench.worker JOB.json RESULT.json`, so that each
runtime's imports, thread pools and memory (peak RSS is reported) are its own. Nothing in the
parent imports this module.

With `BenchConfig.throughput`, the worker of the first thread count then measures throughput
mode, after the latency sweep and its peak RSS: the model opened again by its format's `streams`
backend (batch 1 on several streams at once, as OpenVINO's `benchmark_app -hint throughput` runs),
fed the same images through the same uint8 conversions as `Predictor.predict`.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import manifest
from ..backends import Streams, threaded_streams
from ..errors import VggEdgeError
from ..fileio import read_json, write_json
from ..formats import RUNTIMES
from ..run import RunDir
from .discovery import Target
from .runner import BenchConfig, not_installed

PERCENTILES = (50, 90, 95, 99)
THROUGHPUT_BATCH = 1  # throughput mode fills the cores with streams, not batches, as benchmark_app does on a batch-1 model


def measure(call, batches: list[np.ndarray], config: BenchConfig) -> tuple[np.ndarray, float]:
    """Warm up, then time `call` on `batches` in turn; returns per-call seconds and the wall time."""
    start = time.perf_counter()
    i = 0
    while i < config.warmup_runs or time.perf_counter() - start < config.warmup_seconds:
        call(batches[i % len(batches)])
        i += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < config.min_runs or time.perf_counter() - start < config.min_seconds:
        t0 = time.perf_counter()
        call(batches[len(times) % len(batches)])
        times.append(time.perf_counter() - t0)
    return np.asarray(times), time.perf_counter() - start


def latency_stats(seconds: np.ndarray) -> dict[str, float]:
    """Percentiles, min, max, mean and standard deviation of per-call times, in milliseconds."""
    ms = seconds * 1000.0
    stats = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES))}
    stats.update(min=float(ms.min()), max=float(ms.max()), mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0)
    return stats


def measure_streams(streams: Streams, batches: list[np.ndarray], config: BenchConfig) -> tuple[int, float, dict[int, np.ndarray]]:
    """Warm up, then start `batches` in turn, every request kept busy, until both a minimum count and duration are reached.

    Returns the batches timed, their wall time (the last ones' drain included, as benchmark_app
    counts it) and the last output of each batch index.
    """
    outputs: dict[int, np.ndarray] = {}

    def run(at_least: int, seconds: float) -> tuple[int, float]:
        began, n = time.perf_counter(), 0
        while n < at_least or time.perf_counter() - began < seconds:
            j = n % len(batches)
            streams.start(batches[j], lambda probs, j=j: outputs.__setitem__(j, probs))
            n += 1
        streams.wait()
        return n, time.perf_counter() - began

    run(max(config.warmup_runs, streams.requests), config.warmup_seconds)  # every request's first inference among them
    n, wall = run(config.min_runs, config.min_seconds)
    return n, wall, outputs


def throughput_mode(streams: Streams, predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, config: BenchConfig) -> dict:
    """The throughput-mode record: images per wall-clock second with every stream busy, and how the runtime ran them.

    `max_abs_diff` is the largest difference from `predict` (the latency sweep's path) on the same
    batches: near 0 unless results came back for the wrong inputs.
    """
    batches = make_batches(pixels, THROUGHPUT_BATCH)
    n, wall, outputs = measure_streams(streams, batches, config)
    return {"streams": streams.streams, "requests": streams.requests, "threads_per_stream": streams.threads_per_stream,
            "batch": THROUGHPUT_BATCH, "images": n * THROUGHPUT_BATCH, "seconds": wall, "images_per_s": n * THROUGHPUT_BATCH / wall,
            "max_abs_diff": max(float(np.abs(probs - predict(batches[j])).max()) for j, probs in outputs.items())}


def make_batches(pixels: np.ndarray, batch: int) -> list[np.ndarray]:
    """Distinct consecutive batches of the image pool (tiled when the pool is smaller than a batch)."""
    if len(pixels) < batch:
        pixels = np.concatenate([pixels] * -(-batch // len(pixels)))
    return [np.ascontiguousarray(pixels[i:i + batch]) for i in range(0, len(pixels) - batch + 1, batch)]


def _skip_reason(format: str, device: str) -> str | None:
    """Why a runtime's device cannot run here, found by asking the runtime itself (in a worker or the probe)."""
    return None if device == "CPU" else RUNTIMES[format].unavailable(device)


def probe_worker(job: dict, result_path: Path) -> None:
    """Body of the probe process: the skip reason (or None) of each non-CPU (format, device) in the job."""
    reasons = {}
    for format, device in job["probe"]:
        try:
            reasons[f"{format}:{device}"] = _skip_reason(format, device)
        except ImportError as exc:
            reasons[f"{format}:{device}"] = not_installed(format, exc.name or RUNTIMES[format].module)
    write_json(result_path, reasons)


def _open(target: Target, threads: int):
    """Load the target; returns `predict(uint8 batch) -> probs`."""
    if target.format == "keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        model = RunDir.open(target.path).load_model()
        spec = tf.TensorSpec([None, target.image_size, target.image_size, 3], tf.float32)
        forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda pixels: forward(tf.constant(pixels.astype(np.float32))).numpy()
    from ..runtime import load_artifact

    return load_artifact(target.path, threads=threads, device=target.device, allow_rejected=True).predict


def _open_streams(target: Target, threads: int, predict: Callable[[np.ndarray], np.ndarray]) -> Streams:
    """The target opened for throughput mode on `threads` cores, taking uint8 pixels to probabilities like `predict`.

    Keras stays sequential, one stream of `threads` threads over the latency sweep's `predict`:
    TensorFlow's thread pools belong to the process, so streams could not get threads of their own.
    """
    from ..runtime import from_model_output, to_model_input  # Predictor.predict's own conversions

    if target.format == "keras":
        return threaded_streams([predict], threads)
    info = manifest.read(target.path, verify=False)  # verified when the latency sweep loaded it
    streams = info.spec.streams(info.model_path, threads, target.device)

    def start(pixels: np.ndarray, done: Callable[[np.ndarray], None]) -> None:
        streams.start(to_model_input(pixels, info.input), lambda raw: done(from_model_output(np.asarray(raw), info.output)))

    return replace(streams, start=start)


def _import_runtime(target: Target) -> None:
    """Import the runtime's package up front so its import time is not charged to loading."""
    __import__(RUNTIMES[target.format].module)


def run_worker(job_path: Path, result_path: Path) -> None:
    """Body of one bench process: measure one target at one thread count; write the result JSON."""
    job = read_json(job_path)
    if "probe" in job:
        probe_worker(job, result_path)
        return
    target = Target(**job["target"])
    config = BenchConfig(**{**job["config"], "batch_sizes": tuple(job["batch_sizes"])})
    threads = int(job["threads"])
    pixels = np.load(job["images"])
    result: dict = {"threads": threads}
    try:
        t0 = time.perf_counter()
        _import_runtime(target)
        t1 = time.perf_counter()
        reason = _skip_reason(target.format, target.device)
        if reason:
            write_json(result_path, {**result, "status": "skipped", "reason": reason})
            return
        t2 = time.perf_counter()
        predict = _open(target, threads)
        t3 = time.perf_counter()
        probs = predict(pixels[:1])
        t4 = time.perf_counter()
    except ImportError as exc:
        write_json(result_path, {**result, "status": "skipped", "reason": not_installed(target.format, exc.name)})
        return
    if probs.shape != (1, job["classes"]):
        raise VggEdgeError(f"{target.path}: returned shape {probs.shape}, expected (1, {job['classes']})")
    result.update(status="ok", cold_start={"import_s": t1 - t0, "load_s": t3 - t2, "first_inference_s": t4 - t3, "total_s": (t1 - t0) + (t4 - t2)})
    measurements = []
    for batch in config.batch_sizes:
        seconds, wall = measure(predict, make_batches(pixels, batch), config)
        measurements.append({
            "threads": threads, "batch": batch, "runs": len(seconds), "seconds": wall,
            "latency_ms": latency_stats(seconds), "throughput_ips": batch * len(seconds) / wall,
            "samples_ms": [round(s * 1000.0, 4) for s in seconds],
        })
    result.update(measurements=measurements, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    if config.throughput:
        result["throughput_mode"] = throughput_mode(_open_streams(target, threads, predict), predict, pixels, config)
    write_json(result_path, result)


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m vgg_edge.bench.worker JOB.json RESULT.json (a worker started by `vgg-edge bench`)", file=sys.stderr)
        return 2
    try:
        run_worker(Path(argv[0]), Path(argv[1]))
    except VggEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
