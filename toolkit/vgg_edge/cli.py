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

from .errors import VggEdgeError, check_range
from .ui import console, print_table

app = typer.Typer(
    name="vgg-edge",
    help="VGG16 transfer learning for medical images: train, export with a parity gate, benchmark, predict at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's option panels cut long option names at 80 columns
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"vgg-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the libraries' own log lines and warnings (otherwise kept in ~/.cache/vgg-edge/logs/<command>.log)."),
) -> None:
    """VGG16 transfer learning for medical images: train, export with a parity gate, benchmark, predict at the edge."""
    from .fileio import cache_dir
    from .ui import quiet_native_output

    if not verbose and ctx.invoked_subcommand:
        quiet_native_output(cache_dir() / "logs" / f"{ctx.invoked_subcommand}.log")


def _import_defaults():
    """ImportConfig's defaults for the options that have them (the required fields get placeholders)."""
    from .importing import ImportConfig

    return ImportConfig(model=Path(), data=Path(), preprocess="scale")


def _serve_defaults():
    """ServeConfig's defaults (required fields get placeholders); importing it loads no server library."""
    from .serve.config import ServeConfig

    return ServeConfig(artifact=Path(), out=Path())


def _train_defaults():
    """TrainConfig's own defaults, so the CLI never states them a second time."""
    from .model import AugmentConfig, HeadConfig
    from .training import TrainConfig

    return TrainConfig(), HeadConfig(), AugmentConfig()


_T, _HEAD, _AUG = _train_defaults()
from .export.pipeline import DEFAULT_CALIBRATION_SIZE, DEFAULT_MAX_DROP  # noqa: E402  (no converter is imported until a command runs)
_IMPORT = _import_defaults()
_SERVE = _serve_defaults()


@app.command(short_help="Train VGG16 on a folder of labelled images.")
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with one sub-folder per class, or train/ [val/] test/ splits. Omitted: the built-in scikit-learn 8x8 digits (not MNIST)."),
    out: Path = typer.Option(_T.out, "--out", help="Run directory to write (replaced atomically)."),
    image_size: int = typer.Option(_T.image_size, "--image-size", help="Square input size in pixels (128 is common for MRI)."),
    epochs: int = typer.Option(_T.epochs, "--epochs", help="Epochs of phase 1: the head on the frozen base."),
    fine_tune_epochs: int = typer.Option(_T.fine_tune_epochs, "--fine-tune-epochs", help="Epochs of phase 2: fine-tuning."),
    fine_tune_blocks: int = typer.Option(_T.fine_tune_blocks, "--fine-tune-blocks", help="Last VGG16 blocks to unfreeze in phase 2 (0: skip it)."),
    weights: str = typer.Option(_T.weights, "--weights", help="imagenet ($VGG_EDGE_WEIGHTS, Keras cache, then download), a .h5 path, or none."),
    batch_size: int = typer.Option(_T.batch_size, "--batch-size"),
    learning_rate: float = typer.Option(_T.learning_rate, "--lr", help="Adam learning rate of phase 1."),
    fine_tune_learning_rate: float = typer.Option(_T.fine_tune_learning_rate, "--fine-tune-lr", help="Adam learning rate of phase 2."),
    label_smoothing: float = typer.Option(_T.label_smoothing, "--label-smoothing", help="Spread this share of each training target evenly over the classes (regularises; epochs are still chosen on plain val loss)."),
    pooling: str = typer.Option(_HEAD.pooling, "--pooling", help="Head pooling: gap or flatten."),
    dense_units: int = typer.Option(_HEAD.dense_units, "--dense", help="Units of the head's dense layer."),
    dropout: float = typer.Option(_HEAD.dropout, "--dropout"),
    augment: str = typer.Option(_T.augment, "--augment", help="cached: augmented views through the frozen base once (epochs as fast as without); online: fresh augmentation every epoch (runs VGG16 every epoch); off."),
    views: int = typer.Option(_T.views, "--views", help="cached augmentation: versions of each training image (the original and views-1 augmented)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Horizontal flips among the augmentations. Neither given: decided on the data (flips stay when mirrored val images keep their labels; off for images whose sides differ, e.g. digits)."),
    val_fraction: float = typer.Option(_T.val_fraction, "--val-fraction"),
    test_fraction: float = typer.Option(_T.test_fraction, "--test-fraction"),
    seed: int = typer.Option(_T.seed, "--seed"),
    patience: int = typer.Option(_T.patience, "--patience", help="Early-stopping patience in epochs."),
    class_weights: bool = typer.Option(_T.class_weights, "--class-weights/--no-class-weights"),
    mixed_precision: str = typer.Option(_T.mixed_precision, "--mixed-precision", help="auto (float16 on an NVIDIA GPU with tensor cores; bfloat16 where the CPU has AMX or AVX512-BF16: about 2x faster fine-tuning, measured), off, bfloat16 or float16; the saved model is float32 either way."),
    calibrate: bool = typer.Option(_T.calibrate, "--calibrate/--no-calibrate", help="Fit a temperature on val and fold it into the model (calibrated probabilities, same decisions)."),
    resume: bool = typer.Option(False, "--resume", help="Go on from where an interrupted run with the same settings and --out stopped (the last completed epoch)."),
    target_sensitivity: Optional[str] = typer.Option(None, "--target-sensitivity", help="CLASS=FRACTION: call CLASS whenever its probability reaches the threshold that finds FRACTION of its val images (e.g. malignant=0.95); travels into every export."),
    strategy: str = typer.Option(_T.strategy, "--strategy", help="auto, one (one device), mirrored (the local GPUs) or multi-worker (the machines TF_CONFIG names; run the same command on each). auto: multi-worker under a TF_CONFIG cluster, mirrored with 2+ GPUs, else one."),
) -> None:
    """Train a VGG16 classifier on a folder of labelled images and write a run directory."""
    import dataclasses

    from .decision import parse_target
    from .model import HeadConfig
    from .training import TrainConfig, train as run_training

    config = TrainConfig(
        out=out, data=data, image_size=image_size, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        fine_tune_blocks=fine_tune_blocks, weights=weights, batch_size=batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, label_smoothing=label_smoothing, head=HeadConfig(pooling, dense_units, dropout),
        augment=augment, views=views, augmentation=dataclasses.replace(_AUG, flip=flip),
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, patience=patience,
        class_weights=class_weights, mixed_precision=mixed_precision, calibrate=calibrate,
        target_sensitivity=parse_target(target_sensitivity) if target_sensitivity else None, resume=resume, strategy=strategy,
    )
    result = run_training(config)
    if result is None:  # a worker other than the chief: it has said so
        return
    report = result.report
    sizes = "  ".join(f"{split} {sum(c.values())}" for split, c in report["counts"].items())
    kept = report["selection"]["kept"]
    console.print(
        f"[green]trained[/] {result.run}  ({sizes} images; {report['dropped_duplicates']} duplicates dropped, "
        f"{report['unreadable']} unreadable skipped; kept {report['kept_phase']} epoch {kept['best_epoch'] if kept else '-'} "
        f"by {report['selection']['monitor']}; {report['timings']['total_s']:.0f} s)",
        soft_wrap=True,
    )
    print_table(metrics_table(result.metrics, "test split"))
    if "operating_point" in result.metrics:
        print_table(metrics_table(result.metrics["operating_point"]["metrics"], "test split at the operating point"))
    console.print(f"next: vgg-edge export {result.run} --format all --int8   (curves, confusion matrix and reliability PNGs are in {result.run})")


@app.command("import", short_help="Make a Keras model trained elsewhere (.h5, .keras) into a run.")
def import_(
    model: Path = typer.Argument(..., help="The Keras model file (.keras, or a legacy .h5 as the seed notebooks save)."),
    data: Path = typer.Option(..., "--data", help="The labelled folder (one sub-folder per class, or train/ [val/] test/): its test split proves parity."),
    preprocess: str = typer.Option(..., "--preprocess", help="What the model expects done to 0-255 RGB pixels: scale (x/255, as the seed notebooks), vgg16 (keras.applications.vgg16.preprocess_input) or none. Baked into the run's model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default runs/<model file name>)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="The class names in the model's output order, comma-separated (default: the class folders, sorted, as Keras' folder loaders number them)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Only for models that accept any input size: the size they were trained at."),
    val_fraction: float = typer.Option(_IMPORT.val_fraction, "--val-fraction"),
    test_fraction: float = typer.Option(_IMPORT.test_fraction, "--test-fraction"),
    seed: int = typer.Option(_IMPORT.seed, "--seed"),
) -> None:
    """Make a Keras model trained elsewhere into a run directory that export, bench and predict take."""
    from .importing import ImportConfig, import_model

    config = ImportConfig(
        model=model, data=data, preprocess=preprocess, out=out, labels=[v.strip() for v in labels.split(",")] if labels else None,
        image_size=image_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
    )
    result = import_model(config)
    sizes = "  ".join(f"{split} {sum(c.values())}" for split, c in result.report["counts"].items())
    console.print(f"[green]imported[/] {result.run}  ({sizes} images; preprocessing {config.preprocess} in the graph)", soft_wrap=True)
    print_table(metrics_table(result.metrics, "test split"))
    console.print("[yellow]note:[/] the test split is this folder's: if the model was trained on some of these images, its accuracy is optimistic (parity is not affected)", soft_wrap=True)
    console.print(f"next: vgg-edge export {result.run} --format all --int8", soft_wrap=True)


@app.command(short_help="Recompute a run's test-split metrics.")
def evaluate(run: Path = typer.Argument(..., help="Run directory written by `vgg-edge train`.")) -> None:
    """Recompute a run's metrics on its recorded test split."""
    from .run import RunDir
    from .training import evaluate_run

    metrics = evaluate_run(run)
    print_table(metrics_table(metrics, f"{run} test split"))
    if "operating_point" in metrics:
        print_table(metrics_table(metrics["operating_point"]["metrics"], f"{run} test split at the operating point"))
    recorded_doc = RunDir.open(run).metrics
    recorded = recorded_doc.get("accuracy")
    same = recorded is not None and abs(recorded - metrics["accuracy"]) < 1e-9
    if "operating_point" in metrics:
        same = same and recorded_doc.get("operating_point", {}).get("metrics", {}).get("confusion_matrix") == metrics["operating_point"]["metrics"]["confusion_matrix"]
    console.print(f"recorded accuracy {recorded:.4f}: {'[green]reproduced[/]' if same else '[red]differs[/]'}")


@app.command(short_help="Convert a run and prove parity, or refuse.")
def export(
    run: Path = typer.Argument(..., help="Run directory written by `vgg-edge train`."),
    format: str = typer.Option(..., "--format", help="tflite, onnx, openvino, or all."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, dynamic (int8 weights, float activations), int8 (calibrated, full integer), or all."),
    int8: bool = typer.Option(False, "--int8", help="Shorthand for --precision int8."),
    fp16: bool = typer.Option(False, "--fp16", help="Shorthand for --precision fp16."),
    max_drop: float = typer.Option(DEFAULT_MAX_DROP, "--max-drop", help="dynamic/int8 gate: the non-inferiority margin, in percentage points, for accuracy and each class's sensitivity."),
    require_proof: bool = typer.Option(False, "--require-proof", help="Reject an export whose test and val splits are too small to show it within --max-drop (default: publish it marked unproven)."),
    diagnose: bool = typer.Option(False, "--diagnose", help="int8: compare every layer's output with the float model (SQNR), written to <out>/diagnosis/; automatic when an int8 attempt is rejected or shows a drop."),
    calibration_size: Optional[int] = typer.Option(None, "--calibration-size", help=f"int8: train-split images to calibrate on, stratified by class (default {DEFAULT_CALIBRATION_SIZE})."),
    calibration_seed: int = typer.Option(0, "--calibration-seed", help="int8: seed of the calibration sample."),
    out: Optional[Path] = typer.Option(None, "--out", help="Artifact folder (default exported/<run>/<format>-<precision>/); with several formats or precisions, their parent folder."),
    wide: bool = typer.Option(False, "--wide", help="All columns in the parity table (size, conversion time, max |dp|, attempts); the manifests hold everything."),
) -> None:
    """Convert a run, prove parity with the Keras model on its recorded splits, or refuse (exit 1)."""
    from .export import PRECISIONS, export_many, export_run
    from .formats import FORMATS

    if int8 and fp16:
        raise VggEdgeError("--int8 and --fp16: pick one precision")
    precision = "int8" if int8 else "fp16" if fp16 else precision
    formats = list(FORMATS) if format == "all" else [format]
    precisions = list(PRECISIONS) if precision == "all" else [precision]
    options = {
        "out": out, "max_drop": max_drop, "calibration_size": calibration_size, "calibration_seed": calibration_seed,
        "require_proof": require_proof, "diagnose": diagnose,
    }
    if len(formats) == 1 and len(precisions) == 1:
        results = [export_run(run, formats[0], precisions[0], **options)]
    else:
        results = export_many(run, formats, precisions, **options)
    print_table(parity_table(results, wide))
    for result in results:
        name = f"{result.format}-{result.precision}"
        if result.status == "rejected":
            console.print(f"[red]rejected[/] {name}: {'; '.join(result.failures)} (report: {result.artifact / 'manifest.json'})", soft_wrap=True)
        elif result.status == "unproven":
            more = f" (and {len(result.unproven) - 1} more in its manifest.json, gate.unproven)" if len(result.unproven) > 1 else ""
            console.print(f"[yellow]unproven[/] {name}, published at {result.artifact}: {result.unproven[0]}{more}", soft_wrap=True)
        else:
            console.print(f"[green]accepted[/] {name}, published at {result.artifact}", soft_wrap=True)
    published = [r for r in results if r.published]
    if published:
        where = published[0].artifact.parent if len(published) > 1 else published[0].artifact
        console.print(f"next: vgg-edge bench {where}   or   vgg-edge predict {published[0].artifact} IMAGES...", soft_wrap=True)
    if any(r.status == "rejected" for r in results):
        raise typer.Exit(1)


STATUS_STYLE = {"accepted": "green", "unproven": "yellow", "rejected": "red"}
PARITY_NOTE = {
    "unproven": "matched the Keras model as far as its test and val splits can show, which is not within the export's margin (see gate.unproven in its manifest.json)",
    "rejected": "failed its parity gate: its predictions are not those of the validated model",
}


def parity_table(results, wide: bool = False) -> Table:
    """One row per exported artifact: the gate's verdict and the figures it was based on (compact unless `wide`)."""
    reference = {f"{r.parity['reference_accuracy']:.4f}" for r in results}
    table = Table(title=f"parity with Keras ({', '.join(sorted(reference))} on test; the verdict also weighs val)")
    names = [f"{r.format}-{r.precision}" for r in results]
    table.add_column("artifact", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("status", no_wrap=True, min_width=8)
    columns = ["accuracy", "drop pp", "worst CI low pp", "flips"] + (["MB", "convert s", "max |dp|", "tried"] if wide else [])
    for column in columns:
        table.add_column(column, justify="right")
    for name, r in zip(names, results):
        p, m = r.parity, r.manifest
        gated = [g["ci_pp"][0] for g in p["paired"] if g["gated"]]
        cells = [f"{p['accuracy']:.4f}", f"{p['accuracy_drop_pp']:+.2f}", f"{min(gated):+.2f}" if gated else "-", f"{p['flips']}/{p['n']}"]
        if wide:
            size = sum(f["bytes"] for f in m["files"].values()) / 1e6
            cells += [f"{size:.1f}", f"{m['conversion']['seconds']:.1f}", f"{p['max_abs_prob_diff']:.1e}", str(len(m["attempts"]))]
        table.add_row(name, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", *cells)
    return table


@app.command(short_help="Classify images with an export (no TensorFlow).")
def predict(
    artifact: Path = typer.Argument(..., help="Artifact folder written by `vgg-edge export` (holds manifest.json)."),
    paths: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, DICOM, ...) and folders of them."),
    top_k: int = typer.Option(1, "--top-k", help="How many labels to show per image, most probable first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV on stdout instead of a table."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own choice)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    allow_rejected: bool = typer.Option(False, "--allow-rejected", help="Also run an artifact that failed its parity gate."),
    device: str = typer.Option("CPU", "--device", help="Where the runtime runs it: CPU, or CUDA / TensorRT (ONNX), GPU (OpenVINO)."),
) -> None:
    """Classify images with an exported model, without TensorFlow. Exit status 1 if any input could not be read."""
    import csv
    import json

    from .images import collected_warnings
    from .runtime import expand_inputs, load_artifact

    if as_json and as_csv:
        raise VggEdgeError("--json and --csv: choose one output format")
    predictor = load_artifact(artifact, threads=threads, device=device, allow_rejected=allow_rejected)
    if predictor.info.status != "accepted":
        console.print(f"[yellow]{predictor.info.status}:[/] {escape(str(predictor.info.path))} {PARITY_NOTE[predictor.info.status]}", soft_wrap=True)
    files, failures, skipped = expand_inputs(paths)
    with collected_warnings() as warned:  # what the decoders warned about, per file read
        results, unreadable = predictor.classify(files, top_k=top_k, batch_size=batch_size)
    failures |= unreadable
    top_k = min(top_k, len(predictor.labels))
    if as_json:
        doc = {
            "artifact": str(artifact), "format": predictor.info.format, "precision": predictor.info.precision, "parity": predictor.info.status,
            "decision": predictor.info.decision.record(),
            "predictions": [{"path": r.path, "label": r.label, "confidence": r.confidence, "top": [{"label": lab, "probability": p} for lab, p in r.top]} for r in results],
            "failures": [{"path": path, "error": why} for path, why in failures.items()],
            "warnings": [{"path": path, "warning": line} for path, line in warned.items()],
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
    elif results:
        info = predictor.info
        rule = "" if info.decision.positive is None else f"; label: {info.decision.describe()}"
        table = Table(title=f"{escape(str(artifact))} ({info.format} {info.precision}, {len(info.labels)} classes, {info.image_size} px{escape(rule)})")
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
    if warned:
        many = f"{len(warned)} files" if len(warned) > 1 else "1 file"
        console.print(f"[yellow]the image decoders warned about {many}, read anyway[/] (first: {escape(next(iter(warned.values())))})", soft_wrap=True)
    if skipped:
        console.print(f"[yellow]skipped {skipped} non-image or hidden files[/] in the folders given")
    if failures:
        console.print(f"[red]{len(failures)} of {len(results) + len(failures)} inputs could not be read[/]")
        raise typer.Exit(1)


def _bench_defaults():
    """BenchConfig's own defaults, so the CLI never states them a second time."""
    from .bench import BenchConfig

    return BenchConfig()


_BENCH = _bench_defaults()


def _join_ints(values: tuple[int, ...]) -> str:
    """(1, 8, 32) -> '1,8,32', as --batch-sizes and --threads take them."""
    return ",".join(map(str, values))


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); anything else is a one-line error naming the option."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise VggEdgeError(f"{option} {text!r}: expected positive integers separated by commas, e.g. 1,8,32")
    return values


def command_line(paths: list[Path], config, out: Path, baseline: bool = True) -> str:
    """The `vgg-edge bench` command that repeats the measurement of `config` (a BenchConfig), every setting spelled out."""
    import shlex

    args = ["vgg-edge", "bench", *map(str, paths), "--batch-sizes", _join_ints(config.batch_sizes), "--threads", _join_ints(config.thread_counts()),
            "--min-runs", str(config.min_runs), "--min-seconds", f"{config.min_seconds:g}", "--warmup-runs", str(config.warmup_runs),
            "--warmup-seconds", f"{config.warmup_seconds:g}", "--images", str(config.images), "--throughput" if config.throughput else "--no-throughput",
            *([] if baseline else ["--no-baseline"]), "--out", str(out)]
    return shlex.join(args)


@app.command(short_help="Run an export as a service: DICOM C-STORE and HTTP.")
def serve(
    artifact: Path = typer.Argument(..., help="Artifact folder written by `vgg-edge export` (accepted or unproven)."),
    out: Path = typer.Option(..., "--out", help="Folder for the spool of accepted images and results.jsonl (kept across restarts)."),
    host: str = typer.Option(_SERVE.host, "--host", help="Address to listen on (loopback unless told otherwise; 0.0.0.0 for every interface)."),
    dicom_port: int = typer.Option(_SERVE.dicom_port, "--dicom-port", help="DICOM Storage SCP port (0: none)."),
    http_port: int = typer.Option(_SERVE.http_port, "--http-port", help="HTTP API port (0: none)."),
    ae_title: str = typer.Option(_SERVE.ae_title, "--ae-title", help="This SCP's AE title."),
    allow_ae: Optional[str] = typer.Option(None, "--allow-ae", help="Calling AE titles accepted, comma-separated (default: any)."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="A file holding the bearer token that POST /v1/predict and /metrics require ($VGG_EDGE_TOKEN also works)."),
    max_upload_mb: float = typer.Option(_SERVE.max_upload_bytes / 2**20, "--max-upload-mb", help="HTTP uploads larger than this get 413."),
    max_batch: int = typer.Option(_SERVE.max_batch, "--max-batch", help="Images per model call, at most."),
    max_wait_ms: float = typer.Option(_SERVE.max_wait_ms, "--max-wait-ms", help="How long the first image of a batch waits for others."),
    queue_size: int = typer.Option(_SERVE.queue_size, "--queue-size", help="Images waiting, at most; beyond it HTTP answers 503 and DICOM 0xA700."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own choice)."),
    device: str = typer.Option(_SERVE.device, "--device", help="CPU, or CUDA / TensorRT (ONNX), GPU (OpenVINO)."),
) -> None:
    """Serve an exported model to modalities (DICOM C-STORE) and applications (HTTP) until SIGTERM or Ctrl-C."""
    import os

    from .serve.config import ServeConfig
    from .serve.service import serve as run_service

    token = token_file.read_text().strip() if token_file else os.environ.get("VGG_EDGE_TOKEN") or None
    config = ServeConfig(
        artifact=artifact, out=out, host=host, dicom_port=dicom_port, http_port=http_port, ae_title=ae_title,
        allow_ae=tuple(a.strip() for a in allow_ae.split(",") if a.strip()) if allow_ae else (), token=token,
        max_upload_bytes=int(max_upload_mb * 2**20), max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
        threads=threads, device=device,
    )

    def ready(summary: dict) -> None:
        doors = ", ".join(d for d in (f"DICOM {summary['dicom']}" if summary["dicom"] else "", f"HTTP {summary['http']}" if summary["http"] else "") if d)
        console.print(f"[green]serving[/] {escape(str(artifact))} ({summary['artifact']['format']} {summary['artifact']['precision']}, "
                      f"{summary['artifact']['parity']}) on {doors}; results -> {escape(summary['results'])}"
                      + (f"; {summary['recovered']} images recovered from the spool" if summary["recovered"] else ""), soft_wrap=True)

    run_service(config, on_ready=ready)
    console.print("stopped: every accepted image has its result")


def _prune_defaults():
    """PruneConfig's own defaults (the source run gets a placeholder), so the CLI never states them a second time."""
    from .prune import PruneConfig

    return PruneConfig(run=Path())


_PRUNE = _prune_defaults()


@app.command(short_help="Prune VGG16 filters to a MAC budget, fine-tune, write a run.")
def prune(
    run: Path = typer.Argument(..., help="Run directory written by `vgg-edge train`."),
    keep: float = typer.Option(_PRUNE.keep, "--keep", help="Fraction of the run's convolutional multiply-accumulates to keep (0.5: about half); every convolution keeps the same fraction of its filters, to the budget."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default: beside RUN, RUN-keep<KEEP>)."),
    criterion: str = typer.Option(_PRUNE.criterion, "--criterion", help="Which filters go: activation (mean activation on train images x the weights that read it; the default) or l1 (kernel norm)."),
    samples: int = typer.Option(_PRUNE.samples, "--samples", help="activation: train images the filters are ranked on."),
    round_to: int = typer.Option(_PRUNE.round_to, "--round-to", help="Every convolution keeps a multiple of this many filters (SIMD-friendly widths)."),
    epochs: int = typer.Option(_PRUNE.epochs, "--epochs", help="Fine-tuning epochs at most (early stopping on val loss; 0: none)."),
    augment: bool = typer.Option(_PRUNE.augment, "--augment/--no-augment", help="Fine-tune on freshly augmented images, with the augmentations the run was trained with."),
    distill: float = typer.Option(_PRUNE.distill, "--distill", help="Weight of the source model's own probabilities in the fine-tuning targets (0, the default: the labels alone)."),
    learning_rate: float = typer.Option(_PRUNE.learning_rate, "--lr", help="Adam learning rate of the fine-tuning."),
    patience: int = typer.Option(_PRUNE.patience, "--patience", help="Early-stopping patience in epochs."),
    batch_size: int = typer.Option(_PRUNE.batch_size, "--batch-size"),
    seed: int = typer.Option(_PRUNE.seed, "--seed"),
    max_drop: float = typer.Option(_PRUNE.max_drop, "--max-drop", help="Margin in accuracy/sensitivity points the pruned model is judged against the source with (the parity gate's statistics, on the test split; recorded, not enforced)."),
) -> None:
    """Prune a trained run's VGG16 filters to a MAC budget, fine-tune and recalibrate on its splits, and write a new run."""
    from .prune import PruneConfig, prune as run_prune

    config = PruneConfig(run=run, out=out, keep=keep, criterion=criterion, samples=samples, round_to=round_to, epochs=epochs, augment=augment, distill=distill,
                         learning_rate=learning_rate, patience=patience, batch_size=batch_size, seed=seed, max_drop=max_drop)
    result = run_prune(config)
    report = result.report
    kept = report["selection"]["kept"]
    tuned = f"fine-tuned, kept epoch {kept['best_epoch']} by val loss" if kept else "not fine-tuned"
    console.print(f"[green]pruned[/] {escape(str(run))} -> {escape(str(result.run))}  (criterion {config.criterion}; {tuned}; "
                  f"{report['timings']['total_s']:.0f} s)", soft_wrap=True)
    table = Table(title=f"keep {config.keep:g} of the convolutional MACs (test figures on the same split)")
    for column in ("", "before", "after", "change"):
        table.add_column(column, justify="left" if not column else "right")
    for what, (before, after) in report["before_after"].items():
        if what in ("conv MACs", "parameters"):
            table.add_row(what, f"{before / 1e6:.1f}M", f"{after / 1e6:.1f}M", f"x{after / before:.3f}")
        else:  # accuracies and sensitivities; the source's are what it recorded, absent for older runs
            cells = ["-" if v is None else f"{v:.4f}" for v in (before, after)]
            table.add_row(escape(what), *cells, "-" if before is None or after is None else f"{100 * (after - before):+.2f} pp")
    print_table(table)
    widths = " ".join(f"{f['before']}->{f['after']}" for f in report["prune"]["filters"].values())
    console.print(f"filters per convolution (block1_conv1 ... block5_conv3): {widths}", soft_wrap=True)
    print_table(metrics_table(result.metrics, "pruned, test split"))
    if "operating_point" in result.metrics:
        print_table(metrics_table(result.metrics["operating_point"]["metrics"], "pruned, test split at the operating point"))
    judged = report["against_source"]
    accuracy = next(m for m in judged["paired"] if m["metric"] == "accuracy")
    console.print(f"against the source, by the parity gate's statistics (margin {config.max_drop:g} pp, test split; recorded in report.json, not enforced): [{STATUS_STYLE[judged['status']]}]{judged['status']}[/] "
                  + escape(f"(accuracy {accuracy['change_pp']:+.2f} pp, 95% CI [{accuracy['ci_pp'][0]:+.2f}, {accuracy['ci_pp'][1]:+.2f}])"), soft_wrap=True)
    for line in judged["failures"] + judged["unproven"]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    console.print(f"next: vgg-edge export {result.run} --format all --int8", soft_wrap=True)


@app.command(short_help="Time every export in every runtime.")
def bench(
    paths: list[Path] = typer.Argument(..., help="exported/<run> (every artifact in it), artifact folders, and/or run directories (their Keras model is the baseline)."),
    batch_sizes: str = typer.Option(_join_ints(_BENCH.batch_sizes), "--batch-sizes", help="Batch sizes of the throughput sweep, comma-separated."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts, comma-separated; the first gets the batch sweep, the rest batch 1 (default: all cores, then 1)."),
    min_runs: int = typer.Option(_BENCH.min_runs, "--min-runs", help="Timed calls per batch size, at least."),
    min_seconds: float = typer.Option(_BENCH.min_seconds, "--min-seconds", help="Timed seconds per batch size, at least."),
    warmup_runs: int = typer.Option(_BENCH.warmup_runs, "--warmup-runs"),
    warmup_seconds: float = typer.Option(_BENCH.warmup_seconds, "--warmup-seconds"),
    images: int = typer.Option(_BENCH.images, "--images", help="Test-split images used as inputs."),
    throughput: bool = typer.Option(_BENCH.throughput, "--throughput/--no-throughput", help="After the batch sweep, measure throughput mode: batch 1 on several streams at once, as OpenVINO's benchmark_app -hint throughput (--warmup-seconds + --min-seconds more per target)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Time each source run's Keras model (tf.function) as the baseline of the ratios."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for bench.json/csv/md and the plots (default: exported/<run>/bench)."),
    compare_with: Optional[Path] = typer.Option(None, "--compare", help="An earlier bench.json: print new/old ratios of median latency and throughput."),
    fail_if_slower: Optional[float] = typer.Option(None, "--fail-if-slower", help="With --compare: exit 1 if a median latency grew by more than this ratio (1.10: 10%)."),
    wide: bool = typer.Option(False, "--wide", help="Print every column (p90/p99, size, cold start, RSS, each batch size and thread count, throughput mode, as in bench.md; about 150-200 characters wide) instead of the 80-column summary."),
) -> None:
    """Latency percentiles and throughput of every export in every runtime, beside its accuracy; each runtime in its own process."""
    from .bench import BenchConfig, compare, discover, load_bench, output_files, regressions, run_bench, summary_table, unmeasured

    if fail_if_slower is not None and compare_with is None:
        raise VggEdgeError("--fail-if-slower needs --compare OLD.json (the bench.json to compare against)")
    if fail_if_slower is not None:
        check_range("--fail-if-slower", fail_if_slower, 1.0)
    old = load_bench(compare_with) if compare_with else None
    config = BenchConfig(
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"), threads=parse_ints(threads, "--threads") if threads else (),
        min_runs=min_runs, min_seconds=min_seconds, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds, images=images, throughput=throughput,
    )
    targets = discover(paths, baseline=baseline)
    out = out or Path("exported") / Path(targets[0].run).resolve().name / "bench"
    doc = run_bench(targets, config, out, command_line(paths, config, out, baseline),
                    on_target=lambda t, i, n: console.print(f"[bold]bench[/] {i}/{n} {escape(t.key)}", soft_wrap=True))
    print_table(summary_table(doc, wide=wide))
    for line in unmeasured(doc):
        console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    console.print(f"[green]wrote[/] {escape(str(out))}/: {', '.join(output_files(doc))}", soft_wrap=True)
    if old is None:
        return
    comparisons = compare(doc, old)
    table = Table(title=f"against {escape(str(compare_with))} (new/old; latency above 1 is slower)")
    for column in ("target", "threads", "batch", "old p50 ms", "new p50 ms", "latency new/old", "throughput new/old"):
        key = column == "target"
        table.add_column(column, justify="left" if key else "right", no_wrap=key, min_width=max([len(c.key) for c in comparisons], default=6) if key else None)
    for c in comparisons:
        table.add_row(escape(c.key), str(c.threads), str(c.batch), f"{c.old_p50_ms:.2f}", f"{c.new_p50_ms:.2f}", f"{c.latency_ratio:.3f}", f"{c.throughput_ratio:.3f}")
    print_table(table)
    if not comparisons:
        raise VggEdgeError(f"{compare_with}: no target, thread count and batch size in common with this bench; compare like with like")
    slower = regressions(comparisons, fail_if_slower) if fail_if_slower else []
    for c in slower:
        console.print(f"[red]slower:[/] {escape(c.key)} threads {c.threads} batch {c.batch}: median {c.old_p50_ms:.2f} -> {c.new_p50_ms:.2f} ms (x{c.latency_ratio:.3f} > {fail_if_slower})", soft_wrap=True)
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
    from .interrupt import install

    install()
    try:
        app()
    except VggEdgeError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an edge install (`vgg-edge[edge]`) has no TensorFlow, converters or plots
        console.print(f"[red]error:[/] this command needs {exc.name}, which this install lacks; pip install 'vgg-edge\\[full]'", soft_wrap=True)
        sys.exit(2)
