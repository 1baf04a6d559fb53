"""What a bench.json is shown as: bench.csv, bench.md, the plots, and the terminal tables.

Everything here reads the bench.json document (a dict), never the runtimes, so saved results can be
re-rendered and tested without timing anything.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..fileio import write_bytes, write_json


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
    from .. import plots

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
               "latency_vs_keras", "throughput_vs_keras", "throughput_mode_ips", "throughput_mode_vs_keras", "throughput_mode_streams",
               "throughput_mode_requests", "throughput_mode_threads_per_stream", "accuracy", "accuracy_drop_pp", "size_bytes", "cold_start_s", "peak_rss_mb")


def to_csv(doc: dict) -> str:
    """One row per (target, threads, batch); skipped and failed targets get one row with their reason.
    Like accuracy and size, the throughput-mode figures belong to the target and repeat on each of its rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for t in doc["targets"]:
        common = {"run": Path(t["run"]).name, "name": t["name"], "format": t["format"], "precision": t["precision"], "gate": t["parity_status"], "runtime": t["runtime"],
                  "device": t["device"], "status": t["status"], "reason": t["reason"] or "", "accuracy": t["accuracy"],
                  "accuracy_drop_pp": t["accuracy_drop_pp"], "size_bytes": t["size_bytes"], "peak_rss_mb": t["peak_rss_mb"],
                  "cold_start_s": t["cold_start"]["total_s"] if t["cold_start"] else None}
        if mode := t.get("throughput_mode"):
            common.update(throughput_mode_ips=mode["images_per_s"], throughput_mode_vs_keras=mode.get("vs_keras"), throughput_mode_streams=mode["streams"],
                          throughput_mode_requests=mode["requests"], throughput_mode_threads_per_stream=mode["threads_per_stream"])
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


THROUGHPUT_MODE_COLUMNS = ("img/s throughput mode", "streams x threads", "x Keras throughput mode")


def _throughput_mode_cells(mode: dict | None) -> list[str]:
    """The THROUGHPUT_MODE_COLUMNS of one target: images/s, streams x threads per stream (streams alone where the runtime does not say), ratio to Keras."""
    if not mode:
        return ["-", "-", "-"]
    layout = f"{mode['streams']}x{mode['threads_per_stream']}" if mode["threads_per_stream"] else str(mode["streams"])
    return [_fmt(mode["images_per_s"], ".1f"), layout, _fmt(mode.get("vs_keras"), ".2f")]


def summary_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table of the measured targets (primary thread count): the terminal table and bench.md."""
    batches = doc["config"]["batch_sizes"]
    threads = doc["config"]["threads"]
    several_runs = len({t["run"] for t in doc["targets"]}) > 1
    header = [*(["run"] if several_runs else []), "target", "runtime", "device", "gate", "accuracy", "drop pp", "size MB",
              "cold s", "RSS MB", f"p50 ms b{batches[0]}", "p90 ms", "p99 ms", "x Keras p50",
              *(f"img/s b{b}" for b in batches), f"x Keras img/s b{batches[-1]}", *THROUGHPUT_MODE_COLUMNS,
              *(f"p50 ms b1 {n} thr" for n in threads[1:])]
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
            *_throughput_mode_cells(t.get("throughput_mode")),
            *(_fmt(measurement(t, 1, n)["latency_ms"]["p50"], ".2f") for n in threads[1:]),
        ])
    empty = [] if has_baseline(doc) else [c for c in header if c.startswith("x Keras")]
    if not has_throughput_mode(doc):
        empty += THROUGHPUT_MODE_COLUMNS
    return _columns(header, rows, [c for c in header if c not in empty])  # a column that would be all "-" is left out


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


def has_throughput_mode(doc: dict) -> bool:
    """Whether throughput mode was measured (not with --no-throughput, nor in bench.json files older than it)."""
    return any(t.get("throughput_mode") for t in doc["targets"])


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
    """bench.md: environment and method, every column of the summary table, what went unmeasured, the artifacts' hashes."""
    env = doc["environment"]
    config = doc["config"]
    header, rows = summary_rows(doc)
    lines = [
        f"# vgg-edge bench ({doc['created']})", "",
        f"Command: `{doc['command']}`" if doc["command"] else "", "",
        f"CPU: {env['cpu']['model']}, {env['cpu']['usable_cores']} usable cores; flags {' '.join(env['cpu']['flags']) or '-'}; "
        f"GPU: {', '.join(env['gpus']) or 'none'}; load average at start {' '.join(f'{x:.2f}' for x in env['load_average'])}"
        + "".join(f"; {name}={value} (oneDNN kept below the CPU's ISA)" for name, value in env.get("isa_caps", {}).items()) + ".",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".",
        f"Method: batch sizes {config['batch_sizes']} at {config['threads'][0]} threads (thread sweep at batch 1: {config['threads'][1:] or 'none'}); "
        f"warm-up {config['warmup_runs']} runs and {config['warmup_seconds']} s; at least {config['min_runs']} timed runs and {config['min_seconds']} s; "
        f"{config['images']} test-split images as inputs; each target in its own process. Latency is per call (one batch); "
        + ("ratios are against the Keras baseline of the same run measured in this bench (a tf.function over model(x, training=False), "
           "like the edge runtimes timed from uint8 pixels to probabilities)." if has_baseline(doc) else
           "no Keras baseline was measured in this bench (--no-baseline, or it did not run), so there are no ratios to it.")
        + (" Throughput mode (img/s throughput mode), as OpenVINO's benchmark_app -hint throughput measures it: after the batch sweep, "
           f"batch 1 on several streams at once over {config['threads'][0]} threads, same warm-up and minimum runs and seconds, "
           "images completed over wall time; OpenVINO compiled with PERFORMANCE_HINT THROUGHPUT, its OPTIMAL_NUMBER_OF_INFER_REQUESTS "
           f"kept busy through an AsyncInferQueue; ONNX Runtime one session called from {config['threads'][0]} threads, 1 intra-op thread each; "
           f"LiteRT {config['threads'][0]} single-threaded interpreters, one per thread; the Keras baseline sequential (one stream: "
           "TensorFlow's thread pools belong to the process)." if has_throughput_mode(doc) else ""), "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows), "",
        *(f"- {line}" for line in unmeasured(doc)), "",
        "Artifact sha256 (model file): " + "; ".join(
            f"{t['name']} `{t['files'][t['model_file']]['sha256'][:16]}`" for t in doc["targets"] if t["device"] == "CPU"), "",
    ]
    return "\n".join(lines)
