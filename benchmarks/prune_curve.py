"""Accuracy against latency as VGG16 is pruned: keep 1.0 / 0.7 / 0.5 / 0.3 of the convolutional MACs, int8 in every format.

    .venv/bin/python benchmarks/prune_curve.py [--run runs/brain-mri-128-b2-bf16-flatten] [--keeps 1.0,0.7,0.5,0.3] [--epochs 5]
                                               [--distilled 0.5] [--name prune_curve]

For each keep below 1: `vgg-edge prune RUN --keep K --out runs/<run>-keepK` (activation criterion, the
default fine-tuning on the labels), and for each keep in --distilled the same with `--distill 0.5`
(targets half the source's own probabilities, `runs/<run>-keepK-distill0.5`), then `vgg-edge export runs/<run>-keepK --format all --int8`. Keep 1.0 is the
source run itself, as trained (its int8 exports in exported/<run>/ are reused when present), not a
keep-1.0 prune, which would only add fine-tuning epochs. Then one `vgg-edge bench` times every int8
artifact with each run's Keras model as its baseline, and the source's fp32 ONNX export (the issue's
speed targets are against a peer's fp32 export, which ours matches per pixel), in one sitting so the rows compare.

Results: benchmarks/results/<name>/ (the bench's files) and benchmarks/results/<name>.md
(one row per keep: MACs, parameters, Keras test accuracy, and per format the gate, int8 test accuracy,
median batch-1 latency and batch-8 throughput). Every step is skipped when its output exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from vgg_edge.fileio import read_json
from vgg_edge.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LOGS = ROOT / "benchmarks" / "logs"
VGG_EDGE = str(ROOT / ".venv" / "bin" / "vgg-edge")
BENCH = ["--batch-sizes", "1,8", "--threads", "2,1", "--min-runs", "10", "--min-seconds", "3", "--warmup-runs", "3", "--warmup-seconds", "2"]


def sh(args: list[str], log: str) -> None:
    """Run a command with its output in benchmarks/logs/<log>.log; stop the script if it fails."""
    LOGS.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(args), flush=True)
    with open(LOGS / f"{log}.log", "w") as handle:
        handle.write("$ " + " ".join(args) + "\n")
        handle.flush()
        done = subprocess.run(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode not in (0, 1):  # export exits 1 when an artifact is rejected; it is still benchmarked
        sys.exit(f"{args[0]} failed with status {done.returncode}; see {LOGS / f'{log}.log'}")


def pruned_run(source: Path, keep: float, epochs: int | None, distilled: bool = False) -> Path:
    """The source run at `keep` (the source itself at 1.0), pruned unless done; `distilled`: with --distill 0.5."""
    if keep == 1.0:
        return source
    run = source.with_name(f"{source.name}-keep{keep:g}{'-distill0.5' if distilled else ''}")
    if not (run / "model.keras").is_file():
        sh([VGG_EDGE, "prune", str(source), "--keep", f"{keep:g}", "--out", str(run), *(["--epochs", str(epochs)] if epochs is not None else []),
            *(["--distill", "0.5"] if distilled else [])], f"prune-{run.name}")
    return run


def int8_artifacts(run: Path) -> list[Path]:
    """exported/<run>/<format>-int8 for every format, exported unless done (rejected ones are left out of the bench)."""
    root = ROOT / "exported" / run.name
    if not all((root / f"{f}-int8" / "manifest.json").is_file() or (root / f"{f}-int8.rejected").is_dir() for f in FORMATS):
        sh([VGG_EDGE, "export", str(run), "--format", "all", "--int8"], f"export-{run.name}-int8")
    return [root / f"{f}-int8" for f in FORMATS if (root / f"{f}-int8" / "manifest.json").is_file()]


def onnx_fp32(run: Path) -> Path:
    """exported/<run>/onnx-fp32, exported unless done: the speed of a plain fp32 export, the peer's per pixel (peer_fp32_240.md)."""
    artifact = ROOT / "exported" / run.name / "onnx-fp32"
    if not (artifact / "manifest.json").is_file():
        sh([VGG_EDGE, "export", str(run), "--format", "onnx", "--out", str(artifact)], f"export-{run.name}-onnx-fp32")
    return artifact


def table(runs: dict[str, Path], bench: Path, name: str) -> str:
    """prune_curve.md: one row per keep, every int8 format's accuracy and speed beside the run's Keras figures."""
    from vgg_edge.bench import load_bench, measurement

    doc = load_bench(bench / "bench.json")
    threads = doc["config"]["threads"][0]
    by_run: dict[str, dict[str, dict]] = {}
    for t in doc["targets"]:
        if t["status"] == "ok":
            by_run.setdefault(str(Path(t["run"]).resolve()), {})[t["format"] if t["precision"] == "int8" else f"{t['format']}-{t['precision']}"] = t
    header = ["keep", "distill", "conv GMACs", "params M", "Keras test acc", "vs source, pp (95% CI)", "vs source, gate", "Keras p50 ms b1"]
    for f in FORMATS:
        header += [f"{f} int8 gate", f"{f} int8 acc", f"{f} int8 p50 ms b1", f"{f} int8 img/s b8"]
    lines = ["# Pruning curve: accuracy against latency, int8 in every format", "",
             f"Produced by `.venv/bin/python benchmarks/prune_curve.py {' '.join(sys.argv[1:])}`; bench: `{doc['command']}` (full tables in {name}/bench.md).",
             "Keep 1.0 is the source run as trained; the others are `vgg-edge prune --keep K` of it (activation criterion, fine-tuned on its "
             "train split, each batch augmented as the source was trained unless the run records otherwise (`distill`: the source's own probabilities' "
             "weight in the targets; 0: the labels alone), temperature and "
             "operating point re-chosen on val). Accuracies are on the source's test split. `vs source`: the pruned Keras model's "
             "accuracy change against the source's on those images, with the parity gate's paired interval, and the gate's verdict "
             "at a 1-point margin over accuracy and every class's sensitivity (`prune` records it; the int8 columns are each "
             "export against its own Keras model).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for keep, run in runs.items():
        config, metrics = read_json(run / "config.json"), read_json(run / "metrics.json")
        record = config.get("prune")
        targets = by_run.get(str(run.resolve()), {})
        keras = targets.get("keras-fp32")
        judged = read_json(run / "report.json").get("against_source")
        change = next(m for m in judged["paired"] if m["metric"] == "accuracy") if judged else None
        cells = [keep, f"{record.get('distill', 0):g}" if record else "-", f"{record['conv_macs']['after'] / 1e9:.2f}" if record else "source", f"{record['params']['after'] / 1e6:.1f}" if record else "source",
                 f"{metrics['accuracy']:.4f}", f"{change['change_pp']:+.2f} ({change['ci_pp'][0]:+.2f}, {change['ci_pp'][1]:+.2f})" if change else "-",
                 judged["status"] if judged else "-", f"{measurement(keras, 1, threads)['latency_ms']['p50']:.1f}" if keras else "-"]
        for f in FORMATS:
            t = targets.get(f)
            if t is None:
                cells += ["rejected or missing", "-", "-", "-"]
                continue
            cells += [t["parity_status"] or "-", "-" if t["accuracy"] is None else f"{t['accuracy']:.4f}",
                      f"{measurement(t, 1, threads)['latency_ms']['p50']:.1f}", f"{measurement(t, 8, threads)['throughput_ips']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    fp32 = by_run.get(str(next(iter(runs.values())).resolve()), {}).get("onnx-fp32")
    if fp32:  # the speed targets are against the peer's fp32 export, which ours matches per pixel
        base = measurement(fp32, 1, threads)["latency_ms"]["p50"]
        lines += ["", f"Against the source's fp32 ONNX export (batch-1 p50 {base:.1f} ms; the peer's speed per pixel, peer_fp32_240.md), "
                  "the fastest int8 export at each keep:", "", "| keep | fastest int8 | p50 ms b1 | x faster than fp32 ONNX |", "|---|---|---|---|"]
        for keep, run in runs.items():
            int8 = {f: measurement(t, 1, threads)["latency_ms"]["p50"] for f, t in by_run.get(str(run.resolve()), {}).items() if f in FORMATS}
            if int8:
                best = min(int8, key=int8.get)
                lines.append(f"| {keep} | {best} | {int8[best]:.1f} | {base / int8[best]:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "brain-mri-128-b2-bf16-flatten")
    parser.add_argument("--keeps", default="1.0,0.7,0.5,0.3")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs at most (default: prune's own)")
    parser.add_argument("--distilled", default="", help="keeps to prune a second time with --distill 0.5, for comparison")
    parser.add_argument("--name", default="prune_curve", help="results: benchmarks/results/<name>.md and <name>/")
    args = parser.parse_args()
    if not (args.run / "model.keras").is_file():
        sys.exit(f"{args.run}: missing; train it first (benchmarks/train.sh)")
    source = args.run.resolve()
    runs = {f"{keep:g}": pruned_run(source, keep, args.epochs) for keep in sorted((float(k) for k in args.keeps.split(",")), reverse=True)}
    runs |= {f"{keep:g} (distilled)": pruned_run(source, keep, args.epochs, distilled=True) for keep in (float(k) for k in args.distilled.split(",") if k)}
    artifacts = [onnx_fp32(source), *(a for run in runs.values() for a in int8_artifacts(run))]
    out = RESULTS / args.name
    sh([VGG_EDGE, "bench", *map(str, artifacts), *BENCH, "--out", str(out)], args.name)
    shutil.copy(LOGS / f"{args.name}.log", out / "bench.log")
    text = table(runs, out, args.name)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
