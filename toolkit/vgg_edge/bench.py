"""`vgg-edge bench`: latency and throughput of every export in every runtime, beside its accuracy.

What is timed is the edge path itself: `runtime.load_artifact(...).predict(uint8 pixels)` for an
exported artifact (input conversion and quantization included), and the run's Keras model called
through a `tf.function` for the baseline, fed the same real test-split images decoded by the
training reader. Each (target, thread count) runs in its own Python process
(`python -m vgg_edge.bench JOB.json RESULT.json`), so one runtime's memory, thread pools and
import side effects never touch another's figures, and peak RSS is that runtime's own.

Per process: import, load and first inference are timed apart (cold start); then, per batch size,
warm-up by count *and* seconds, and timed runs until both a minimum count and a minimum duration
are reached. Latency is per call (one batch); throughput is images per wall-clock second.
The first thread count gets the whole batch sweep, every other thread count batch 1 (the thread
sweep). Absent runtimes and devices are found before any timing (package lookups, and one probe
process asking the runtimes for their GPU devices) and are not timed; bench.json and bench.csv keep
them as rows with status "skipped" and the reason, the terminal and bench.md as one line each.

`bench.json` (schema `vgg-edge-bench/1`) holds everything; `bench.csv`, `bench.md`, the plots and
the terminal table (80 columns by default, every column with --wide) are views of it. `compare`
sets two bench.json files side by side for a CI gate.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import VggEdgeError
from .fileio import read_json, sha256_file, write_bytes, write_json
from .run import RunDir
from .runtime import MANIFEST, read_manifest
from .versions import installed_versions

SCHEMA = "vgg-edge-bench/1"
PERCENTILES = (50, 90, 95, 99)
#: The runtime behind each format, and the devices tried for it (an absent one becomes a skipped row).
RUNTIMES = {"keras": "tensorflow", "onnx": "onnxruntime", "tflite": "ai-edge-litert", "openvino": "openvino"}
DEVICES = {"keras": ("CPU",), "onnx": ("CPU", "CUDA", "TensorRT"), "tflite": ("CPU",), "openvino": ("CPU", "GPU")}
#: The ONNX Runtime execution provider behind each device.
ORT_PROVIDERS = {"CUDA": "CUDAExecutionProvider", "TensorRT": "TensorrtExecutionProvider"}
PACKAGES = ("vgg-edge", "numpy", "tensorflow", "keras", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "pillow")


@dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    threads: tuple[int, ...] = ()  # first: full batch sweep; the rest: batch 1. Empty: all cores, then 1.
    min_runs: int = 20
    min_seconds: float = 2.0
    warmup_runs: int = 3
    warmup_seconds: float = 1.0
    images: int = 64  # test-split images cycled through as inputs

    def thread_counts(self) -> tuple[int, ...]:
        if self.threads:
            return tuple(dict.fromkeys(self.threads))
        cores = available_cores()
        return tuple(dict.fromkeys((cores, 1)))


@dataclass(frozen=True)
class Target:
    """One model on one runtime and device: the run's Keras baseline or an exported artifact."""

    name: str  # "keras", or the artifact folder's name ("onnx-int8")
    format: str  # keras | onnx | tflite | openvino
    precision: str
    device: str  # CPU | CUDA | TensorRT | GPU
    path: str  # run directory (keras) or artifact folder
    run: str  # run directory whose test split feeds it and whose Keras model is its baseline
    image_size: int

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.format]

    @property
    def key(self) -> str:
        """Identity across bench files: what `compare` matches on."""
        return f"{Path(self.run).name}/{self.name}@{self.runtime}:{self.device}"


# ----------------------------------------------------------------------------------- discovery


def discover(paths: list[Path], baseline: bool = True) -> list[Target]:
    """Targets for the given paths: artifact folders, folders of them (`exported/<run>`), run directories.

    Each artifact's source run (named in its manifest) supplies the test images and, with
    `baseline`, the Keras model every ratio is taken against.
    """
    artifacts: list[Path] = []
    runs: list[Path] = []
    for path in paths:
        if (path / MANIFEST).is_file():
            artifacts.append(path)
        elif (path / "model.keras").is_file():
            runs.append(path.resolve())  # manifests record resolved paths: one run, one baseline
        elif path.is_dir() and (found := sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())):
            artifacts.extend(found)
        else:
            raise VggEdgeError(f"{path}: not an artifact folder, a folder of artifacts or a run directory; pass exported/<run> or runs/<run>")
    targets: list[Target] = []
    for folder in artifacts:
        info = read_manifest(folder, verify=False)
        run = _source_run(info.manifest, folder, runs)
        for device in DEVICES[info.format]:
            targets.append(Target(folder.name, info.format, info.precision, device, str(folder), str(run), info.image_size))
    for run in dict.fromkeys([*runs, *(Path(t.run) for t in targets)]) if baseline else runs:
        opened = RunDir.open(run)
        targets.insert(0, Target("keras", "keras", "fp32", "CPU", str(run), str(run), opened.image_size))
    if not targets:
        raise VggEdgeError(f"{', '.join(map(str, paths))}: no artifacts found; run `vgg-edge export RUN` first")
    return targets


def _source_run(manifest: dict, folder: Path, runs: list[Path]) -> Path:
    """The run an artifact was exported from: one given on the command line, else the manifest's."""
    if len(runs) == 1:
        return runs[0]
    recorded = (manifest.get("source") or {}).get("run")
    if recorded and (Path(recorded) / "model.keras").is_file():
        return Path(recorded)
    raise VggEdgeError(f"{folder / MANIFEST}: its source run {recorded or '(none recorded)'} is not here; pass the run directory as well (vgg-edge bench RUN {folder})")


# ----------------------------------------------------------------------------------- the worker


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
    ms = seconds * 1000.0
    stats = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES))}
    stats.update(min=float(ms.min()), max=float(ms.max()), mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0)
    return stats


def make_batches(pixels: np.ndarray, batch: int) -> list[np.ndarray]:
    """Distinct consecutive batches of the image pool (tiled when the pool is smaller than a batch)."""
    if len(pixels) < batch:
        pixels = np.concatenate([pixels] * -(-batch // len(pixels)))
    return [np.ascontiguousarray(pixels[i:i + batch]) for i in range(0, len(pixels) - batch + 1, batch)]


def _skip_reason(format: str, device: str) -> str | None:
    """Why a runtime's device cannot run here, found by asking the runtime itself (in a worker or the probe)."""
    if format == "onnx" and device in ORT_PROVIDERS:
        import onnxruntime as ort

        provider = ORT_PROVIDERS[device]
        if provider not in ort.get_available_providers():
            return f"{provider} is not in this onnxruntime {ort.__version__} (has {', '.join(ort.get_available_providers())}); needs onnxruntime-gpu and an NVIDIA GPU"
        if device == "TensorRT":
            return "runtime.load_artifact opens ONNX models with the CUDA or CPU provider only; TensorRT is not wired in"
    if format == "openvino" and device != "CPU":
        import openvino as ov

        devices = ov.Core().available_devices
        if device not in devices:
            return f"OpenVINO {ov.get_version().split('-')[0]} sees no {device} device (has {', '.join(devices)})"
    return None


#: The package each format's runtime is imported from.
RUNTIME_MODULES = {"keras": "tensorflow", "onnx": "onnxruntime", "tflite": "ai_edge_litert", "openvino": "openvino"}


def _not_installed(format: str, module: str) -> str:
    return f"{module} is not installed; pip install 'vgg-edge[{'full' if format == 'keras' else format}]'"


def probe_worker(job: dict, result_path: Path) -> None:
    """Body of the probe process: the skip reason (or None) of each non-CPU (format, device) in the job."""
    reasons = {}
    for format, device in job["probe"]:
        try:
            reasons[f"{format}:{device}"] = _skip_reason(format, device)
        except ImportError as exc:
            reasons[f"{format}:{device}"] = _not_installed(format, exc.name or RUNTIME_MODULES[format])
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
    from .runtime import load_artifact

    device = {"CUDA": "GPU"}.get(target.device, target.device)
    return load_artifact(target.path, threads=threads, device=device, allow_rejected=True).predict


def _import_runtime(target: Target) -> None:
    """Import the runtime's package up front so its import time is not charged to loading."""
    module = {"keras": "tensorflow", "onnx": "onnxruntime", "tflite": "ai_edge_litert.interpreter", "openvino": "openvino"}[target.format]
    __import__(module)


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
        write_json(result_path, {**result, "status": "skipped", "reason": _not_installed(target.format, exc.name)})
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
    write_json(result_path, result)


# ----------------------------------------------------------------------------------- the parent


@dataclass
class BenchReport:
    """The content of bench.json."""

    environment: dict
    config: dict
    targets: list[dict] = field(default_factory=list)
    schema: str = SCHEMA
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    command: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def run_bench(targets: list[Target], config: BenchConfig, out: Path, command: str = "", on_target=None) -> dict:
    """Measure every target in its own processes; write bench.json/csv/md and the plots into `out`.

    Absent runtimes and devices are found first (`absent_runtimes`), so `on_target(target, i, total)`
    is called only for the targets that will be timed, just before timing each (i from 1 to total).
    """
    threads = config.thread_counts()
    report = BenchReport(environment=environment(), config={**asdict(config), "threads": list(threads)}, command=command)
    with tempfile.TemporaryDirectory(prefix="vgg-edge-bench-") as scratch:
        pools = _image_pools(targets, config.images, Path(scratch))
        absent = absent_runtimes(targets, Path(scratch))  # (format, device) -> why: asked once, not once per artifact
        total, started = sum((t.format, t.device) not in absent for t in targets), 0
        for target in targets:
            row = _describe(target)
            if (target.format, target.device) in absent:
                row.update(status="skipped", reason=absent[(target.format, target.device)])
                report.targets.append(row)
                continue
            started += 1
            if on_target:
                on_target(target, started, total)
            for i, count in enumerate(threads):
                batches = config.batch_sizes if i == 0 else (1,)
                result = _spawn(target, config, count, batches, pools[(target.run, target.image_size)], Path(scratch))
                if result["status"] != "ok":
                    row.update(status=result["status"], reason=result["reason"])
                    if result["status"] == "skipped":
                        absent[(target.format, target.device)] = result["reason"]
                    break
                if i == 0:
                    row.update(cold_start=result["cold_start"], peak_rss_mb=result["peak_rss_mb"])
                row["measurements"].extend(result["measurements"])
            report.targets.append(row)
    doc = report.to_json()
    add_ratios(doc)
    write_outputs(doc, out)
    return doc


def absent_runtimes(targets: list[Target], scratch: Path) -> dict[tuple[str, str], str]:
    """(format, device) -> why it cannot run here: a runtime package not installed, or a device its runtime does not see.

    Package presence is looked up without importing; devices are asked of the runtimes in one probe
    process (`probe_worker`), never in this one. A probe that fails says nothing: the workers still
    find out, target by target, and a target they skip is a skipped row as before.
    """
    import importlib.util

    absent: dict[tuple[str, str], str] = {}
    devices: list[tuple[str, str]] = []
    for format, device in dict.fromkeys((t.format, t.device) for t in targets):
        module = RUNTIME_MODULES[format]
        if importlib.util.find_spec(module) is None:
            absent[(format, device)] = _not_installed(format, module)
        elif device != "CPU":
            devices.append((format, device))
    if devices:
        job, result = scratch / "probe.json", scratch / "probe.result.json"
        write_json(job, {"probe": devices})
        done = subprocess.run([sys.executable, "-m", "vgg_edge.bench", str(job), str(result)], capture_output=True, text=True)
        if done.returncode == 0 and result.is_file():
            reasons = read_json(result)
            absent.update({(f, d): reasons[f"{f}:{d}"] for f, d in devices if reasons.get(f"{f}:{d}")})
    return absent


def _describe(target: Target) -> dict:
    """Everything about a target that is known before timing it: manifest facts, size, hashes, accuracy."""
    row = {**asdict(target), "key": target.key, "runtime": target.runtime, "status": "ok", "reason": None,
           "cold_start": None, "peak_rss_mb": None, "measurements": []}
    if target.format == "keras":
        model = Path(target.path) / "model.keras"
        metrics = Path(target.path) / "metrics.json"
        recorded = read_json(metrics) if metrics.is_file() else {}
        accuracy = recorded.get("accuracy")
        row.update(model_file=model.name, size_bytes=model.stat().st_size, files={"model.keras": {"sha256": sha256_file(model), "bytes": model.stat().st_size}},
                   accuracy=accuracy, accuracy_n=recorded.get("n"), accuracy_drop_pp=0.0 if accuracy is not None else None, parity_status=None)
        return row
    manifest = read_manifest(target.path, verify=False).manifest
    parity = manifest.get("parity") or {}
    row.update(model_file=manifest["model_file"], size_bytes=sum(int(f["bytes"]) for f in manifest["files"].values()), files=manifest["files"],
               accuracy=parity.get("accuracy"), accuracy_n=parity.get("n"), accuracy_drop_pp=parity.get("accuracy_drop_pp"), parity_status=manifest.get("status"))
    return row


def _image_pools(targets: list[Target], limit: int, scratch: Path) -> dict[tuple[str, int], str]:
    """Decode each run's recorded test split once per image size; the workers read the .npy files."""
    pools: dict[tuple[str, int], str] = {}
    for run_path, size in dict.fromkeys((t.run, t.image_size) for t in targets):
        run = RunDir.open(run_path)
        if size != run.image_size:
            raise VggEdgeError(f"{run_path}: trained at {run.image_size} px but an artifact of it takes {size} px; re-export it from this run")
        pixels, _ = run.load_images("test", limit=limit)
        path = scratch / f"images-{len(pools)}.npy"
        np.save(path, pixels)
        pools[(run_path, size)] = str(path)
    return pools


def _spawn(target: Target, config: BenchConfig, threads: int, batches: tuple[int, ...], images: str, scratch: Path) -> dict:
    """Run one worker process; a crash becomes a 'failed' row with the error's last line."""
    stem = scratch / f"job-{os.getpid()}-{time.monotonic_ns()}"
    job, result = stem.with_suffix(".json"), stem.with_suffix(".result.json")
    write_json(job, {"target": asdict(target), "config": asdict(config), "threads": threads, "batch_sizes": list(batches),
                     "images": images, "classes": len(RunDir.open(target.run).labels)})
    env = dict(os.environ)
    if target.device == "CPU":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU row must not quietly run on a GPU
    done = subprocess.run([sys.executable, "-m", "vgg_edge.bench", str(job), str(result)], env=env, capture_output=True, text=True)
    if done.returncode == 0 and result.is_file():
        return read_json(result)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {"status": "failed", "reason": lines[-1] if lines else f"worker exited with status {done.returncode}"}


def add_ratios(doc: dict) -> None:
    """Each measurement's median latency and throughput relative to its run's Keras baseline, same threads and batch."""
    baselines = {(t["run"], m["threads"], m["batch"]): m for t in doc["targets"] if t["format"] == "keras" for m in t["measurements"]}
    for target in doc["targets"]:
        for m in target["measurements"]:
            base = baselines.get((target["run"], m["threads"], m["batch"]))
            m["vs_keras"] = None if base is None else {
                "latency_p50": m["latency_ms"]["p50"] / base["latency_ms"]["p50"],
                "throughput": m["throughput_ips"] / base["throughput_ips"],
            }


def environment() -> dict:
    """CPU model and ISA flags, cores, memory, GPU, OS, package versions: what the figures depend on."""
    cpu = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu["model"] = fields.get("model name", cpu["model"])
        flags = set(fields.get("flags", "").split())
        cpu["flags"] = sorted(f for f in flags if f in ("avx2", "fma", "f16c") or f.startswith(("avx512", "avx_vnni", "amx")))
    except OSError:
        pass
    memory = None
    try:
        memory = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    return {
        "cpu": {**cpu, "logical_cores": os.cpu_count(), "usable_cores": available_cores()},
        "memory_bytes": memory,
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: v for name, v in installed_versions(PACKAGES).items() if v},
        "load_average": list(os.getloadavg()),
    }


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpus() -> list[str]:
    """NVIDIA GPU names from nvidia-smi; empty when there is none (or no driver)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


# ----------------------------------------------------------------------------------- outputs


def measurement(target: dict, batch: int, threads: int | None = None) -> dict | None:
    """A target's measurement at `batch` (and `threads`; default: the primary thread count)."""
    found = [m for m in target["measurements"] if m["batch"] == batch and (threads is None or m["threads"] == threads)]
    return found[0] if found else None


def output_files(doc: dict) -> list[str]:
    """The files `write_outputs` writes for `doc`: the plots only when something was measured."""
    plots = ["latency.png", "pareto.png", "throughput.png"] if any(t["measurements"] for t in doc["targets"]) else []
    return ["bench.json", "bench.csv", "bench.md", *plots]


def write_outputs(doc: dict, out: Path) -> list[str]:
    """Write bench.json, bench.csv, bench.md and the plots into `out`; returns the file names written."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", doc)
    write_bytes(out / "bench.csv", to_csv(doc).encode())
    write_bytes(out / "bench.md", to_markdown(doc).encode())
    measured = [t for t in doc["targets"] if t["measurements"]]
    if measured:
        plots.bench_latency_distribution(measured, out / "latency.png")
        plots.bench_pareto(measured, out / "pareto.png")
        plots.bench_throughput(measured, out / "throughput.png")
    return output_files(doc)


CSV_COLUMNS = ("run", "name", "format", "precision", "gate", "runtime", "device", "status", "reason", "threads", "batch", "runs",
               "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "std_ms", "throughput_ips",
               "latency_vs_keras", "throughput_vs_keras", "accuracy", "accuracy_drop_pp", "size_bytes", "cold_start_s", "peak_rss_mb")


def to_csv(doc: dict) -> str:
    """One row per (target, threads, batch); skipped and failed targets get one row with their reason."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for t in doc["targets"]:
        common = {"run": Path(t["run"]).name, "name": t["name"], "format": t["format"], "precision": t["precision"], "gate": t["parity_status"], "runtime": t["runtime"],
                  "device": t["device"], "status": t["status"], "reason": t["reason"] or "", "accuracy": t["accuracy"],
                  "accuracy_drop_pp": t["accuracy_drop_pp"], "size_bytes": t["size_bytes"], "peak_rss_mb": t["peak_rss_mb"],
                  "cold_start_s": t["cold_start"]["total_s"] if t["cold_start"] else None}
        for m in t["measurements"] or [None]:
            row = dict(common)
            if m:
                lat = m["latency_ms"]
                ratio = m["vs_keras"] or {}
                row.update(threads=m["threads"], batch=m["batch"], runs=m["runs"], throughput_ips=m["throughput_ips"],
                           latency_vs_keras=ratio.get("latency_p50"), throughput_vs_keras=ratio.get("throughput"),
                           **{f"{k}_ms": lat[k] for k in ("p50", "p90", "p95", "p99", "max", "mean", "std")})
            writer.writerow(row)
    return buffer.getvalue()


def summary_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table of the measured targets (primary thread count): the terminal table and bench.md."""
    batches = doc["config"]["batch_sizes"]
    threads = doc["config"]["threads"]
    several_runs = len({t["run"] for t in doc["targets"]}) > 1
    header = [*(["run"] if several_runs else []), "target", "runtime", "device", "gate", "accuracy", "drop pp", "size MB",
              "cold s", "RSS MB", f"p50 ms b{batches[0]}", "p90 ms", "p99 ms", "x Keras p50",
              *(f"img/s b{b}" for b in batches), f"x Keras img/s b{batches[-1]}", *(f"p50 ms b1 {n} thr" for n in threads[1:])]
    rows = []
    for t in doc["targets"]:
        if t["status"] != "ok":
            continue
        first = measurement(t, batches[0], threads[0])
        last = measurement(t, batches[-1], threads[0])
        rows.append([
            *([Path(t["run"]).name] if several_runs else []), t["name"], t["runtime"], t["device"], t["parity_status"] or "-",
            _fmt(t["accuracy"], ".4f"), _fmt(t["accuracy_drop_pp"], ".2f"), _fmt(t["size_bytes"] / 1e6, ".1f"),
            _fmt(t["cold_start"]["total_s"], ".2f"), _fmt(t["peak_rss_mb"], ".0f"),
            *(_fmt(first["latency_ms"][p], ".2f") for p in ("p50", "p90", "p99")), _fmt((first["vs_keras"] or {}).get("latency_p50"), ".2f"),
            *(_fmt(measurement(t, b, threads[0])["throughput_ips"], ".1f") for b in batches), _fmt((last["vs_keras"] or {}).get("throughput"), ".2f"),
            *(_fmt(measurement(t, 1, n)["latency_ms"]["p50"], ".2f") for n in threads[1:]),
        ])
    if not has_baseline(doc):  # every ratio would be "-": leave the columns out
        return _columns(header, rows, [c for c in header if not c.startswith("x Keras")])
    return header, rows


def compact_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The terminal's default table: the columns a choice is made on, in 80 columns for the usual names.

    Target (and run, with several), device, parity gate, accuracy, median latency at the first batch
    size, throughput at the largest, and the latency ratio to Keras when there is a baseline: a
    selection of `summary_rows` (--wide, bench.md), which has every column. The runtime follows
    from the target's format.
    """
    batches = doc["config"]["batch_sizes"]
    header, rows = summary_rows(doc)
    wanted = ["run", "target", "device", "gate", "accuracy", f"p50 ms b{batches[0]}", f"img/s b{batches[-1]}", "x Keras p50"]
    return _columns(header, rows, [c for c in wanted if c in header])


def _columns(header: list[str], rows: list[list[str]], keep: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table cut down to the columns named in `keep`, in that order."""
    index = [header.index(c) for c in keep]
    return keep, [[row[i] for i in index] for row in rows]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion, e.g. an accuracy of `successes` right out of `n` test images.

    Unlike the normal approximation it stays within [0, 1] and is not empty at 0 or n successes.
    """
    from statistics import NormalDist

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: {successes} successes of {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def accuracy_interval(target: dict, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson interval of a target's accuracy on its `accuracy_n` test images; None where n is not recorded
    (bench.json files written before `accuracy_n` existed)."""
    n, accuracy = target.get("accuracy_n"), target.get("accuracy")
    if not n or accuracy is None:
        return None
    return wilson_interval(round(accuracy * n), n, confidence)


def has_baseline(doc: dict) -> bool:
    """Whether any measurement has a ratio to a Keras baseline (none with --no-baseline and no run directory given)."""
    return any(m.get("vs_keras") for t in doc["targets"] for m in t["measurements"])


IDENTITY_COLUMNS = ("run", "target")
TEXT_COLUMNS = (*IDENTITY_COLUMNS, "runtime", "device", "gate")
GATE_STYLE = {"accepted": "green", "unproven": "yellow", "rejected": "red"}


def summary_table(doc: dict, wide: bool = False):
    """The terminal table: `compact_rows`, or with `wide` every column (`summary_rows`, as in bench.md).

    No cell is ever cut: run and target never wrap, and every column is at least as wide as its
    widest value and its longest header word; headers wrap between words instead. Columns are
    two spaces apart under a rule, without vertical lines, to leave the width to the figures.
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    header, rows = summary_rows(doc) if wide else compact_rows(doc)
    threads = doc["config"]["threads"][0]
    title = f"bench, {threads} threads (b: batch size"
    title += "; x Keras: vs the run's Keras model, <1 is faster)" if has_baseline(doc) else ")"
    table = Table(title=title, caption=None if wide else "every column: --wide, or bench.md", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for i, column in enumerate(header):
        width = max([cell_len(row[i]) for row in rows] + [cell_len(word) for word in column.split()])
        if column in IDENTITY_COLUMNS:
            table.add_column(column, no_wrap=True, min_width=max(width, cell_len(column)))
        else:
            table.add_column(column, justify="left" if column in TEXT_COLUMNS else "right", min_width=width)
    for row in rows:
        table.add_row(*(Text(cell, style=GATE_STYLE.get(cell, "") if column == "gate" else "") for column, cell in zip(header, row)))
    return table


def unmeasured(doc: dict) -> list[str]:
    """One line per runtime/device (and failure) that produced no figures, with the reason and the artifacts it hit."""
    reasons: dict[tuple[str, str, str, str], list[str]] = {}
    for t in doc["targets"]:
        if t["status"] != "ok":
            reasons.setdefault((t["status"], t["runtime"], t["device"], t["reason"]), []).append(t["name"])
    return [f"{status} {runtime} {device} ({', '.join(names)}): {reason}" for (status, runtime, device, reason), names in reasons.items()]


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(doc: dict) -> str:
    env = doc["environment"]
    config = doc["config"]
    header, rows = summary_rows(doc)
    lines = [
        f"# vgg-edge bench ({doc['created']})", "",
        f"Command: `{doc['command']}`" if doc["command"] else "", "",
        f"CPU: {env['cpu']['model']}, {env['cpu']['usable_cores']} usable cores; flags {' '.join(env['cpu']['flags']) or '-'}; "
        f"GPU: {', '.join(env['gpus']) or 'none'}; load average at start {' '.join(f'{x:.2f}' for x in env['load_average'])}.",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".",
        f"Method: batch sizes {config['batch_sizes']} at {config['threads'][0]} threads (thread sweep at batch 1: {config['threads'][1:] or 'none'}); "
        f"warm-up {config['warmup_runs']} runs and {config['warmup_seconds']} s; at least {config['min_runs']} timed runs and {config['min_seconds']} s; "
        f"{config['images']} test-split images as inputs; each target in its own process. Latency is per call (one batch); "
        + ("ratios are against the Keras baseline of the same run measured in this bench (a tf.function over model(x, training=False), "
           "like the edge runtimes timed from uint8 pixels to probabilities)." if has_baseline(doc) else
           "no Keras baseline was measured in this bench (--no-baseline, or it did not run), so there are no ratios to it."), "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows), "",
        *(f"- {line}" for line in unmeasured(doc)), "",
        "Artifact sha256 (model file): " + "; ".join(
            f"{t['name']} `{t['files'][t['model_file']]['sha256'][:16]}`" for t in doc["targets"] if t["device"] == "CPU"), "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    key: str
    threads: int
    batch: int
    old_p50_ms: float
    new_p50_ms: float
    old_throughput: float
    new_throughput: float

    @property
    def latency_ratio(self) -> float:
        """New median latency over old: above 1 is slower."""
        return self.new_p50_ms / self.old_p50_ms

    @property
    def throughput_ratio(self) -> float:
        return self.new_throughput / self.old_throughput


def load_bench(path: Path) -> dict:
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise VggEdgeError(f"{path}: not a {SCHEMA} file; pass a bench.json written by this version of `vgg-edge bench`")
    return doc


def compare(new: dict, old: dict) -> list[Comparison]:
    """Measurements present in both files, matched on target key, thread count and batch size."""
    before = {(t["key"], m["threads"], m["batch"]): m for t in old["targets"] for m in t["measurements"]}
    out = []
    for t in new["targets"]:
        for m in t["measurements"]:
            prev = before.get((t["key"], m["threads"], m["batch"]))
            if prev:
                out.append(Comparison(t["key"], m["threads"], m["batch"], prev["latency_ms"]["p50"], m["latency_ms"]["p50"],
                                      prev["throughput_ips"], m["throughput_ips"]))
    return out


def regressions(comparisons: list[Comparison], max_ratio: float) -> list[Comparison]:
    """Comparisons whose median latency grew by more than `max_ratio` (1.10: more than 10% slower)."""
    return [c for c in comparisons if c.latency_ratio > max_ratio]


def command_line(paths: list[Path], config: BenchConfig, out: Path, baseline: bool = True) -> str:
    """The `vgg-edge bench` command that repeats this measurement, every setting spelled out."""
    import shlex

    def ints(values: tuple[int, ...]) -> str:
        return ",".join(map(str, values))

    args = ["vgg-edge", "bench", *map(str, paths), "--batch-sizes", ints(config.batch_sizes), "--threads", ints(config.thread_counts()),
            "--min-runs", str(config.min_runs), "--min-seconds", f"{config.min_seconds:g}", "--warmup-runs", str(config.warmup_runs),
            "--warmup-seconds", f"{config.warmup_seconds:g}", "--images", str(config.images), *([] if baseline else ["--no-baseline"]), "--out", str(out)]
    return shlex.join(args)


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); anything else is a one-line error naming the option."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise VggEdgeError(f"{option} {text!r}: expected positive integers separated by commas, e.g. 1,8,32")
    return values


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m vgg_edge.bench JOB.json RESULT.json (a worker started by `vgg-edge bench`)", file=sys.stderr)
        return 2
    try:
        run_worker(Path(argv[0]), Path(argv[1]))
    except VggEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
