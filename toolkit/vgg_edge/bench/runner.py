"""The parent process of a bench: finds what cannot run here, times every target in worker processes,
and assembles bench.json from their results.

It writes each worker a job file and starts `python -m vgg_edge.bench.worker JOB.json RESULT.json`;
it never imports the worker module, which imports `BenchConfig` and `not_installed` from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import manifest
from ..errors import VggEdgeError, check_range
from ..fileio import read_json, sha256_file, write_json
from ..formats import RUNTIMES
from ..run import RunDir
from .discovery import Target
from ..machine import available_cores, environment
from .report import write_outputs

SCHEMA = "vgg-edge-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    """How every target is timed: the batch and thread sweeps and when warm-up and timing stop (the CLI's defaults)."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    threads: tuple[int, ...] = ()  # first: full batch sweep; the rest: batch 1. Empty: all cores, then 1.
    min_runs: int = 20
    min_seconds: float = 2.0
    warmup_runs: int = 3
    warmup_seconds: float = 1.0
    images: int = 64  # test-split images cycled through as inputs
    # Throughput mode after the batch sweep: batch 1 on several streams at once (worker.throughput_mode). On by
    # default: one more warm-up and timed period per target (3 s at these defaults) plus opening the model again.
    throughput: bool = True

    def check(self) -> None:
        """Refuse settings that cannot measure anything, in one line naming the option (the CLI passes them through)."""
        for option, values, low in (("--batch-sizes", self.batch_sizes, 1), ("--threads", self.threads, 1), ("--min-runs", (self.min_runs,), 1),
                                    ("--min-seconds", (self.min_seconds,), 0.0), ("--warmup-runs", (self.warmup_runs,), 0),
                                    ("--warmup-seconds", (self.warmup_seconds,), 0.0), ("--images", (self.images,), 1)):
            for value in values:
                check_range(option, value, low)

    def thread_counts(self) -> tuple[int, ...]:
        """The thread counts to time, in order and without repeats."""
        if self.threads:
            return tuple(dict.fromkeys(self.threads))
        cores = available_cores()
        return tuple(dict.fromkeys((cores, 1)))


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
    config.check()
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
                sweep = config if i == 0 else replace(config, throughput=False)  # throughput mode once, beside the batch sweep
                result = _spawn(target, sweep, count, batches, pools[(target.run, target.image_size)], Path(scratch))
                if result["status"] != "ok":
                    row.update(status=result["status"], reason=result["reason"])
                    if result["status"] == "skipped":
                        absent[(target.format, target.device)] = result["reason"]
                    break
                if i == 0:
                    row.update(cold_start=result["cold_start"], peak_rss_mb=result["peak_rss_mb"], throughput_mode=result.get("throughput_mode"))
                row["measurements"].extend(result["measurements"])
            report.targets.append(row)
    doc = report.to_json()
    add_ratios(doc)
    write_outputs(doc, out)
    return doc


def not_installed(format: str, module: str) -> str:
    """The skip reason of a runtime whose package is missing, with the command that installs it."""
    return f"{module} is not installed; {RUNTIMES[format].install_hint()}"


def absent_runtimes(targets: list[Target], scratch: Path) -> dict[tuple[str, str], str]:
    """(format, device) -> why it cannot run here: a runtime package not installed, or a device its runtime does not see.

    Package presence is looked up without importing; devices are asked of the runtimes in one probe
    process (`worker.probe_worker`), never in this one. A probe that fails says nothing: the workers still
    find out, target by target, and a target they skip is a skipped row as before.
    """
    import importlib.util

    absent: dict[tuple[str, str], str] = {}
    devices: list[tuple[str, str]] = []
    for format, device in dict.fromkeys((t.format, t.device) for t in targets):
        module = RUNTIMES[format].module
        if importlib.util.find_spec(module) is None:
            absent[(format, device)] = not_installed(format, module)
        elif device != "CPU":
            devices.append((format, device))
    if devices:
        job, result = scratch / "probe.json", scratch / "probe.result.json"
        write_json(job, {"probe": devices})
        done = subprocess.run([sys.executable, "-m", "vgg_edge.bench.worker", str(job), str(result)], capture_output=True, text=True)
        if done.returncode == 0 and result.is_file():
            reasons = read_json(result)
            absent.update({(f, d): reasons[f"{f}:{d}"] for f, d in devices if reasons.get(f"{f}:{d}")})
    return absent


def _describe(target: Target) -> dict:
    """Everything about a target that is known before timing it: manifest facts, size, hashes, accuracy."""
    row = {**asdict(target), "key": target.key, "runtime": target.runtime, "status": "ok", "reason": None,
           "cold_start": None, "peak_rss_mb": None, "measurements": [], "throughput_mode": None}
    if target.format == "keras":
        run = RunDir.open(target.path)
        model, recorded = run.model_path, run.metrics
        accuracy = recorded.get("accuracy")
        row.update(model_file=model.name, size_bytes=model.stat().st_size, files={model.name: {"sha256": sha256_file(model), "bytes": model.stat().st_size}},
                   accuracy=accuracy, accuracy_n=recorded.get("n"), accuracy_drop_pp=0.0 if accuracy is not None else None, parity_status=None)
        return row
    info = manifest.read(target.path, verify=False)
    parity = info.parity
    row.update(model_file=info.model_file, size_bytes=info.size_bytes, files=info.files,
               accuracy=parity.get("accuracy"), accuracy_n=parity.get("n"), accuracy_drop_pp=parity.get("accuracy_drop_pp"), parity_status=info.status)
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
    done = subprocess.run([sys.executable, "-m", "vgg_edge.bench.worker", str(job), str(result)], env=env, capture_output=True, text=True)
    if done.returncode == 0 and result.is_file():
        return read_json(result)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {"status": "failed", "reason": lines[-1] if lines else f"worker exited with status {done.returncode}"}


def add_ratios(doc: dict) -> None:
    """Each measurement's median latency and throughput relative to its run's Keras baseline, same threads and batch;
    and each throughput-mode figure relative to the Keras one (which ran sequentially)."""
    baselines = {(t["run"], m["threads"], m["batch"]): m for t in doc["targets"] if t["format"] == "keras" for m in t["measurements"]}
    modes = {t["run"]: t["throughput_mode"] for t in doc["targets"] if t["format"] == "keras" and t.get("throughput_mode")}
    for target in doc["targets"]:
        for m in target["measurements"]:
            base = baselines.get((target["run"], m["threads"], m["batch"]))
            m["vs_keras"] = None if base is None else {
                "latency_p50": m["latency_ms"]["p50"] / base["latency_ms"]["p50"],
                "throughput": m["throughput_ips"] / base["throughput_ips"],
            }
        if mode := target.get("throughput_mode"):
            base = modes.get(target["run"])
            mode["vs_keras"] = None if base is None else mode["images_per_s"] / base["images_per_s"]
