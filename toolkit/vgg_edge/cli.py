"""The `vgg-edge` command line: a thin typer layer over the library.

Heavy modules (TensorFlow, the converters) are imported inside the commands, so `--help`
answers at once. A VggEdgeError becomes one red line and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .errors import VggEdgeError
from .ui import console, print_table

app = typer.Typer(
    name="vgg-edge",
    help="VGG16 transfer learning for medical images: train, export with a parity gate, benchmark, predict at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with one sub-folder per class, or train/ [val/] test/ splits. Omitted: the built-in scikit-learn digits."),
    out: Path = typer.Option(Path("runs/default"), "--out", help="Run directory to write (replaced atomically)."),
    image_size: int = typer.Option(224, "--image-size", min=32, help="Square input size in pixels (128 is common for MRI)."),
    epochs: int = typer.Option(10, "--epochs", min=0, help="Epochs of phase 1: the head on the frozen base."),
    fine_tune_epochs: int = typer.Option(10, "--fine-tune-epochs", min=0, help="Epochs of phase 2: fine-tuning."),
    fine_tune_blocks: int = typer.Option(1, "--fine-tune-blocks", min=0, max=5, help="Last VGG16 blocks to unfreeze in phase 2 (0: skip it)."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet ($VGG_EDGE_WEIGHTS, Keras cache, then download), a .h5 path, or none."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Adam learning rate of phase 1."),
    fine_tune_learning_rate: float = typer.Option(1e-4, "--fine-tune-lr", help="Adam learning rate of phase 2."),
    pooling: str = typer.Option("gap", "--pooling", help="Head pooling: gap or flatten."),
    dense_units: int = typer.Option(256, "--dense", min=1, help="Units of the head's dense layer."),
    dropout: float = typer.Option(0.5, "--dropout", min=0.0, max=0.95),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Flip/rotate/zoom/brightness/contrast while training (runs VGG16 every epoch: much slower)."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", min=0.0, max=0.5),
    test_fraction: float = typer.Option(0.15, "--test-fraction", min=0.01, max=0.5),
    seed: int = typer.Option(42, "--seed"),
    patience: int = typer.Option(3, "--patience", min=1, help="Early-stopping patience in epochs."),
    class_weights: bool = typer.Option(True, "--class-weights/--no-class-weights"),
    cache_features: bool = typer.Option(True, "--cache-features/--no-cache-features", help="Compute the frozen base once (off when augmenting)."),
    mixed_precision: str = typer.Option("off", "--mixed-precision", help="off, or bfloat16: on CPUs with AMX/AVX512-BF16, 2.1x faster fine-tuning and 4.4x faster feature extraction (measured); the saved model is float32 either way."),
) -> None:
    """Train a VGG16 classifier on a folder of labelled images and write a run directory."""
    from .model import HeadConfig
    from .training import TrainConfig, train as run_training

    config = TrainConfig(
        out=out, data=data, image_size=image_size, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        fine_tune_blocks=fine_tune_blocks, weights=weights, batch_size=batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, head=HeadConfig(pooling, dense_units, dropout),
        augment=augment, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, patience=patience,
        class_weights=class_weights, cache_features=cache_features, mixed_precision=mixed_precision,
    )
    result = run_training(config)
    report = result.report
    sizes = "  ".join(f"{split} {sum(c.values())}" for split, c in report["counts"].items())
    console.print(
        f"[green]trained[/] {result.run}  ({sizes} images; {report['dropped_duplicates']} duplicates dropped, "
        f"{report['unreadable']} unreadable skipped; kept phase '{report['kept_phase']}'; {report['timings']['total_s']:.0f} s)",
        soft_wrap=True,
    )
    print_table(metrics_table(result.metrics, "test split"))


@app.command()
def evaluate(run: Path = typer.Argument(..., help="Run directory written by `vgg-edge train`.")) -> None:
    """Recompute a run's metrics on its recorded test split."""
    from .fileio import read_json
    from .training import evaluate_run

    metrics = evaluate_run(run)
    print_table(metrics_table(metrics, f"{run} test split"))
    recorded = read_json(run / "metrics.json").get("accuracy")
    same = recorded is not None and abs(recorded - metrics["accuracy"]) < 1e-9
    console.print(f"recorded accuracy {recorded:.4f}: {'[green]reproduced[/]' if same else '[red]differs[/]'}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run directory written by `vgg-edge train`."),
    format: str = typer.Option(..., "--format", help="tflite, onnx, openvino, or all."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, dynamic (int8 weights, float activations), int8 (calibrated, full integer), or all."),
    int8: bool = typer.Option(False, "--int8", help="Shorthand for --precision int8."),
    fp16: bool = typer.Option(False, "--fp16", help="Shorthand for --precision fp16."),
    max_drop: float = typer.Option(1.0, "--max-drop", min=0.0, help="dynamic/int8 gate: the non-inferiority margin, in percentage points, for accuracy and each class's sensitivity."),
    require_proof: bool = typer.Option(False, "--require-proof", help="Reject an export whose test and val splits are too small to show it within --max-drop (default: publish it marked unproven)."),
    diagnose: bool = typer.Option(False, "--diagnose", help="int8: compare every layer's output with the float model (SQNR), written to <out>/diagnosis/; automatic when an int8 attempt is rejected or shows a drop."),
    calibration_size: Optional[int] = typer.Option(None, "--calibration-size", min=1, help="int8: train-split images to calibrate on, stratified by class (default 200)."),
    calibration_seed: int = typer.Option(0, "--calibration-seed", help="int8: seed of the calibration sample."),
    out: Optional[Path] = typer.Option(None, "--out", help="Artifact folder (default exported/<run>/<format>-<precision>/); with several formats or precisions, their parent folder."),
) -> None:
    """Convert a run, prove parity with the Keras model on its recorded splits, or refuse (exit 1)."""
    from .export import EXPORTERS, PRECISIONS, export_many, export_run

    if int8 and fp16:
        raise VggEdgeError("--int8 and --fp16: pick one precision")
    precision = "int8" if int8 else "fp16" if fp16 else precision
    formats = list(EXPORTERS) if format == "all" else [format]
    precisions = list(PRECISIONS) if precision == "all" else [precision]
    options = {
        "out": out, "max_drop": max_drop, "calibration_size": calibration_size, "calibration_seed": calibration_seed,
        "require_proof": require_proof, "diagnose": diagnose,
    }
    if len(formats) == 1 and len(precisions) == 1:
        results = [export_run(run, formats[0], precisions[0], **options)]
    else:
        results = export_many(run, formats, precisions, **options)
    print_table(parity_table(results))
    for result in results:
        name = f"{result.format}-{result.precision}"
        if result.status == "rejected":
            console.print(f"[red]rejected[/] {name}: {'; '.join(result.failures)} (report: {result.artifact / 'manifest.json'})", soft_wrap=True)
        elif result.status == "unproven":
            more = f" (and {len(result.unproven) - 1} more in its manifest.json, gate.unproven)" if len(result.unproven) > 1 else ""
            console.print(f"[yellow]unproven[/] {name}, published at {result.artifact}: {result.unproven[0]}{more}", soft_wrap=True)
    if any(r.status == "rejected" for r in results):
        raise typer.Exit(1)


STATUS_STYLE = {"accepted": "green", "unproven": "yellow", "rejected": "red"}
PARITY_NOTE = {
    "unproven": "matched the Keras model as far as its test and val splits can show, which is not within the export's margin (see gate.unproven in its manifest.json)",
    "rejected": "failed its parity gate: its predictions are not those of the validated model",
}


def parity_table(results) -> Table:
    """One row per exported artifact: the gate's verdict and the figures it was based on."""
    table = Table(title="parity with the Keras model (test split; the verdict also weighs val)")
    for column in ("artifact", "status", "MB", "convert s", "accuracy", "drop pp", "worst CI low pp", "flips", "max |dp|", "tried"):
        table.add_column(column, justify="left" if column in ("artifact", "status") else "right")
    for r in results:
        p, m = r.parity, r.manifest
        size = sum(f["bytes"] for f in m["files"].values()) / 1e6
        gated = [g["ci_pp"][0] for g in p["paired"] if g["gated"]]
        table.add_row(
            r.artifact.name, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", f"{size:.1f}",
            f"{m['conversion']['seconds']:.1f}", f"{p['reference_accuracy']:.4f} -> {p['accuracy']:.4f}",
            f"{p['accuracy_drop_pp']:+.2f}", f"{min(gated):+.2f}" if gated else "-", f"{p['flips']}/{p['n']}",
            f"{p['max_abs_prob_diff']:.1e}", str(len(m["attempts"])),
        )
    return table


@app.command()
def predict(
    artifact: Path = typer.Argument(..., help="Artifact folder written by `vgg-edge export` (holds manifest.json)."),
    paths: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, DICOM, ...) and folders of them."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="How many labels to show per image, most probable first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV on stdout instead of a table."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Runtime threads (default: the runtime's own choice)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    allow_rejected: bool = typer.Option(False, "--allow-rejected", help="Also run an artifact that failed its parity gate."),
) -> None:
    """Classify images with an exported model, without TensorFlow. Exit status 1 if any input could not be read."""
    import csv
    import json

    from .runtime import expand_inputs, load_artifact

    if as_json and as_csv:
        raise VggEdgeError("--json and --csv: choose one output format")
    predictor = load_artifact(artifact, threads=threads, allow_rejected=allow_rejected)
    if predictor.info.status != "accepted":
        console.print(f"[yellow]{predictor.info.status}:[/] {escape(str(predictor.info.path))} {PARITY_NOTE[predictor.info.status]}", soft_wrap=True)
    files, failures, skipped = expand_inputs(paths)
    results, unreadable = predictor.classify(files, top_k=top_k, batch_size=batch_size)
    failures |= unreadable
    top_k = min(top_k, len(predictor.labels))
    if as_json:
        doc = {
            "artifact": str(artifact), "format": predictor.info.format, "precision": predictor.info.precision, "parity": predictor.info.status,
            "predictions": [{"path": r.path, "label": r.label, "confidence": r.confidence, "top": [{"label": lab, "probability": p} for lab, p in r.top]} for r in results],
            "failures": [{"path": path, "error": why} for path, why in failures.items()],
            "skipped_non_images": skipped,
        }
        print(json.dumps(doc, indent=2))
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "label", "confidence", *(f"{key}_{k}" for k in range(2, top_k + 1) for key in ("label", "confidence")), "error"])
        for r in results:
            writer.writerow([r.path, r.label, f"{r.confidence:.6f}", *(v for lab, p in r.top[1:] for v in (lab, f"{p:.6f}")), ""])
        for path, why in failures.items():
            writer.writerow([path, "", "", *([""] * 2 * (top_k - 1)), why])
    else:
        info = predictor.info
        table = Table(title=f"{escape(str(artifact))} ({info.format} {info.precision}, {len(info.labels)} classes, {info.image_size} px)")
        table.add_column("file", overflow="fold")
        table.add_column("label")
        table.add_column("probability", justify="right")
        if top_k > 1:
            table.add_column(f"next {top_k - 1}")
        for r in results:
            rest = ", ".join(f"{lab} {p:.4f}" for lab, p in r.top[1:])
            table.add_row(escape(r.path), escape(r.label), f"{r.confidence:.4f}", *([escape(rest)] if top_k > 1 else []))
        print_table(table)
    for why in failures.values():
        console.print(f"[red]error:[/] {escape(why)}", soft_wrap=True)
    if skipped:
        console.print(f"[yellow]skipped {skipped} non-image or hidden files[/] in the folders given")
    if failures:
        console.print(f"[red]{len(failures)} of {len(results) + len(failures)} inputs could not be read[/]")
        raise typer.Exit(1)


@app.command()
def bench(
    paths: list[Path] = typer.Argument(..., help="exported/<run> (every artifact in it), artifact folders, and/or run directories (their Keras model is the baseline)."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Batch sizes of the throughput sweep, comma-separated."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts, comma-separated; the first gets the batch sweep, the rest batch 1 (default: all cores, then 1)."),
    min_runs: int = typer.Option(20, "--min-runs", min=1, help="Timed calls per batch size, at least."),
    min_seconds: float = typer.Option(2.0, "--min-seconds", min=0.0, help="Timed seconds per batch size, at least."),
    warmup_runs: int = typer.Option(3, "--warmup-runs", min=0),
    warmup_seconds: float = typer.Option(1.0, "--warmup-seconds", min=0.0),
    images: int = typer.Option(64, "--images", min=1, help="Test-split images used as inputs."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Time each source run's Keras model (tf.function) as the baseline of the ratios."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for bench.json/csv/md and the plots (default: exported/<run>/bench)."),
    compare_with: Optional[Path] = typer.Option(None, "--compare", help="An earlier bench.json: print new/old ratios of median latency and throughput."),
    fail_if_slower: Optional[float] = typer.Option(None, "--fail-if-slower", min=1.0, help="With --compare: exit 1 if a median latency grew by more than this ratio (1.10: 10%)."),
) -> None:
    """Latency percentiles and throughput of every export in every runtime, beside its accuracy; each runtime in its own process."""
    from .bench import BenchConfig, command_line, compare, discover, load_bench, parse_ints, regressions, run_bench, summary_rows, unmeasured

    if fail_if_slower is not None and compare_with is None:
        raise VggEdgeError("--fail-if-slower needs --compare OLD.json (the bench.json to compare against)")
    old = load_bench(compare_with) if compare_with else None
    config = BenchConfig(
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"), threads=parse_ints(threads, "--threads") if threads else (),
        min_runs=min_runs, min_seconds=min_seconds, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds, images=images,
    )
    targets = discover(paths, baseline=baseline)
    out = out or Path("exported") / Path(targets[0].run).resolve().name / "bench"
    doc = run_bench(targets, config, out, command_line(paths, config, out, baseline), on_target=lambda t: console.print(f"[bold]bench[/] {escape(t.key)}"))
    header, rows = summary_rows(doc)
    table = Table(title=f"vgg-edge bench: batch 1 latency and throughput at {doc['config']['threads'][0]} threads (x Keras: ratio to the baseline in this run)")
    for column in header:
        table.add_column(column, justify="left" if column in ("run", "target", "runtime", "device", "gate") else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    print_table(table)
    for line in unmeasured(doc):
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    console.print(f"[green]wrote[/] {out}/bench.json, bench.csv, bench.md, latency.png, pareto.png, throughput.png")
    if old is None:
        return
    comparisons = compare(doc, old)
    table = Table(title=f"against {escape(str(compare_with))} (new/old; latency above 1 is slower)")
    for column in ("target", "threads", "batch", "old p50 ms", "new p50 ms", "latency new/old", "throughput new/old"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for c in comparisons:
        table.add_row(escape(c.key), str(c.threads), str(c.batch), f"{c.old_p50_ms:.2f}", f"{c.new_p50_ms:.2f}", f"{c.latency_ratio:.3f}", f"{c.throughput_ratio:.3f}")
    print_table(table)
    if not comparisons:
        raise VggEdgeError(f"{compare_with}: no target, thread count and batch size in common with this bench; compare like with like")
    slower = regressions(comparisons, fail_if_slower) if fail_if_slower else []
    for c in slower:
        console.print(f"[red]slower:[/] {escape(c.key)} threads {c.threads} batch {c.batch}: median {c.old_p50_ms:.2f} -> {c.new_p50_ms:.2f} ms (x{c.latency_ratio:.3f} > {fail_if_slower})")
    if slower:
        raise typer.Exit(1)


def metrics_table(metrics: dict, title: str) -> Table:
    """Per-class sensitivity/specificity/AUC with the overall accuracy in the title."""
    table = Table(title=f"{title}: accuracy {metrics['accuracy']:.4f} on {metrics['n']} images")
    for column in ("class", "support", "precision", "sensitivity", "specificity", "F1", "ROC-AUC"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, m in metrics["per_class"].items():
        cells = [m["precision"], m["sensitivity"], m["specificity"], m["f1"], m["roc_auc"]]
        table.add_row(label, str(m["support"]), *("-" if v is None else f"{v:.4f}" for v in cells))
    return table


def main() -> None:
    """Console-script entry point: a user error is one line and exit status 2, never a traceback."""
    try:
        app()
    except VggEdgeError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an edge install (`vgg-edge[edge]`) has no TensorFlow, converters or plots
        console.print(f"[red]error:[/] this command needs {exc.name}, which this install lacks; pip install 'vgg-edge\\[full]'", soft_wrap=True)
        sys.exit(2)
