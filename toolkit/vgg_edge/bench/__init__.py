"""`vgg-edge bench`: latency and throughput of every export in every runtime, beside its accuracy.

What is timed is the edge path itself: `runtime.load_artifact(...).predict(uint8 pixels)` for an
exported artifact (input conversion and quantization included), and the run's Keras model called
through a `tf.function` for the baseline, fed the same real test-split images decoded by the
training reader. Each (target, thread count) runs in its own Python process
(`python -m vgg_edge.bench.worker JOB.json RESULT.json`), so one runtime's memory, thread pools and
import side effects never touch another's figures, and peak RSS is that runtime's own.

Per process: import, load and first inference are timed apart (cold start); then, per batch size,
warm-up by count *and* seconds, and timed runs until both a minimum count and a minimum duration
are reached. Latency is per call (one batch); throughput is images per wall-clock second.
The first thread count gets the whole batch sweep, every other thread count batch 1 (the thread
sweep). After its batch sweep, the first thread count's process measures throughput mode
(`BenchConfig.throughput`, on by default) as OpenVINO's `benchmark_app -hint throughput` does:
batch 1 on several streams at once, chosen by the runtime (OpenVINO's THROUGHPUT hint, kept busy
through an AsyncInferQueue) or one single-threaded stream per core (ONNX Runtime, LiteRT); the
Keras baseline stays sequential. Absent runtimes and devices are found before any timing (package lookups, and one probe
process asking the runtimes for their GPU devices) and are not timed; bench.json and bench.csv keep
them as rows with status "skipped" and the reason, the terminal and bench.md as one line each.

`bench.json` (schema `vgg-edge-bench/1`) holds everything; `bench.csv`, `bench.md`, the plots and
the terminal table (80 columns by default, every column with --wide) are views of it. `compare`
sets two bench.json files side by side for a CI gate.

Modules: `discovery` (what to time), `runner` (the parent process), `worker` (one timed process;
not imported here, so that `-m` runs it once), `report`
(csv, markdown, plots, tables) and `comparison` (two bench files side by side).
"""

from .comparison import Comparison, compare, load_bench, regressions
from .discovery import Target, discover
from ..machine import environment
from .report import accuracy_interval, measurement, output_files, summary_table, unmeasured, wilson_interval
from .runner import BenchConfig, add_ratios, run_bench

__all__ = [
    "BenchConfig", "Comparison", "Target", "accuracy_interval", "add_ratios", "compare", "discover", "environment", "load_bench",
    "measurement", "output_files", "regressions", "run_bench", "summary_table", "unmeasured", "wilson_interval",
]
