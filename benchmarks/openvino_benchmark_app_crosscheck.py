"""Cross-check the OpenVINO figures of `vgg-edge bench`'s throughput mode with OpenVINO's own `benchmark_app`.

    .venv/bin/python benchmarks/openvino_benchmark_app_crosscheck.py [ARTIFACT ...] [--seconds 10] [--out FILE.md]

(repository root; default: the openvino-fp32 and openvino-int8 exports of the 128 px model of record). Both
tools run the same model.xml on the CPU with the THROUGHPUT hint, at batch 1, for the same duration:

* `vgg-edge bench ARTIFACT --batch-sizes 1 --threads CORES --min-runs 1 --min-seconds SECONDS --throughput --no-baseline`: its
  `throughput_mode` record (an AsyncInferQueue with OPTIMAL_NUMBER_OF_INFER_REQUESTS requests);
* `benchmark_app -m model.xml -d CPU -hint throughput -t SECONDS -shape [1,S,S,3] -infer_precision f32`
  (f32, as vgg-edge pins it; benchmark_app takes no -nthreads with a hint, so both use every usable core).

What still differs: bench feeds real test images through the edge path (uint8 to the model's input on
every call) after --warmup-seconds of warm-up; benchmark_app random tensors filled once, after one
first inference. Run it on a quiet machine; the table goes to
benchmarks/results/openvino_benchmark_app_crosscheck.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from vgg_edge import manifest
from vgg_edge.machine import available_cores, environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPORTED = ROOT / "exported" / "brain-mri-128-b2-bf16-flatten"  # the 128 px model of record (benchmarks/results/train.md)
COLUMNS = {"streams": "streams", "requests": "infer requests", "threads": "threads", "batch": "batch", "seconds": "seconds", "images": "images",
           "images_per_s": "img/s"}


def run(args: list[str]) -> str:
    """Run a command; its stdout, or the script stops with its output."""
    print("$", shlex.join(args), flush=True)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed with status {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def vgg_edge_figures(artifact: Path, seconds: int, scratch: Path) -> tuple[list[str], dict]:
    """The command and the throughput-mode record of `vgg-edge bench` on the artifact's CPU target."""
    out = scratch / f"bench-{artifact.name}"
    args = [str(BIN / "vgg-edge"), "bench", str(artifact), "--batch-sizes", "1", "--threads", str(available_cores()),
            "--min-runs", "1", "--min-seconds", str(seconds), "--throughput", "--no-baseline", "--out", str(out)]
    run(args)
    (target,) = [t for t in json.loads((out / "bench.json").read_text())["targets"] if t["device"] == "CPU"]
    mode = target["throughput_mode"]
    return args, {**mode, "threads": mode["streams"] * mode["threads_per_stream"]}


def benchmark_app_figures(artifact: Path, seconds: int, scratch: Path) -> tuple[list[str], dict]:
    """The command and the figures of `benchmark_app -hint throughput` on the artifact's model file."""
    info = manifest.read(artifact)
    report = scratch / f"benchmark_app-{artifact.name}"
    report.mkdir()  # benchmark_app writes into it but does not make it
    args = [str(BIN / "benchmark_app"), "-m", str(info.model_path), "-d", "CPU", "-hint", "throughput", "-t", str(seconds),
            "-shape", f"[1,{info.image_size},{info.image_size},3]", "-infer_precision", "f32",
            "-report_type", "no_counters", "-json_stats", "-report_folder", str(report)]
    stdout = run(args)
    results = json.loads((report / "benchmark_report.json").read_text())
    setup, figures = results["configuration_setup"], results["execution_results"]
    iterations = int(figures["total number of iterations"])

    def printed(name: str) -> int:  # a compiled-model property, as benchmark_app logs it
        return int(re.search(rf"{name}: (\d+)", stdout).group(1))

    return args, {"streams": printed("NUM_STREAMS"), "requests": int(setup["number of parallel infer requests"]),
                  "threads": printed("INFERENCE_NUM_THREADS"), "batch": int(setup["batch size"]),
                  "seconds": float(figures["total execution time (ms)"]) / 1000, "images": iterations * int(setup["batch size"]),
                  "images_per_s": float(figures["throughput"])}


def markdown(rows: list[tuple[str, str, dict]], commands: list[list[str]], seconds: int, before: dict, after: dict) -> str:
    """The report: machine and load, one table row per (artifact, tool) with their ratio, then the commands run."""
    reference = {name: figures["images_per_s"] for name, tool, figures in rows if tool == "benchmark_app"}
    cpu = before["cpu"]
    lines = [
        "# vgg-edge bench throughput mode against OpenVINO's benchmark_app", "",
        f"CPU: {cpu['model']}, {cpu['usable_cores']} usable cores; OpenVINO {before['packages'].get('openvino', '?')}; "
        f"load average {' '.join(f'{x:.2f}' for x in before['load_average'])} before, {' '.join(f'{x:.2f}' for x in after['load_average'])} after. "
        f"Batch 1, THROUGHPUT hint, {seconds} s timed each. bench feeds real test images through the edge path "
        "(uint8 conversion on every call) after its warm-up; benchmark_app random tensors filled once, after one first inference.", "",
        "| artifact | tool | " + " | ".join(COLUMNS.values()) + " | img/s vs benchmark_app |",
        "|---|---|" + "---:|" * (len(COLUMNS) + 1),
        *(f"| {name} | {tool} | " + " | ".join(_cell(figures[c]) for c in COLUMNS) + f" | {figures['images_per_s'] / reference[name]:.2f} |"
          for name, tool, figures in rows), "",
        "Commands:", "",
        *(f"    {shlex.join(args)}" for args in commands), "",
    ]
    return "\n".join(lines)


def _cell(value: float | int) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="*", type=Path, default=[EXPORTED / "openvino-fp32", EXPORTED / "openvino-int8"])
    parser.add_argument("--seconds", type=int, default=10, help="timed seconds for each tool (benchmark_app -t takes whole seconds)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "openvino_benchmark_app_crosscheck.md")
    args = parser.parse_args()
    if not (BIN / "benchmark_app").is_file():
        sys.exit(f"{BIN / 'benchmark_app'} is missing: it comes with the openvino package (pip install 'vgg-edge[openvino]')")
    before = environment()
    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="openvino-crosscheck-") as scratch:
        for artifact in args.artifacts:
            for tool, measure in (("vgg-edge bench", vgg_edge_figures), ("benchmark_app", benchmark_app_figures)):
                command, figures = measure(artifact, args.seconds, Path(scratch))
                rows.append((artifact.name, tool, figures))
                commands.append(command)
    text = markdown(rows, commands, args.seconds, before, environment())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
