"""Two-phase VGG16 transfer learning on cached features, with augmentation, calibration and an operating point.

Phase 1 trains the new head on the frozen ImageNet base (Adam 1e-3). Phase 2 unfreezes the last
`fine_tune_blocks` convolutional blocks (two by default) and fine-tunes them with the head at a low
learning rate (Adam 1e-4). Each phase stops early on the validation loss, lowers the learning rate
on plateaus, and ends on its best epoch; phase 2 is kept only if it beats phase 1 on validation.

Speed: the frozen part of the network (up to the cut: block3_pool when two blocks are fine-tuned)
never changes, so its output is computed once and both phases train on cached features instead of
running VGG16 forward every epoch. Augmentation keeps that speed (`augment="cached"`, the default):
the frozen part runs once over `views` versions of every training image (the original and
`views - 1` randomly flipped, rotated, zoomed, brightened and contrasted copies; whether to flip is
decided on the data unless given, mirror.py), and each epoch trains on one randomly chosen version
per image. An epoch costs what an unaugmented one does; only the one-off extraction grows with
`views`. `augment="online"` draws fresh augmentations every epoch and runs the whole network (the
reference it is measured against); `"off"` trains on the originals alone. Cached features are
stored as float16 (half the memory; the bfloat16 arithmetic of mixed precision is coarser still).

After training, on the validation split only: a temperature is fitted and folded into the last
layer (calibrated probabilities, unchanged argmax; see temperature.py), and with
`target_sensitivity` an operating point is chosen (decision.py). Then the test split is read once,
after every choice is made, and reported under argmax and under the operating point.

Mixed precision (`mixed_precision="auto"`, the default, picks bfloat16 where the CPU has bfloat16
units: AMX or AVX512-BF16; measured 2.0-2.1x faster fine-tuning) trains with bfloat16 arithmetic and
float32 weights. The saved model is always a float32 copy of the trained weights, so export and
parity see plain float32.

Memory does not grow with the data: every split is decoded batch by batch (`features.SplitStream`,
with `images.read_image`, the decoder the edge runtime uses, so validated and deployed pixels are
identical), and the frozen features live in an on-disk cache keyed by everything they depend on
(`features.FeatureCache`, under `$VGG_EDGE_CACHE/features/`): a second run on the same data, size,
cut and augmentation reuses them instead of running VGG16 again. Files that do not decode are found
on the first pass, skipped and named in the run's split manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape

from . import distribute, plots, temperature
from .data import SEED, SPLITS, TEST_FRACTION, VAL_FRACTION, builtin_digits, drop_unreadable, label_counts, plan_split
from .decision import DecisionRule, choose_threshold
from .errors import VggEdgeError, check_range
from .distribute import Placement, place, weights_digest
from .features import FeatureCache, SplitStream, cache_key, extract, transform_store
from .loop import CALIBRATED_LOSS, Batches, run_epochs
from .resume import EpochCheckpoint, PhaseState, TrainingCheckpoint, resume_folder, seed_states, set_seed_states
from .fileio import sha256_file
from .interrupt import stop_on_ctrl_c
from .metrics import classification_metrics
from .mirror import mirror_test
from .model import BLOCKS, POOLINGS, AugmentConfig, HeadConfig, augmenter, augmenting, batched_predict, build_model, cut_layer_name, set_trainable, split_at
from .run import RunContents, RunDir
from .ui import console, progress
from .weights import resolve_weights

#: float16 is for GPUs (tensor cores; Keras wraps the optimizer in a LossScaleOptimizer for it), bfloat16 for CPUs with bfloat16 units.
MIXED_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
FLOAT16_GPU_CAPABILITY = (7, 0)  # NVIDIA Volta and later have float16 tensor cores
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
    label_smoothing: float = 0.1  # training targets only (recipes.md, session 9); validation losses are against the true labels
    head: HeadConfig = field(default_factory=HeadConfig)
    augment: str = "cached"  # one of AUGMENT_MODES
    views: int = 4  # cached augmentation: versions of each training image (the original + views-1 augmented)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = VAL_FRACTION  # carved from train when there is no val/ folder
    test_fraction: float = TEST_FRACTION  # carved when there is no test/ folder
    seed: int = SEED
    patience: int = 3
    class_weights: bool = False  # off: calibrated probabilities keep the real class frequencies; --target-sensitivity sets what a class needs
    mixed_precision: str = "auto"  # "auto", or a key of MIXED_POLICIES: "off", "bfloat16", "float16"
    calibrate: bool = True  # fit a temperature on val and fold it into the model
    target_sensitivity: tuple[str, float] | None = None  # (class, fraction): the operating point, chosen on val
    resume: bool = False  # go on from what an interrupted run with the same settings left (resume.py)
    strategy: str = "auto"  # one of distribute.STRATEGIES: one device, the local GPUs, or the TF_CONFIG cluster

    def check(self) -> None:
        """Refuse settings that cannot work, before any image is decoded; the one place train's options are
        validated (the CLI passes them through), each message naming the option."""
        for option, value, low, high in (
            ("--image-size", self.image_size, 32, None), ("--epochs", self.epochs, 0, None), ("--fine-tune-epochs", self.fine_tune_epochs, 0, None),
            ("--fine-tune-blocks", self.fine_tune_blocks, 0, BLOCKS), ("--batch-size", self.batch_size, 1, None),
            ("--lr", self.learning_rate, 1e-8, 1.0), ("--fine-tune-lr", self.fine_tune_learning_rate, 1e-8, 1.0),
            ("--label-smoothing", self.label_smoothing, 0.0, 0.5),
            ("--dense", self.head.dense_units, 1, None), ("--dropout", self.head.dropout, 0.0, 0.95), ("--views", self.views, 1, None),
            ("--val-fraction", self.val_fraction, 0.0, 0.5), ("--test-fraction", self.test_fraction, 0.01, 0.5), ("--patience", self.patience, 1, None),
        ):
            check_range(option, value, low, high)
        choices = (("--mixed-precision", self.mixed_precision, ("auto", *MIXED_POLICIES)), ("--augment", self.augment, AUGMENT_MODES),
                   ("--pooling", self.head.pooling, POOLINGS))
        for option, value, allowed in choices:
            if value not in allowed:
                raise VggEdgeError(f"{option} {value}: use one of {', '.join(allowed)}")
        distribute.check(self.strategy)


@dataclass
class TrainResult:
    run: Path
    metrics: dict
    report: dict


def train(config: TrainConfig) -> TrainResult | None:
    """Train, calibrate and choose on val, evaluate once on the test split, write the run directory atomically.

    Under multi-worker training every worker trains; only the chief goes on to write the run (the others return None)."""
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
    placement = place(config.strategy)
    console.print(f"strategy: {placement.describe()}", soft_wrap=True)
    precision, why = resolve_mixed_precision(config.mixed_precision)
    console.print(f"mixed precision: {precision} ({why})", soft_wrap=True)

    if manifest.dropped_duplicates:
        console.print(f"[yellow]dropped {len(manifest.dropped_duplicates)} duplicate images[/] (identical bytes in another split or class)")
    streams = {split: SplitStream(manifest, split, config.image_size) for split in SPLITS if manifest.files(split)}

    labels = manifest.labels
    worker = placement.worker
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "resume"}
    checkpoint = TrainingCheckpoint(resume_folder(config.out, worker), settings, config.resume)
    try:
        config, flip = _choose_flip(config, weights, len(labels), streams, placement)
        with dtype_policy(MIXED_POLICIES[precision]):
            model, fit, timings, cache = _fit(config, weights, len(labels), streams, MIXED_POLICIES[precision], checkpoint, placement)
    except VggEdgeError:  # bad data: nothing to resume (a crash or Ctrl-C keeps the folder for --resume)
        checkpoint.finish()
        raise
    except Exception as error:
        if placement.cluster and isinstance(error, tf.errors.OpError):  # a peer died or left: say so in one line, keep the state for --resume
            raise VggEdgeError(f"{placement.cluster.name}: lost the other workers ({_first_line(error.message)}); "
                               "restart every worker with --resume") from None
        raise
    digest = weights_digest(model)  # the same on every worker: gradients are summed across all of them
    if not placement.is_chief:
        checkpoint.finish()
        console.print(f"{worker}: training done, weights sha256 {digest}; the chief writes the run directory", soft_wrap=True)
        return None
    if precision != "off" or placement.name != "one":
        model = _float32_copy(model, config, len(labels))  # float32, and outside the strategy: a plain model for evaluation and export

    t = time.perf_counter()
    calibration, val_probs, y_val = _calibrate(model, config, streams["val"])
    rule = _operating_point(config, labels, val_probs, y_val)
    test_probs, test_uncalibrated, y_test = _read_test(model, streams["test"], config.batch_size, calibration["temperature"])
    timings["calibration_and_test_s"] = time.perf_counter() - t
    failures = {path: why for stream in streams.values() for path, why in stream.failures.items()}
    drop_unreadable(manifest, failures)
    for reason in list(failures.values())[:5]:
        console.print(f"[yellow]skipped[/] {escape(reason)}", soft_wrap=True)
    metrics = classification_metrics(y_test, test_probs, labels)
    if rule.positive:
        metrics["operating_point"] = {**rule.record(), "metrics": classification_metrics(y_test, test_probs, labels, rule.decide(test_probs))}
    test_before = temperature.reliability(test_uncalibrated, y_test)
    test_after = temperature.reliability(test_probs, y_test)
    calibration["test"] = {"ece_before": test_before["ece"], "ece_after": test_after["ece"]}
    timings["total_s"] = time.perf_counter() - started
    report = {
        "data_root": manifest.data_root,
        "counts": manifest.counts(),
        "dropped_duplicates": len(manifest.dropped_duplicates),
        "unreadable": len(manifest.unreadable),
        "ignored_non_image_files": manifest.ignored_files,
        "augmentation": {"mode": config.augment, "views": config.views if config.augment == "cached" else None, "flip": flip},
        "feature_cache": cache,
        "resumed": checkpoint.resumed,
        "mixed_precision": {"requested": config.mixed_precision, "used": precision, "why": why},
        "strategy": placement.record() | {"trained_weights_sha256": digest},
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
    RunDir.write(config.out, contents, run_figures(fit.history, metrics, labels, (test_before, test_after)))
    checkpoint.finish()
    return TrainResult(Path(config.out), metrics, report)


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """`auto`: float16 on an NVIDIA GPU with tensor cores, else bfloat16 where the CPU computes it natively
    (AMX or AVX512-BF16), else off; with the reason."""
    if requested != "auto":
        return requested, "as requested"
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= FLOAT16_GPU_CAPABILITY:
            return "float16", f"auto: GPU {gpu.name} has compute capability {capability[0]}.{capability[1]} (float16 tensor cores)"
    from .machine import cpu_flags

    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if found:
        return "bfloat16", f"auto: the CPU has {', '.join(found)}"
    return "off", "auto: no GPU with float16 tensor cores, no bfloat16 units on this CPU (AMX or AVX512-BF16); float32"


def _choose_flip(config: TrainConfig, weights: Path | None, num_classes: int, streams: dict[str, SplitStream],
                 placement: Placement) -> tuple[TrainConfig, dict | str]:
    """`config` with its flip decided (mirror.py) when it was left to the data and augmentation is on; and what the
    report says of it. Every worker runs the same test on the same images; they keep flips only if all of them do."""
    if config.augment == "off":
        return config, "no augmentation"
    if config.augmentation.flip is not None:
        return config, f"{'on' if config.augmentation.flip else 'off'}, as requested"
    started = time.perf_counter()
    base, _ = split_at(build_model(num_classes, config.image_size, weights, config.head), "block5_pool")  # float32, the ImageNet base
    test = mirror_test(base, streams["train"], streams["val"], config.batch_size, config.seed)
    flip = bool(placement.agree(int(test.flip)))
    console.print(test.describe(), soft_wrap=True)
    record = test.record() | {"flip": flip, "seconds": time.perf_counter() - started}
    return dataclasses.replace(config, augmentation=dataclasses.replace(config.augmentation, flip=flip)), record


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _fit(config: TrainConfig, weights: Path | None, num_classes: int, streams: dict[str, SplitStream], policy: str, checkpoint: TrainingCheckpoint,
         placement: Placement):
    """Both phases; returns the model at its best phase, the fitter (history, selection), timings and the feature cache's record."""
    with placement.strategy.scope():  # the trained variables are the strategy's (mirrored across replicas and workers)
        model = build_model(num_classes, config.image_size, weights, config.head)
    train, val = streams["train"], streams["val"]
    class_weight = None
    if config.class_weights:
        counts = label_counts(train.labels, num_classes)
        class_weight = np.array([sum(counts) / (num_classes * c) for c in counts], np.float32)
    fit = _Fitter(config, model, class_weight, checkpoint, placement)
    timings: dict[str, float] = {}
    blocks = config.fine_tune_blocks

    if config.augment == "online":
        for stream in (train, val):  # one pass to find the files that do not decode, before any epoch
            for _ in stream.batches(config.batch_size, f"check {stream.split}"):
                pass
        drop_unreadable(train.manifest, {**train.failures, **val.failures})  # a class left without images stops here
        with placement.strategy.scope():
            trainer = augmenting(model, config.augmentation, config.seed)
        sources = {"train": _DecodedImages(train), "val": _DecodedImages(val)}
        set_trainable(model, first_block=6)
        fit.phase("head", trainer, sources, streams, config.learning_rate, config.epochs)
        if blocks and config.fine_tune_epochs:
            set_trainable(model, first_block=6 - blocks)
            fit.phase("fine-tune", trainer, sources, streams, config.fine_tune_learning_rate, config.fine_tune_epochs)
        fit.keep_best()
        return model, fit, timings | fit.timings, None

    prefix, suffix = split_at(model, cut_layer_name(blocks))
    t = time.perf_counter()
    stores, cache = _cached_features(config, weights, prefix, suffix, streams, policy, placement)
    timings["feature_extraction_s"] = time.perf_counter() - t
    drop_unreadable(train.manifest, {**train.failures, **val.failures})  # a class left without images stops here, before training
    set_trainable(model, first_block=6)
    if blocks:
        _, head = split_at(suffix, "block5_pool")
        head_stores = {"train": stores["train.head"], "val": stores["val.head"]}
    else:
        head, head_stores = suffix, stores
    fit.phase("head", head, head_stores, streams, config.learning_rate, config.epochs)
    if blocks and config.fine_tune_epochs:
        set_trainable(model, first_block=6 - blocks)
        fit.phase("fine-tune", suffix, {"train": stores["train"], "val": stores["val"]}, streams, config.fine_tune_learning_rate, config.fine_tune_epochs)
    for store in stores.values():
        store.close()
    fit.keep_best()
    return model, fit, timings | fit.timings, cache


def _cached_features(config: TrainConfig, weights: Path | None, prefix, suffix, streams: dict[str, SplitStream], policy: str, placement: Placement):
    """The frozen part's features of train (in `views` versions) and val, from the disk cache or made now.

    With fine-tuning, the head phase trains on the output of the whole frozen base; those are stored too
    (`train.head`, `val.head`). Under multi-worker training each worker makes its own (its own cache folder:
    workers may share a machine). Returns the stores and what the report says about the cache."""
    views = config.views if config.augment == "cached" else 1
    key = cache_key(
        weights=sha256_file(weights) if weights else f"random init, seed {config.seed}", cut=prefix.layers[-1].name,
        image_size=config.image_size, views=views, augmentation=dataclasses.asdict(config.augmentation), seed=config.seed, policy=policy,
        head=bool(config.fine_tune_blocks), files={s: [e.sha256 for e in streams[s].entries] for s in ("train", "val")},
        worker=placement.worker,
    )
    cache = FeatureCache(key)
    stores = cache.stores()
    if stores is not None:
        failures = json.loads(cache.meta_path.read_text()).get("failures", {})
        for split in ("train", "val"):
            streams[split].forget(failures.get(split, {}))
        console.print(f"frozen features: reused from {cache.folder}", soft_wrap=True)
    else:
        cache.start()
        transform = (lambda v: augmenter(config.augmentation, config.seed + v)) if views > 1 else None
        stores = {}
        for split, n_views in (("train", views), ("val", 1)):
            try:
                stores[split] = extract(prefix, streams[split], n_views, config.batch_size, cache.folder, split, transform)
            except OverflowError:
                stores[split] = extract(prefix, streams[split], n_views, config.batch_size, cache.folder, split, transform, np.float32)
        if config.fine_tune_blocks:
            frozen_blocks, _ = split_at(suffix, "block5_pool")
            for split in ("train", "val"):
                stores[f"{split}.head"] = transform_store(frozen_blocks, stores[split], f"{split}.head", config.batch_size)
        cache.commit(stores, {"failures": {s: streams[s].failures for s in ("train", "val")}})
    return stores, {"folder": str(cache.folder), "key": key, "reused": cache.reused, "bytes": sum(s.nbytes for s in stores.values())}


def _calibrate(model, config: TrainConfig, val: SplitStream) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit the temperature on val and fold it into `model`; returns the record, the calibrated val probabilities and val's labels."""
    (features,), y = _over_split(temperature.logits_model(model), val, config.batch_size, "calibrate on val")
    record, after = temperature.calibrate(model, features, y, config.calibrate)
    if config.calibrate:
        console.print(f"temperature {record['temperature']:.3f} (fitted on val): val ECE {record['val']['ece_before']:.4f} -> {record['val']['ece_after']:.4f}")
    return record, after, y


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


def _read_test(model, test: SplitStream, batch_size: int, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test split, once: the (calibrated) model's probabilities, the uncalibrated ones (for the ECE comparison) and the labels."""
    import keras

    both = keras.Model(model.inputs, [model.get_layer(temperature.OUTPUT_LAYER).input, model.output])
    (features, probs), y = _over_split(both, test, batch_size, "evaluate test")
    uncalibrated = temperature.softmax(temperature.logits(model, features) * t)
    return probs, uncalibrated, y


def _over_split(model, stream: SplitStream, batch_size: int, description: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every output of `model` over the images of `stream` that decode, streamed, and their labels."""
    outputs: list[list[np.ndarray]] = []
    rows_seen = []
    for rows, pixels in stream.batches(batch_size, description, stream.valid):
        if len(rows):
            out = model.predict_on_batch(pixels.astype(np.float32))
            outputs.append([np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])])
            rows_seen.append(rows)
    rows = np.concatenate(rows_seen) if rows_seen else np.zeros(0, np.int64)
    return [np.concatenate(parts) for parts in zip(*outputs)], stream.labels[rows]


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


def stopping_callbacks(patience: int, monitor: str) -> tuple:
    """Early stopping on `monitor` (ending on the best epoch) and the learning rate x0.2 after `patience - 1` epochs
    without a better one: how `train`'s phases and `prune`'s fine-tuning end."""
    import keras

    return (keras.callbacks.EarlyStopping(monitor, patience=patience, restore_best_weights=True, mode="min"),
            keras.callbacks.ReduceLROnPlateau(monitor, factor=0.2, patience=max(1, patience - 1), min_lr=1e-7, mode="min"))


class _Fitter:
    """Runs training phases with early stopping and LR reduction, and keeps their history.

    Every phase model shares its layers with `full_model`, so a snapshot of the full model's
    weights after a phase is that phase's best checkpoint.
    """

    #: What selects epochs: the val loss of the model as it will ship, after its temperature (loop.py). A proper score
    #: rewards calibrated confidence, not just the argmax, and is less noisy than accuracy on small val splits.
    MONITOR = CALIBRATED_LOSS

    def __init__(self, config: TrainConfig, full_model, class_weight: np.ndarray | None, checkpoint: TrainingCheckpoint, placement: Placement):
        self.config = config
        self.checkpoint = checkpoint
        self.placement = placement
        self.full_model = full_model
        self.class_weight = class_weight
        self.history: list[dict] = []
        self.timings: dict[str, float] = {}
        self.kept_phase = "none"
        self._best: list[tuple[float, list]] = []  # per phase: best val_loss, full-model weights

    def phase(self, name: str, model, x: dict, streams: dict[str, SplitStream], learning_rate: float, epochs: int) -> None:
        """Train `model` on x["train"] with x["val"] as the validation split: feature stores (or decoded images),
        read batch by batch over the rows of `streams` that decoded."""
        import keras

        if epochs <= 0:
            return
        index = len(self.history)
        done = self.checkpoint.completed_phase(index)
        if self.placement.agree(int(done is not None)) == 0:  # a worker that did not finish it: all go on from their checkpoints
            done = None
        if done:  # finished before an interruption: its record and weights, not its epochs again
            record, best, weights, seeds = done
            self.full_model.set_weights(weights)
            set_seed_states(model, seeds)
            self.history.append(record)
            self._best.append((best, weights))
            console.print(f"[bold]{name}[/]: finished before the interruption, {record['epochs']} epochs (resumed)")
            return
        cfg = self.config
        with self.placement.strategy.scope():  # the optimizer's variables are the strategy's too
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")  # sets model.optimizer (loss-scaled under float16)
        early_stopping, plateau = stopping_callbacks(cfg.patience, self.MONITOR)
        train_rows, val_rows = streams["train"].valid, streams["val"].valid
        train = Batches(x["train"], train_rows, streams["train"].labels, cfg.batch_size, seed=cfg.seed + index, class_weight=self.class_weight)
        val = Batches(x["val"], val_rows, streams["val"].labels, cfg.batch_size)
        folder = self.checkpoint.phase_folder(index)
        state = PhaseState(folder, early_stopping, plateau)

        def progress_line(epoch: int, logs: dict, seconds: float) -> None:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
            console.print(f"[bold]{name}[/] epoch {epoch + 1}/{epochs}  {shown}  [dim]{seconds:.1f}s[/]", soft_wrap=True)

        started = time.perf_counter()
        run_epochs(model, self.placement, train, val, epochs, [early_stopping, plateau, stop_on_ctrl_c()], state, EpochCheckpoint(folder), progress_line,
                   cfg.label_smoothing)
        elapsed = time.perf_counter() - started
        history = state.history  # every epoch of the phase, those before an interruption included
        n_epochs = len(history["loss"])
        self.timings[f"{name}_s"] = elapsed
        self.timings[f"{name}_per_epoch_s"] = elapsed / n_epochs
        record = {"phase": name, "learning_rate": learning_rate, "epochs": n_epochs, "history": history}
        self.history.append(record)
        self._best.append((min(history[self.MONITOR]), self.full_model.get_weights()))
        self.checkpoint.save_phase(index, record, *self._best[-1], seed_states(model))

    def keep_best(self) -> None:
        """The phase whose best epoch had the lowest calibrated validation loss; its weights end in the model."""
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
                           **{k: h[k][best] for k in (self.MONITOR, "val_loss", "val_accuracy")}})
        kept = next((p for p in phases if p["phase"] == self.kept_phase), None)
        return {"monitor": self.MONITOR, "rule": f"each phase ends on its best epoch by {self.MONITOR} (the val loss after that epoch's "
                "best temperature: the model as it ships); the phase with the lower is kept", "phases": phases, "kept": kept}


class _DecodedImages:
    """Images decoded on demand, in the FeatureStore interface (one view): the input of online augmentation."""

    views = 1

    def __init__(self, stream: SplitStream):
        self.stream = stream

    def read(self, views: np.ndarray, rows: np.ndarray) -> np.ndarray:
        decoded, pixels = self.stream.read(rows)
        if len(decoded) != len(rows):  # the checking pass found every file that does not decode
            raise VggEdgeError(f"{self.stream.split}: an image stopped decoding during training ({next(iter(self.stream.failures.values()))})")
        return pixels.astype(np.float32)


def run_figures(history: list[dict], metrics: dict, labels: list[str], reliability: tuple):
    """The run's plots, drawn into its folder by `RunDir.write`: training curves across the phases (when there
    were any), the confusion matrix, the reliability diagram (before and after calibration)."""

    def draw(folder: Path) -> None:
        merged: dict[str, list[float]] = {}
        starts = []
        for phase in history:
            starts.append(len(merged.get("loss", [])))
            for key, values in phase["history"].items():
                merged.setdefault(key, []).extend(values)
        if history:
            plots.training_curves(merged, starts, folder / "curves.png")
        plots.confusion_matrix(metrics["confusion_matrix"], labels, folder / "confusion_matrix.png")
        plots.reliability_diagram(*reliability, folder / "reliability.png")

    return draw
