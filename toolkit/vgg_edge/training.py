"""Two-phase VGG16 transfer learning, with cached features when the base is frozen.

Phase 1 trains the new head on the frozen ImageNet base (Adam 1e-3). Phase 2 unfreezes the last
`fine_tune_blocks` convolutional blocks and fine-tunes them with the head at a low learning rate
(Adam 1e-4, as in the seed notebooks). Each phase stops early on the validation monitor, lowers
the learning rate on plateaus, and ends on its best epoch; phase 2 is kept only if it beats
phase 1 on validation.

Speed: without augmentation the frozen part of the network sees the same pixels every epoch, so
its output is computed once and both phases train on those cached features instead of running
VGG16 forward every epoch. The cut is at the last frozen layer of phase 2 (block4_pool when one
block is fine-tuned), so fine-tuning is cached too; phase 1 additionally runs the blocks it keeps
frozen once. With augmentation the pixels change every epoch and the full network runs.

Mixed precision (`mixed_precision="bfloat16"`) trains with bfloat16 arithmetic and float32
weights: on a CPU with AMX, 2.1x faster fine-tuning and 4.4x faster feature extraction
(benchmarks/results/mixed_precision_speedup.md). The saved
model is always a float32 copy of the trained weights, so export and parity see plain float32.

Decoded images are held in memory as uint8 (the cache of the input pipeline) and fed to Keras
through tf.data with shuffling, batching and prefetching. They are decoded by `images.read_image`,
the same function the edge runtime uses, so validated and deployed pixels are identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape

from . import plots
from .data import SPLITS, SplitManifest, builtin_digits, drop_unreadable, label_counts, load_split, plan_split
from .errors import VggEdgeError
from .fileio import atomic_dir, atomic_path, write_json
from .metrics import classification_metrics
from .model import AugmentConfig, HeadConfig, augmenting, build_model, conv_block_layers, cut_layer_name, split_at
from .run import RunDir
from .ui import console, progress
from .weights import resolve_weights

MIXED_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16"}


@dataclass
class TrainConfig:
    out: Path = Path("runs/default")
    data: Path | None = None  # None: the built-in scikit-learn digits
    image_size: int = 224
    epochs: int = 10  # phase 1 (head on the frozen base)
    fine_tune_epochs: int = 10  # phase 2
    fine_tune_blocks: int = 1  # 0 skips phase 2
    weights: str = "imagenet"  # "imagenet", a path, or "none"
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    head: HeadConfig = field(default_factory=HeadConfig)
    augment: bool = False
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.15  # carved from train when there is no val/ folder
    test_fraction: float = 0.15  # carved when there is no test/ folder
    seed: int = 42
    patience: int = 3
    class_weights: bool = True
    cache_features: bool = True  # ignored (off) when augmenting
    mixed_precision: str = "off"  # "off" or "bfloat16"

    @property
    def feature_cache(self) -> bool:
        """Whether the frozen part runs once: only without augmentation, whose pixels change every epoch."""
        return self.cache_features and not self.augment


@dataclass
class TrainResult:
    run: Path
    metrics: dict
    report: dict


def train(config: TrainConfig) -> TrainResult:
    """Train, evaluate on the recorded test split, and write a complete run directory atomically."""
    started = time.perf_counter()
    if config.mixed_precision not in MIXED_POLICIES:
        raise VggEdgeError(f"mixed precision {config.mixed_precision!r}: use one of {', '.join(MIXED_POLICIES)}")
    data_root = Path(config.data) if config.data else builtin_digits()
    manifest = plan_split(data_root, config.val_fraction, config.test_fraction, config.seed)
    weights = resolve_weights(config.weights)
    # Bad data or weights are reported above in a moment; TensorFlow takes seconds to import.
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)

    pixels, targets, failures = {}, {}, {}
    for split in SPLITS:
        entries = manifest.files(split)
        if not entries:
            continue
        with progress(f"decode {split}", len(entries)) as advance:
            loaded, y = load_split(manifest, split, config.image_size, on_progress=advance, verify=False)
        pixels[split], targets[split] = loaded.pixels, y
        failures.update(loaded.failures)
    drop_unreadable(manifest, failures)
    for why in list(failures.values())[:5]:
        console.print(f"[yellow]skipped[/] {escape(why)}", soft_wrap=True)
    if manifest.dropped_duplicates:
        console.print(f"[yellow]dropped {len(manifest.dropped_duplicates)} duplicate images[/] (identical bytes in another split or class)")

    labels = manifest.labels
    with _dtype_policy(MIXED_POLICIES[config.mixed_precision]):
        model, kept_phase, timings, history = _fit(config, weights, len(labels), pixels, targets)
    if config.mixed_precision != "off":
        model = _float32_copy(model, config, len(labels))

    probs = batched_predict(model, pixels["test"], config.batch_size, "evaluate test")
    metrics = classification_metrics(targets["test"], probs, labels)
    timings["total_s"] = time.perf_counter() - started
    report = {
        "data_root": manifest.data_root,
        "counts": manifest.counts(),
        "dropped_duplicates": len(manifest.dropped_duplicates),
        "unreadable": len(manifest.unreadable),
        "ignored_non_image_files": manifest.ignored_files,
        "feature_cache": config.feature_cache,
        "kept_phase": kept_phase,
        "timings": timings,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    }
    config_doc = dataclasses.asdict(config) | {"data": manifest.data_root, "weights_file": str(weights) if weights else None}
    _write_run(Path(config.out), model, labels, config_doc, manifest, history, metrics, report)
    return TrainResult(Path(config.out), metrics, report)


def _fit(config: TrainConfig, weights: Path | None, num_classes: int, pixels: dict, targets: dict):
    """Both phases; returns the model at its best phase, that phase's name, timings and history."""
    model = build_model(num_classes, config.image_size, weights, config.head)
    counts = label_counts(targets["train"], num_classes)
    class_weight = {i: sum(counts) / (num_classes * c) for i, c in enumerate(counts)} if config.class_weights else None
    fit = _Fitter(config, model, class_weight)
    timings: dict[str, float] = {}

    if config.feature_cache:
        prefix, suffix = split_at(model, cut_layer_name(config.fine_tune_blocks))
        t = time.perf_counter()
        features = {s: batched_predict(prefix, pixels[s], config.batch_size, f"features {s}") for s in ("train", "val")}
        timings["feature_extraction_s"] = time.perf_counter() - t
        _set_trainable(model, first_block=6)
        if config.fine_tune_blocks:
            frozen_blocks, head = split_at(suffix, "block5_pool")
            head_features = {s: batched_predict(frozen_blocks, f, config.batch_size, f"frozen blocks {s}") for s, f in features.items()}
        else:
            head, head_features = suffix, features
        fit.phase("head", head, head_features, targets, config.learning_rate, config.epochs)
        if config.fine_tune_blocks and config.fine_tune_epochs:
            _set_trainable(model, first_block=6 - config.fine_tune_blocks)
            fit.phase("fine-tune", suffix, features, targets, config.fine_tune_learning_rate, config.fine_tune_epochs)
    else:
        trainer = augmenting(model, config.augmentation, config.seed) if config.augment else model
        _set_trainable(model, first_block=6)
        fit.phase("head", trainer, pixels, targets, config.learning_rate, config.epochs)
        if config.fine_tune_blocks and config.fine_tune_epochs:
            _set_trainable(model, first_block=6 - config.fine_tune_blocks)
            fit.phase("fine-tune", trainer, pixels, targets, config.fine_tune_learning_rate, config.fine_tune_epochs)
    kept_phase = fit.keep_best()
    return model, kept_phase, timings | fit.timings, fit.history


@contextlib.contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy for the models built inside, restored afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_copy(model, config: TrainConfig, num_classes: int):
    """The same network in float32 with the trained weights (mixed-precision variables are float32)."""
    inference = build_model(num_classes, config.image_size, None, config.head)
    inference.set_weights(model.get_weights())
    return inference


def batched_predict(model, x: np.ndarray, batch_size: int, description: str) -> np.ndarray:
    """Run `model` over `x` in batches with a progress bar (uint8 pixels are cast to float32)."""
    outputs = []
    with progress(description, len(x)) as advance:
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            out = model.predict_on_batch(batch.astype(np.float32) if batch.dtype == np.uint8 else batch)
            outputs.append(np.asarray(out).astype(np.float32, copy=False))  # bfloat16 features under mixed precision
            advance(len(batch))
    return np.concatenate(outputs) if outputs else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)


def evaluate_run(run_dir: Path, batch_size: int = 32) -> dict:
    """Recompute the test-split metrics of a run from its saved model and recorded split."""
    run = RunDir.open(run_dir)
    with progress("decode test", len(run.split.files("test"))) as advance:
        pixels, y = run.load_images("test", on_progress=advance)
    probs = batched_predict(run.load_model(), pixels, batch_size, "evaluate test")
    return classification_metrics(y, probs, run.labels)


def _set_trainable(model, first_block: int) -> None:
    """Blocks >= first_block train; earlier blocks (and the fixed preprocessing) stay frozen."""
    trainable = {id(layer) for layer in conv_block_layers(model, first_block)}
    for layer in conv_block_layers(model, 1):
        layer.trainable = id(layer) in trainable


class _Fitter:
    """Runs training phases with early stopping and LR reduction, and keeps their history.

    Every phase model shares its layers with `full_model`, so a snapshot of the full model's
    weights after a phase is that phase's best checkpoint.
    """

    def __init__(self, config: TrainConfig, full_model, class_weight: dict | None):
        self.config = config
        self.full_model = full_model
        self.class_weight = class_weight
        self.history: list[dict] = []
        self.timings: dict[str, float] = {}
        self._best: list[tuple[float, list]] = []  # per phase: best val_loss, full-model weights

    def phase(self, name: str, model, x: dict, y: dict, learning_rate: float, epochs: int) -> None:
        import keras

        if epochs <= 0:
            return
        cfg = self.config
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks = [
            keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.2, patience=max(1, cfg.patience - 1), min_lr=1e-7),
            _epoch_progress(name, epochs),
        ]
        started = time.perf_counter()
        hist = model.fit(
            _dataset(x["train"], y["train"], cfg.batch_size, shuffle_seed=cfg.seed),
            validation_data=_dataset(x["val"], y["val"], cfg.batch_size),
            epochs=epochs, class_weight=self.class_weight, callbacks=callbacks, verbose=0, shuffle=False,  # tf.data shuffles
        )
        elapsed = time.perf_counter() - started
        history = {k: [float(v) for v in values] for k, values in hist.history.items()}
        n_epochs = len(history["loss"])
        self.timings[f"{name}_s"] = elapsed
        self.timings[f"{name}_per_epoch_s"] = elapsed / n_epochs
        self.history.append({"phase": name, "learning_rate": learning_rate, "epochs": n_epochs, "history": history})
        self._best.append((min(history["val_loss"]), self.full_model.get_weights()))

    def keep_best(self) -> str:
        """The phase whose best epoch had the lowest validation loss; its weights end in the model."""
        if not self._best:
            return "none"
        best = min(range(len(self._best)), key=lambda i: self._best[i][0])
        self.full_model.set_weights(self._best[best][1])
        return self.history[best]["phase"]


def _epoch_progress(phase: str, epochs: int):
    """A Keras callback that prints one rich line per epoch."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            console.print(f"[bold]{phase}[/] epoch {epoch + 1}/{epochs}  {shown}  [dim]{time.perf_counter() - self.started:.1f}s[/]", soft_wrap=True)

    return EpochProgress()


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if x.dtype == np.uint8:
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _write_run(out: Path, model, labels, config_doc, manifest: SplitManifest, history, metrics, report) -> None:
    """Write every file of the run into a temporary folder, then swap it in whole."""
    with atomic_dir(out) as tmp:
        with atomic_path(tmp / "model.keras") as model_tmp:
            model.save(model_tmp)
        write_json(tmp / "labels.json", {"labels": labels})
        write_json(tmp / "config.json", config_doc)
        manifest.save(tmp / "split.json")
        write_json(tmp / "history.json", {"phases": history})
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "report.json", report)
        merged: dict[str, list[float]] = {}
        starts = []
        for phase in history:
            starts.append(len(merged.get("loss", [])))
            for key, values in phase["history"].items():
                merged.setdefault(key, []).extend(values)
        plots.training_curves(merged, starts, tmp / "curves.png")
        plots.confusion_matrix(metrics["confusion_matrix"], labels, tmp / "confusion_matrix.png")
