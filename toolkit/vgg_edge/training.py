"""Two-phase VGG16 transfer learning on cached features, with augmentation, calibration and an operating point.

Phase 1 trains the new head on the frozen ImageNet base (Adam 1e-3). Phase 2 unfreezes the last
`fine_tune_blocks` convolutional blocks (two by default) and fine-tunes them with the head at a low
learning rate (Adam 1e-4). Each phase stops early on the validation loss, lowers the learning rate
on plateaus, and ends on its best epoch; phase 2 is kept only if it beats phase 1 on validation.

Speed: the frozen part of the network (up to the cut: block3_pool when two blocks are fine-tuned)
never changes, so its output is computed once and both phases train on cached features instead of
running VGG16 forward every epoch. Augmentation keeps that speed (`augment="cached"`, the default):
the frozen part runs once over `views` versions of every training image (the original and
`views - 1` randomly flipped, rotated, zoomed, brightened and contrasted copies), and each epoch
trains on one randomly chosen version per image. An epoch costs what an unaugmented one does;
only the one-off extraction grows with `views`. `augment="online"` draws fresh augmentations
every epoch and runs the whole network (the reference it is measured against); `"off"` trains on
the originals alone. Cached features are stored as float16 (half the memory; the bfloat16
arithmetic of mixed precision is coarser still).

After training, on the validation split only: a temperature is fitted and folded into the last
layer (calibrated probabilities, unchanged argmax; see temperature.py), and with
`target_sensitivity` an operating point is chosen (decision.py). Then the test split is read once,
after every choice is made, and reported under argmax and under the operating point.

Mixed precision (`mixed_precision="auto"`, the default, picks bfloat16 where the CPU has bfloat16
units: AMX or AVX512-BF16; measured 2.0-2.1x faster fine-tuning) trains with bfloat16 arithmetic and
float32 weights. The saved model is always a float32 copy of the trained weights, so export and
parity see plain float32.

Decoded images are held in memory as uint8. They are decoded by `images.read_image`, the same
function the edge runtime uses, so validated and deployed pixels are identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape

from . import plots, temperature
from .data import SEED, SPLITS, TEST_FRACTION, VAL_FRACTION, builtin_digits, drop_unreadable, label_counts, load_split, plan_split
from .decision import DecisionRule, choose_threshold
from .errors import VggEdgeError, check_range
from .metrics import classification_metrics
from .model import BLOCKS, POOLINGS, AugmentConfig, HeadConfig, augmenter, augmenting, batched_predict, build_model, cut_layer_name, set_trainable, split_at
from .run import RunContents, RunDir
from .ui import console, progress
from .weights import resolve_weights

MIXED_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16"}
AUGMENT_MODES = ("cached", "online", "off")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass
class TrainConfig:
    out: Path = Path("runs/default")
    data: Path | None = None  # None: the built-in scikit-learn digits
    image_size: int = 224
    epochs: int = 10  # phase 1 (head on the frozen base)
    fine_tune_epochs: int = 12  # phase 2
    fine_tune_blocks: int = 2  # 0 skips phase 2
    weights: str = "imagenet"  # "imagenet", a path, or "none"
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    head: HeadConfig = field(default_factory=HeadConfig)
    augment: str = "cached"  # one of AUGMENT_MODES
    views: int = 4  # cached augmentation: versions of each training image (the original + views-1 augmented)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = VAL_FRACTION  # carved from train when there is no val/ folder
    test_fraction: float = TEST_FRACTION  # carved when there is no test/ folder
    seed: int = SEED
    patience: int = 3
    class_weights: bool = False  # off: calibrated probabilities keep the real class frequencies; --target-sensitivity sets what a class needs
    mixed_precision: str = "auto"  # "auto", "off" or "bfloat16"
    calibrate: bool = True  # fit a temperature on val and fold it into the model
    target_sensitivity: tuple[str, float] | None = None  # (class, fraction): the operating point, chosen on val

    def check(self) -> None:
        """Refuse settings that cannot work, before any image is decoded; the one place train's options are
        validated (the CLI passes them through), each message naming the option."""
        for option, value, low, high in (
            ("--image-size", self.image_size, 32, None), ("--epochs", self.epochs, 0, None), ("--fine-tune-epochs", self.fine_tune_epochs, 0, None),
            ("--fine-tune-blocks", self.fine_tune_blocks, 0, BLOCKS), ("--batch-size", self.batch_size, 1, None),
            ("--lr", self.learning_rate, 1e-8, 1.0), ("--fine-tune-lr", self.fine_tune_learning_rate, 1e-8, 1.0),
            ("--dense", self.head.dense_units, 1, None), ("--dropout", self.head.dropout, 0.0, 0.95), ("--views", self.views, 1, None),
            ("--val-fraction", self.val_fraction, 0.0, 0.5), ("--test-fraction", self.test_fraction, 0.01, 0.5), ("--patience", self.patience, 1, None),
        ):
            check_range(option, value, low, high)
        choices = (("--mixed-precision", self.mixed_precision, ("auto", *MIXED_POLICIES)), ("--augment", self.augment, AUGMENT_MODES),
                   ("--pooling", self.head.pooling, POOLINGS))
        for option, value, allowed in choices:
            if value not in allowed:
                raise VggEdgeError(f"{option} {value}: use one of {', '.join(allowed)}")


@dataclass
class TrainResult:
    run: Path
    metrics: dict
    report: dict


def train(config: TrainConfig) -> TrainResult:
    """Train, calibrate and choose on val, evaluate once on the test split, write the run directory atomically."""
    started = time.perf_counter()
    config.check()
    data_root = Path(config.data) if config.data else builtin_digits()
    manifest = plan_split(data_root, config.val_fraction, config.test_fraction, config.seed)
    if not manifest.files("val"):
        raise VggEdgeError(f"{manifest.data_root}: no validation images; training selects its epoch, temperature and operating point on them (use --val-fraction > 0 or a val/ folder)")
    if config.target_sensitivity and config.target_sensitivity[0] not in manifest.labels:
        raise VggEdgeError(f"--target-sensitivity {config.target_sensitivity[0]}: no such class; use one of {', '.join(manifest.labels)}")
    weights = resolve_weights(config.weights)
    # Bad data or weights are reported above in a moment; TensorFlow takes seconds to import.
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if not config.data:
        console.print(f"data: the built-in scikit-learn 8x8 handwritten digits (not MNIST), in {data_root}", soft_wrap=True)
    precision, why = resolve_mixed_precision(config.mixed_precision)
    console.print(f"mixed precision: {precision} ({why})", soft_wrap=True)

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
    for reason in list(failures.values())[:5]:
        console.print(f"[yellow]skipped[/] {escape(reason)}", soft_wrap=True)
    if manifest.dropped_duplicates:
        console.print(f"[yellow]dropped {len(manifest.dropped_duplicates)} duplicate images[/] (identical bytes in another split or class)")

    labels = manifest.labels
    with dtype_policy(MIXED_POLICIES[precision]):
        model, fit, timings = _fit(config, weights, len(labels), pixels, targets)
    if precision != "off":
        model = _float32_copy(model, config, len(labels))

    t = time.perf_counter()
    calibration, val_probs = _calibrate(model, config, pixels["val"], targets["val"])
    rule = _operating_point(config, labels, val_probs, targets["val"])
    test_probs, test_uncalibrated = _read_test(model, pixels["test"], config.batch_size, calibration["temperature"])
    timings["calibration_and_test_s"] = time.perf_counter() - t
    metrics = classification_metrics(targets["test"], test_probs, labels)
    if rule.positive:
        metrics["operating_point"] = {**rule.record(), "metrics": classification_metrics(targets["test"], test_probs, labels, rule.decide(test_probs))}
    test_before = temperature.reliability(test_uncalibrated, targets["test"])
    test_after = temperature.reliability(test_probs, targets["test"])
    calibration["test"] = {"ece_before": test_before["ece"], "ece_after": test_after["ece"]}
    timings["total_s"] = time.perf_counter() - started
    report = {
        "data_root": manifest.data_root,
        "counts": manifest.counts(),
        "dropped_duplicates": len(manifest.dropped_duplicates),
        "unreadable": len(manifest.unreadable),
        "ignored_non_image_files": manifest.ignored_files,
        "augmentation": {"mode": config.augment, "views": config.views if config.augment == "cached" else None},
        "mixed_precision": {"requested": config.mixed_precision, "used": precision, "why": why},
        "kept_phase": fit.kept_phase,
        "selection": fit.selection(),
        "calibration": calibration,
        "operating_point": rule.record(),
        "test_split": "read once, after the epoch, temperature and operating point were chosen on val",
        "timings": timings,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    }
    config_doc = dataclasses.asdict(config) | {"data": manifest.data_root, "weights_file": str(weights) if weights else None}
    decision = {"rule": rule.record(), "temperature": calibration["temperature"]}
    contents = RunContents(model, labels, config_doc, manifest, decision, metrics, fit.history, report)
    RunDir.write(config.out, contents, _figures(fit.history, metrics, labels, (test_before, test_after)))
    return TrainResult(Path(config.out), metrics, report)


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """`auto` becomes bfloat16 where the CPU computes it natively (AMX or AVX512-BF16), else off; with the reason."""
    if requested != "auto":
        return requested, "as requested"
    from .machine import cpu_flags

    flags = cpu_flags()
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if found:
        return "bfloat16", f"auto: the CPU has {', '.join(found)}"
    return "off", "auto: no bfloat16 units found on this CPU (AMX or AVX512-BF16), where bfloat16 would be emulated and gain nothing"


def _fit(config: TrainConfig, weights: Path | None, num_classes: int, pixels: dict, targets: dict):
    """Both phases; returns the model at its best phase, the fitter (history, selection) and timings."""
    model = build_model(num_classes, config.image_size, weights, config.head)
    counts = label_counts(targets["train"], num_classes)
    class_weight = {i: sum(counts) / (num_classes * c) for i, c in enumerate(counts)} if config.class_weights else None
    fit = _Fitter(config, model, class_weight)
    timings: dict[str, float] = {}
    blocks = config.fine_tune_blocks

    if config.augment == "online":
        trainer = augmenting(model, config.augmentation, config.seed)
        data = {s: pixels[s][None] for s in ("train", "val")}
        set_trainable(model, first_block=6)
        fit.phase("head", trainer, data, targets, config.learning_rate, config.epochs)
        if blocks and config.fine_tune_epochs:
            set_trainable(model, first_block=6 - blocks)
            fit.phase("fine-tune", trainer, data, targets, config.fine_tune_learning_rate, config.fine_tune_epochs)
    else:
        prefix, suffix = split_at(model, cut_layer_name(blocks))
        t = time.perf_counter()
        views = config.views if config.augment == "cached" else 1
        features = {"train": _feature_views(prefix, pixels["train"], views, config), "val": _feature_views(prefix, pixels["val"], 1, config)}
        timings["feature_extraction_s"] = time.perf_counter() - t
        set_trainable(model, first_block=6)
        if blocks:
            frozen_blocks, head = split_at(suffix, "block5_pool")
            head_features = {s: np.stack([batched_predict(frozen_blocks, v, config.batch_size, f"frozen blocks {s}") for v in f]) for s, f in features.items()}
        else:
            head, head_features = suffix, features
        fit.phase("head", head, head_features, targets, config.learning_rate, config.epochs)
        if blocks and config.fine_tune_epochs:
            set_trainable(model, first_block=6 - blocks)
            fit.phase("fine-tune", suffix, features, targets, config.fine_tune_learning_rate, config.fine_tune_epochs)
    fit.keep_best()
    return model, fit, timings | fit.timings


def _feature_views(prefix, pixels: np.ndarray, views: int, config: TrainConfig) -> np.ndarray:
    """(views, n, ...) outputs (float16) of the frozen `prefix`: view 0 the images as they are, the others augmented."""
    out = None
    for v in range(views):
        transform = augmenter(config.augmentation, config.seed + v) if v else None
        f = batched_predict(prefix, pixels, config.batch_size, f"frozen features, view {v + 1} of {views}", transform)
        if out is None:  # float16 unless the activations would overflow it
            out = np.empty((views, *f.shape), np.float16 if np.abs(f).max() < np.finfo(np.float16).max / 2 else np.float32)
        out[v] = f
    return out


def _calibrate(model, config: TrainConfig, pixels: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Fit the temperature on val and fold it into `model`; returns the record and the calibrated val probabilities."""
    features = batched_predict(temperature.logits_model(model), pixels, config.batch_size, "calibrate on val")
    z = temperature.logits(model, features)
    t = temperature.fit_temperature(z, y) if config.calibrate else 1.0
    before, after = temperature.softmax(z), temperature.softmax(z, t)
    if config.calibrate:
        temperature.fold(model, t)
    record = {
        "temperature": t, "fitted_on": "val" if config.calibrate else None, "folded_into": temperature.OUTPUT_LAYER if config.calibrate else None,
        "val": {"nll_before": temperature.nll(before, y), "nll_after": temperature.nll(after, y),
                "ece_before": temperature.reliability(before, y)["ece"], "ece_after": temperature.reliability(after, y)["ece"]},
    }
    if config.calibrate:
        console.print(f"temperature {t:.3f} (fitted on val): val ECE {record['val']['ece_before']:.4f} -> {record['val']['ece_after']:.4f}")
    return record, after


def _operating_point(config: TrainConfig, labels: list[str], val_probs: np.ndarray, y: np.ndarray) -> DecisionRule:
    """The decision rule: argmax, or the threshold on one class that meets its target sensitivity on val."""
    if not config.target_sensitivity:
        return DecisionRule(tuple(labels))
    label, target = config.target_sensitivity
    k = labels.index(label)
    threshold = choose_threshold(val_probs[y == k, k], target, val_probs[:, k])
    rule = DecisionRule(tuple(labels), label, threshold, target)
    console.print(f"operating point: {rule.describe()}", soft_wrap=True)
    return rule


def _read_test(model, pixels: np.ndarray, batch_size: int, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The test split, once: the (calibrated) model's probabilities, and the uncalibrated ones for the ECE comparison."""
    import keras

    both = keras.Model(model.inputs, [model.get_layer(temperature.OUTPUT_LAYER).input, model.output])
    features, probs = [], []
    with progress("evaluate test", len(pixels)) as advance:
        for start in range(0, len(pixels), batch_size):
            f, p = both.predict_on_batch(pixels[start:start + batch_size].astype(np.float32))
            features.append(np.asarray(f))
            probs.append(np.asarray(p, np.float32))
            advance(len(f))
    uncalibrated = temperature.softmax(temperature.logits(model, np.concatenate(features)) * t)
    return np.concatenate(probs), uncalibrated


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
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


def evaluate_run(run_dir: Path, batch_size: int = 32) -> dict:
    """Recompute the test-split metrics of a run from its saved model and recorded split (and its operating point's)."""
    run = RunDir.open(run_dir)
    with progress("decode test", len(run.split.files("test"))) as advance:
        pixels, y = run.load_images("test", on_progress=advance)
    probs = batched_predict(run.load_model(), pixels, batch_size, "evaluate test")
    metrics = classification_metrics(y, probs, run.labels)
    rule = run.decision
    if rule.positive:
        metrics["operating_point"] = {**rule.record(), "metrics": classification_metrics(y, probs, run.labels, rule.decide(probs))}
    return metrics


class _Fitter:
    """Runs training phases with early stopping and LR reduction, and keeps their history.

    Every phase model shares its layers with `full_model`, so a snapshot of the full model's
    weights after a phase is that phase's best checkpoint.
    """

    MONITOR = "val_loss"  # a proper score: rewards calibrated confidence, not just the argmax; less noisy than accuracy on small val splits

    def __init__(self, config: TrainConfig, full_model, class_weight: dict | None):
        self.config = config
        self.full_model = full_model
        self.class_weight = class_weight
        self.history: list[dict] = []
        self.timings: dict[str, float] = {}
        self.kept_phase = "none"
        self._best: list[tuple[float, list]] = []  # per phase: best val_loss, full-model weights

    def phase(self, name: str, model, x: dict, y: dict, learning_rate: float, epochs: int) -> None:
        """Train `model` on x["train"] (views, n, ...) with x["val"] (1, n, ...) as the validation split."""
        import keras

        if epochs <= 0:
            return
        cfg = self.config
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks = [
            keras.callbacks.EarlyStopping(self.MONITOR, patience=cfg.patience, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(self.MONITOR, factor=0.2, patience=max(1, cfg.patience - 1), min_lr=1e-7),
            _epoch_progress(name, epochs),
        ]
        started = time.perf_counter()
        hist = model.fit(
            _batches(x["train"], y["train"], cfg.batch_size, seed=cfg.seed + len(self.history)),
            validation_data=_batches(x["val"], y["val"], cfg.batch_size),
            epochs=epochs, class_weight=self.class_weight, callbacks=callbacks, verbose=0, shuffle=False,  # the batches shuffle themselves
        )
        elapsed = time.perf_counter() - started
        history = {k: [float(v) for v in values] for k, values in hist.history.items()}
        n_epochs = len(history["loss"])
        self.timings[f"{name}_s"] = elapsed
        self.timings[f"{name}_per_epoch_s"] = elapsed / n_epochs
        self.history.append({"phase": name, "learning_rate": learning_rate, "epochs": n_epochs, "history": history})
        self._best.append((min(history[self.MONITOR]), self.full_model.get_weights()))

    def keep_best(self) -> None:
        """The phase whose best epoch had the lowest validation loss; its weights end in the model."""
        if not self._best:
            return
        best = min(range(len(self._best)), key=lambda i: self._best[i][0])
        self.full_model.set_weights(self._best[best][1])
        self.kept_phase = self.history[best]["phase"]

    def selection(self) -> dict:
        """Which phase and epoch the model is, and why: each phase's best epoch by the validation monitor."""
        phases = []
        for phase in self.history:
            h = phase["history"]
            best = int(np.argmin(h[self.MONITOR]))
            phases.append({"phase": phase["phase"], "epochs_run": phase["epochs"], "best_epoch": best + 1,
                           "val_loss": h["val_loss"][best], "val_accuracy": h.get("val_accuracy", [None] * (best + 1))[best]})
        kept = next((p for p in phases if p["phase"] == self.kept_phase), None)
        return {"monitor": self.MONITOR, "rule": "each phase ends on its best epoch; the phase with the lower best val_loss is kept",
                "phases": phases, "kept": kept}


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


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None):
    """Batches from `x` of shape (views, n, ...): each epoch one random view of every image, in a random order.

    Without a seed (validation): view 0 (the original images), in order. Inputs are cast to float32 per batch.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(x.shape[1] / batch_size)

        def __getitem__(self, i: int):
            rows = self.order[i * batch_size:(i + 1) * batch_size]
            return x[self.view[rows], rows].astype(np.float32), y[rows]

        def on_epoch_end(self) -> None:
            n = x.shape[1]
            if seed is None:
                self.order, self.view = np.arange(n), np.zeros(n, np.int64)
            else:
                self.order, self.view = self.rng.permutation(n), self.rng.integers(0, x.shape[0], n)

    return Batches()


def _figures(history: list[dict], metrics: dict, labels: list[str], reliability: tuple):
    """The run's plots: training curves across both phases, the confusion matrix, the reliability diagram."""

    def draw(folder: Path) -> None:
        merged: dict[str, list[float]] = {}
        starts = []
        for phase in history:
            starts.append(len(merged.get("loss", [])))
            for key, values in phase["history"].items():
                merged.setdefault(key, []).extend(values)
        plots.training_curves(merged, starts, folder / "curves.png")
        plots.confusion_matrix(metrics["confusion_matrix"], labels, folder / "confusion_matrix.png")
        plots.reliability_diagram(*reliability, folder / "reliability.png")

    return draw
