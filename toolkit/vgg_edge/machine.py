"""What the figures depend on besides the model: CPU model and ISA flags, cores, memory, GPUs, OS, versions.

Recorded in every bench.json (`environment`); `cpu_flags` also decides training's `--mixed-precision auto`.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from .versions import installed_versions

PACKAGES = ("vgg-edge", "numpy", "tensorflow", "keras", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "pillow")


def _cpuinfo() -> list[tuple[str, str]]:
    """/proc/cpuinfo as (key, value) lines, every processor's; empty where it cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [(key.strip(), value.strip()) for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)]


def cpu_flags() -> set[str]:
    """The CPU's ISA flags as /proc/cpuinfo lists them (avx2, avx512_bf16, amx_bf16, ...); empty where unknown."""
    return {flag for key, value in _cpuinfo() if key == "flags" for flag in value.split()}


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # set, they make oneDNN (TensorFlow, OpenVINO) use less than the CPU has


def environment() -> dict:
    """CPU model and ISA flags, cores, memory, GPU, OS, package versions: what the figures depend on."""
    models = [value for key, value in _cpuinfo() if key == "model name"]
    flags = sorted(f for f in cpu_flags() if f in ("avx2", "fma", "f16c") or f.startswith(("avx512", "avx_vnni", "amx")))
    memory = None
    try:
        memory = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    return {
        "cpu": {"model": models[-1] if models else platform.processor() or platform.machine(), "flags": flags,
                "logical_cores": os.cpu_count(), "usable_cores": available_cores()},
        "memory_bytes": memory,
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: v for name, v in installed_versions(PACKAGES).items() if v},
        "load_average": list(os.getloadavg()),
        "isa_caps": {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)},
    }


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), which may be fewer than the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpus() -> list[str]:
    """NVIDIA GPU names from nvidia-smi; empty when there is none (or no driver)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
