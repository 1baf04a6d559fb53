"""`vgg-edge prune`: structured filter pruning of a trained run to a MAC budget, written as a new run.

VGG16 was sized for the 1000 classes of ImageNet; a 2- to 10-class medical task needs far fewer
filters. Pruning removes whole filters, so the result is a smaller *dense* VGG16 (same layer
names, fewer channels) that every converter and runtime speeds up as it is, with no sparse kernels:

1. rank each convolution's filters (`criterion`):
   - `l1`: the L1 norm of the filter's kernel (Li et al., 2017, "Pruning Filters for Efficient
     ConvNets"). Free, but it describes ImageNet pretraining, not this data.
   - `activation` (the default): the filter's mean output (post-ReLU, so mean |activation|) over
     `samples` train images, times the L1 norm of the weights that read that output (the next
     convolution's input slice, or the head's dense rows). The product estimates how much signal
     the filter actually passes on, on this data: a filter with a large kernel that never fires
     on grey medical images (a colour-opponent one, say) scores low, and the score does not change
     when a filter is scaled up and its reader scaled down, which L1 or activations alone do.
2. keep the best filters of every convolution to a budget: `keep` is the fraction of the source
   run's convolutional multiply-accumulates (the 13 VGG16 convolutions at the run's image size;
   they are over 99.9% of the model's MACs, the fixed 1x1 preprocessing and the head the rest)
   that the pruned model keeps. Every convolution keeps the same fraction r of its filters,
   rounded to a multiple of `round_to` (SIMD kernels work on channel groups of 8 or 16; odd widths
   waste lanes) and at least `round_to`; MACs fall about as r^2 (the first convolution's 3 input
   channels stay), and r is the value, searched on a 1/2000 grid, whose rounded widths come
   closest to the budget. Never pruned: the preprocessing layer, the first convolution's input
   channels and the output classes.
3. rebuild the smaller model layer by layer from the source's own layer configs (names kept, so
   the int8 diagnosis and everything else that names layers still works) and copy the surviving
   weights: a filter's kernel slice and bias, the next convolution's matching input channels, and
   the head dense's matching rows (for a Flatten head, those of every spatial position).
4. fine-tune every layer but the preprocessing on the run's recorded train split, Adam at a low
   learning rate lowered x0.2 on plateaus, stopping early on val loss and keeping the best epoch,
   as `train`'s phases do (with a fixed rate the val loss rose again after epoch 3 and the model
   stayed under-trained: at keep 0.5 of a 64 px brain-MRI source, 1.25 test points lost with the
   plateau reduction against 3.5 without; prune_augment_64.md). Every training batch is freshly
   augmented with the source run's own augmentations (`train`'s flips, rotation, zoom,
   brightness, contrast, as that run recorded them; `augment=False` turns it off): without them
   the fine-tuning undoes what augmentation gave the source (`train` without augmentation scores
   6 points lower on the brain-MRI test split at the same validation figures, recipes.md); on the
   same 64 px source, 3.5 test points lost with augmentation against 5.3 without, and validation
   loss chose it. The source's folded
   temperature is unfolded first, so fine-tuning sees the logits the run was trained with. With
   `distill` > 0 the targets are distilled (Hinton et al., 2015): that share of each train image's
   target is the source model's own probabilities for it, the rest its label. Off by default: on
   a weak 64 px source it cost 4 test points against the labels alone (benchmarks/results/prune_distill.md),
   since it ties the pruned model to what the source got wrong.
5. on val: re-fit the temperature and fold it in (as `train` does; not for a run trained with
   --no-calibrate), and if the run had an operating point, re-choose its threshold for the same
   target sensitivity, so the pruned run keeps the source's promise rather than its number; then
   read the test split once and write the run (the source's split.json, so the test figures compare
   with the source's recorded ones).
6. judge the pruned model against its source with the parity gate's own statistics, on the test
   split's images (paired: both models see the same images, each decides by its own rule): accuracy
   and every class's sensitivity, each change with its 95% interval against a margin of `max_drop`
   points. `accepted`: shown within the margin; `rejected`: shown worse; `unproven`: these images
   cannot tell. The verdict is recorded, not enforced: the pruned run is written either way, and
   its exports then face the gate against the pruned model itself.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import temperature
from .data import SEED
from .decision import DecisionRule, choose_threshold
from .errors import VggEdgeError, check_range
from .export.parity import Decisions, Gate, paired_decisions
from .export.pipeline import DEFAULT_MAX_DROP
from .fileio import sha256_file
from .metrics import classification_metrics
from .model import PREPROCESS_LAYER, AugmentConfig, augmenting, batched_predict, conv_block_layers, set_trainable
from .run import DECISION_FILE, RunContents, RunDir
from .interrupt import stop_on_ctrl_c
from .training import run_figures, stopping_callbacks
from .ui import console, progress

CRITERIA = ("l1", "activation")
CRITERION_NOTES = {
    "l1": "L1 norm of each filter's kernel",
    "activation": "mean post-ReLU activation of each filter times the L1 norm of the weights that read it",
}
RATIO_GRID = 2000  # the uniform keep ratio r is searched in steps of 1/RATIO_GRID
PRUNABLE_LAYERS = ("InputLayer", "Conv2D", "MaxPooling2D", "GlobalAveragePooling2D", "Flatten", "Dense", "Dropout")


@dataclass
class PruneConfig:
    run: Path
    out: Path | None = None  # default: beside the source run, <run>-keep<keep>
    keep: float = 0.5  # fraction of the source's convolutional MACs to keep
    criterion: str = "activation"  # one of CRITERIA
    samples: int = 256  # activation: train images whose activations rank the filters
    round_to: int = 8  # every convolution keeps a multiple of this many filters (and at least this many)
    epochs: int = 12  # fine-tuning epochs, at most (0: none)
    augment: bool = True  # fine-tune on freshly augmented batches, with the source run's augmentations
    distill: float = 0.0  # weight of the source model's probabilities in the fine-tuning targets (0: the labels alone)
    learning_rate: float = 1e-4
    patience: int = 3  # early stopping on val loss (the learning rate falls x0.2 one epoch sooner)
    batch_size: int = 32
    seed: int = SEED
    max_drop: float = DEFAULT_MAX_DROP  # points: the margin the pruned model is judged against its source with

    @property
    def destination(self) -> Path:
        return Path(self.out) if self.out else Path(self.run).with_name(f"{Path(self.run).name}-keep{self.keep:g}")

    def check(self) -> None:
        """Refuse settings that cannot work, before the model is loaded; each message names the option."""
        for option, value, low, high in (
            ("--keep", self.keep, 0.01, 1.0), ("--samples", self.samples, 1, None), ("--round-to", self.round_to, 1, 512),
            ("--epochs", self.epochs, 0, None), ("--distill", self.distill, 0.0, 1.0), ("--lr", self.learning_rate, 1e-8, 1.0), ("--patience", self.patience, 1, None),
            ("--batch-size", self.batch_size, 1, None), ("--max-drop", self.max_drop, 0.0, 100.0),
        ):
            check_range(option, value, low, high)
        if self.criterion not in CRITERIA:
            raise VggEdgeError(f"--criterion {self.criterion}: use one of {', '.join(CRITERIA)}")
        if self.destination.resolve() == Path(self.run).resolve():
            raise VggEdgeError(f"--out {self.destination}: that is the source run; write the pruned run to another folder")


@dataclass(frozen=True)
class Plan:
    """How many filters each convolution keeps, and what that costs."""

    ratio: float  # the uniform fraction of filters kept, before rounding
    filters: dict[str, tuple[int, int]]  # convolution -> (filters before, filters kept)
    macs_before: int
    macs_after: int


@dataclass
class PruneResult:
    run: Path
    metrics: dict
    report: dict


def prune(config: PruneConfig) -> PruneResult:
    """Prune, fine-tune, calibrate and choose on val, evaluate once on the test split, write the run directory atomically."""
    started = time.perf_counter()
    config.check()
    source = RunDir.open(config.run)
    labels, source_rule = source.labels, source.decision  # a bad decision.json is reported before the model loads
    rule = source_rule
    decision_path = source.path / DECISION_FILE
    source_temperature = source.temperature
    calibrate = bool(source.config.get("calibrate", True))
    if rule.positive and rule.target_sensitivity is None:
        raise VggEdgeError(f"{decision_path}: the operating point records no target sensitivity to re-choose its threshold for; re-run `vgg-edge train`")
    import keras

    keras.utils.set_random_seed(config.seed)
    model = source.load_model()
    check_prunable(model, source.path)
    pixels, y = {}, {}
    for split in ("train", "val"):
        with progress(f"decode {split}", len(source.split.files(split))) as advance:
            pixels[split], y[split] = source.load_images(split, on_progress=advance)

    t = time.perf_counter()
    sample = np.sort(np.random.default_rng(config.seed).permutation(len(y["train"]))[:config.samples])
    scores = filter_scores(model, config.criterion, pixels["train"][sample], config.batch_size)
    plan = plan_filters(model, config.keep, config.round_to)
    pruned = pruned_copy(model, kept_filters(scores, plan))
    temperature.fold(pruned, 1.0 / source_temperature)  # unfold: fine-tune the logits the run was trained with
    timings = {"rank_and_cut_s": time.perf_counter() - t}

    t = time.perf_counter()
    teacher = batched_predict(model, pixels["train"], config.batch_size, "source model on train") if config.distill and config.epochs else None
    trained_with = source_augmentation(source.config)
    augmentation = trained_with if config.augment else None
    history = fine_tune(pruned, pixels, y, config, teacher, augmentation)
    timings["fine_tune_s"] = time.perf_counter() - t
    calibration, val_probs = calibrate_on_val(pruned, pixels["val"], y["val"], config.batch_size, calibrate)
    if rule.positive:
        k = labels.index(rule.positive)
        threshold = choose_threshold(val_probs[y["val"] == k, k], rule.target_sensitivity, val_probs[:, k])
        rule = DecisionRule(tuple(labels), rule.positive, threshold, rule.target_sensitivity)
        console.print(f"operating point: {rule.describe()}", soft_wrap=True)

    t = time.perf_counter()
    with progress("decode test", len(source.split.files("test"))) as advance:
        test_pixels, y_test = source.load_images("test", on_progress=advance)
    features, test_probs = test_outputs(pruned, test_pixels, config.batch_size)
    source_probs = batched_predict(model, test_pixels, config.batch_size, "source model on test")
    decided = rule.decide(test_probs)
    comparison = against_source(y_test, source_rule.decide(source_probs), decided, labels, config.max_drop)
    timings["test_s"] = time.perf_counter() - t
    metrics = classification_metrics(y_test, test_probs, labels)
    if rule.positive:
        metrics["operating_point"] = {**rule.record(), "metrics": classification_metrics(y_test, test_probs, labels, decided)}
    uncalibrated = temperature.softmax(temperature.logits(pruned, features) * calibration["temperature"])
    test_before, test_after = temperature.reliability(uncalibrated, y_test), temperature.reliability(test_probs, y_test)
    calibration["test"] = {"ece_before": test_before["ece"], "ece_after": test_after["ece"]}

    params = {"before": int(model.count_params()), "after": int(pruned.count_params())}
    record = {
        "source_run": str(source.path.resolve()), "source_model_sha256": sha256_file(source.model_path),
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in ("run", "out")},
        "ratio": plan.ratio, "filters": {name: {"before": b, "after": a} for name, (b, a) in plan.filters.items()},
        "conv_macs": {"before": plan.macs_before, "after": plan.macs_after, "kept": plan.macs_after / plan.macs_before},
        "params": params, "augmentation": dataclasses.asdict(augmentation) if augmentation else None,  # what fine-tuning applied
    }
    run_config = {"source": "prune", "image_size": source.image_size, "preprocess": source.preprocess, "calibrate": calibrate,
                  "augmentation": dataclasses.asdict(trained_with),  # the source's, for a later prune of this run
                  "prune": record, "source_config": source.config}
    timings["total_s"] = time.perf_counter() - started
    report = {
        "prune": record,
        "criterion": CRITERION_NOTES[config.criterion] + (f" ({len(sample)} train images)" if config.criterion == "activation" else ""),
        "selection": selection(history),
        "calibration": calibration,
        "operating_point": rule.record(),
        "before_after": before_after(source.metrics, metrics, plan, params, rule),
        "against_source": comparison,
        "test_split": "the source run's, read once, after the epoch, temperature and operating point were chosen on val",
        "timings": timings,
    }
    decision = {"rule": rule.record(), "temperature": calibration["temperature"]}
    contents = RunContents(pruned, labels, run_config, source.split, decision, metrics, history, report)
    out = config.destination
    RunDir.write(out, contents, run_figures(history, metrics, labels, (test_before, test_after)))
    return PruneResult(out, metrics, report)


def before_after(source_metrics: dict, metrics: dict, plan: Plan, params: dict, rule: DecisionRule) -> dict[str, list]:
    """What pruning cost and saved, as [before, after] (the source's test figures are those it recorded on the same split)."""
    rows = {"conv MACs": [plan.macs_before, plan.macs_after], "parameters": [params["before"], params["after"]],
            "test accuracy": [source_metrics.get("accuracy"), metrics["accuracy"]]}
    if rule.positive:
        point = [source_metrics.get("operating_point", {}).get("metrics", {}), metrics["operating_point"]["metrics"]]
        rows["test accuracy, operating point"] = [m.get("accuracy") for m in point]
        rows[f"test sensitivity of '{rule.positive}', operating point"] = [m.get("per_class", {}).get(rule.positive, {}).get("sensitivity") for m in point]
    return rows


def against_source(y: np.ndarray, source_decisions: np.ndarray, pruned_decisions: np.ndarray, labels: list[str], max_drop: float) -> dict:
    """The pruned model against its source on the same test images, by the parity gate's statistics (step 6)."""
    paired = paired_decisions([Decisions("test", y, source_decisions, pruned_decisions)], labels)
    gate = Gate(max_drop_pp=max_drop)
    verdict = gate.judge({"evidence": {}, "paired": paired})
    return {"gate": gate.record(), "status": verdict.status, "failures": verdict.failures, "unproven": verdict.unproven, "paired": paired}


def check_prunable(model, where: Path) -> None:
    """Refuse a model that is not the chain `train` builds: vgg16_preprocess, VGG16 blocks, a pooled dense head, `predictions`."""
    names = [layer.name for layer in model.layers]
    foreign = sorted({type(layer).__name__ for layer in model.layers} - set(PRUNABLE_LAYERS))
    if len(names) < 3 or names[1] != PREPROCESS_LAYER or names[-1] != temperature.OUTPUT_LAYER or foreign or not conv_layers(model):
        why = f"it has {', '.join(foreign)} layers" if foreign else f"it is not {PREPROCESS_LAYER} -> VGG16 blocks -> head -> {temperature.OUTPUT_LAYER}"
        raise VggEdgeError(f"{where}: cannot prune this model ({why}); prune takes runs written by `vgg-edge train`")


def conv_layers(model) -> list:
    """The VGG16 convolutions, in order (the fixed preprocessing is not one of them)."""
    return [layer for layer in conv_block_layers(model, 1) if type(layer).__name__ == "Conv2D"]


def head_dense(model):
    """The first dense layer: it reads the last convolution's channels through the head's pooling."""
    return next(layer for layer in model.layers if type(layer).__name__ == "Dense")


def conv_macs(model, filters: dict[str, int] | None = None) -> int:
    """Multiply-accumulates of the VGG16 convolutions for one image, with `filters` per convolution (default: as built)."""
    total, channels_in = 0, None
    for layer in conv_layers(model):
        height, width = layer.output.shape[1:3]
        kh, kw, fixed_in, _ = layer.kernel.shape
        out = filters[layer.name] if filters else layer.filters
        total += height * width * kh * kw * (channels_in or fixed_in) * out
        channels_in = out
    return int(total)


def plan_filters(model, keep: float, round_to: int) -> Plan:
    """Filters per convolution: one ratio r for all, rounded to multiples of `round_to`, whose MACs come closest to `keep` of the source's."""
    convs = conv_layers(model)
    before = conv_macs(model)

    def widths(r: float) -> dict[str, int]:
        return {c.name: min(c.filters, max(round_to, round_to * int(r * c.filters / round_to + 0.5))) for c in convs}

    ratio = min(np.linspace(0.0, 1.0, RATIO_GRID + 1)[::-1], key=lambda r: abs(conv_macs(model, widths(r)) - keep * before))
    kept = widths(ratio)
    return Plan(round(float(ratio), 6), {c.name: (c.filters, kept[c.name]) for c in convs}, before, conv_macs(model, kept))


def filter_scores(model, criterion: str, pixels: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Per convolution, one score per filter: higher is more worth keeping (see the module docstring)."""
    convs = conv_layers(model)
    if criterion == "l1":
        return {c.name: np.abs(c.get_weights()[0]).sum(axis=(0, 1, 2)) for c in convs}
    activations = mean_activations(model, pixels, batch_size)
    readers = [np.abs(after.get_weights()[0]).sum(axis=(0, 1, 3)) for after in convs[1:]]
    dense = np.abs(head_dense(model).get_weights()[0])
    readers.append(dense.reshape(-1, convs[-1].filters, dense.shape[1]).sum(axis=(0, 2)))  # Flatten rows are position-major
    return {c.name: activations[c.name] * reader for c, reader in zip(convs, readers)}


def mean_activations(model, pixels: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Per convolution, each filter's output (post-ReLU) averaged over positions and `pixels`."""
    import keras

    convs = conv_layers(model)
    inputs = keras.Input(model.input_shape[1:])
    x, pooled = inputs, []
    for layer in model.layers[1:model.layers.index(convs[-1]) + 1]:  # re-traced: the probe stops at the last convolution
        x = layer(x)
        if layer in convs:
            pooled.append(keras.layers.GlobalAveragePooling2D()(x))
    probe = keras.Model(inputs, keras.layers.Concatenate()(pooled))
    means = batched_predict(probe, pixels, batch_size, "measure activations").astype(np.float64).mean(axis=0)
    return dict(zip([c.name for c in convs], np.split(means, np.cumsum([c.filters for c in convs])[:-1])))


def kept_filters(scores: dict[str, np.ndarray], plan: Plan) -> dict[str, np.ndarray]:
    """The indices (ascending) of each convolution's best-scoring filters, as many as the plan keeps."""
    return {name: np.sort(np.argsort(-scores[name], kind="stable")[:after]) for name, (_, after) in plan.filters.items()}


def pruned_copy(model, kept: dict[str, np.ndarray]):
    """The same chain of layers, names and settings, where each convolution in `kept` has only those filters.

    Surviving weights are copied: a kept filter's kernel and bias, the matching input channels of
    the next convolution, and the matching rows of the first dense layer (behind a Flatten: at
    every spatial position, which Flatten lays out position-major). Keeping every filter gives the
    same outputs; removing a filter whose kernel and bias are zero (ReLU of 0 is 0) does too.
    """
    import keras

    inputs = keras.Input(model.input_shape[1:], name=model.layers[0].name)
    x = inputs
    for layer in model.layers[1:]:
        layer_config = layer.get_config()
        if layer.name in kept:
            layer_config["filters"] = len(kept[layer.name])
        x = type(layer).from_config(layer_config)(x)
    pruned = keras.Model(inputs, x, name=model.name)

    channels, width = None, 0  # the surviving channels (None: all) of the last convolution's `width` outputs
    for old, new in zip(model.layers[1:], pruned.layers[1:]):
        weights = old.get_weights()
        if type(old).__name__ == "Conv2D":
            kernel, bias = weights
            kernel = kernel if channels is None else kernel[:, :, channels, :]
            channels, width = kept.get(old.name), old.filters
            weights = [kernel, bias] if channels is None else [kernel[..., channels], bias[channels]]
        elif type(old).__name__ == "Flatten" and channels is not None:
            positions = int(np.prod(new.output.shape[1:])) // len(channels)
            channels = (np.arange(positions)[:, None] * width + channels[None, :]).ravel()
        elif type(old).__name__ == "Dense" and channels is not None:
            weights = [weights[0][channels], *weights[1:]]
            channels = None
        new.set_weights(weights)
    return pruned


def source_augmentation(run_config: dict) -> AugmentConfig:
    """The augmentations a run was trained with (a pruned run carries its source's). For a run that records
    none (an imported model), `train`'s defaults without flips: whether its images may be mirrored is unknown."""
    recorded = run_config.get("augmentation") or {"flip": False}
    return AugmentConfig(**recorded)


def fine_tune(model, pixels: dict, y: dict, config: PruneConfig, teacher: np.ndarray | None, augmentation: AugmentConfig | None) -> list[dict]:
    """Train every layer but the preprocessing on train (towards the distilled targets: `config.distill` of
    `teacher`, the source's train probabilities, the rest the labels), each batch freshly augmented unless
    `augmentation` is None, stop early on val loss (against the labels, never augmented), end on the best
    epoch; the history as `train` records it."""
    import keras

    if config.epochs == 0:
        return []
    classes = model.output_shape[-1]
    targets = {split: np.eye(classes, dtype=np.float32)[y[split]] for split in ("train", "val")}
    if teacher is not None:
        targets["train"] = (1 - config.distill) * targets["train"] + config.distill * teacher.astype(np.float32)
    set_trainable(model, first_block=1)
    trainer = augmenting(model, augmentation, config.seed) if augmentation else model  # shares model's layers
    trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    shown = ("loss", "accuracy", "val_loss", "val_accuracy")
    report = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: console.print(
        f"[bold]prune fine-tune[/] epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {logs[k]:.4f}" for k in shown if k in logs), soft_wrap=True))
    hist = trainer.fit(
        batches(pixels["train"], targets["train"], config.batch_size, config.seed), validation_data=batches(pixels["val"], targets["val"], config.batch_size),
        epochs=config.epochs, verbose=0, shuffle=False,  # the dataset shuffles itself
        callbacks=[*stopping_callbacks(config.patience, "val_loss"), report, stop_on_ctrl_c()],  # fit logs the plain val loss
    )
    history = {k: [float(v) for v in values] for k, values in hist.history.items()}
    return [{"phase": "prune fine-tune", "learning_rate": config.learning_rate, "epochs": len(history["loss"]), "history": history}]


def batches(pixels: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None):
    """uint8 images as float32 batches with their targets `y`; shuffled every epoch when a seed is given (train), in order otherwise (val)."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((pixels, y))
    if seed is not None:
        data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(lambda x, t: (tf.cast(x, tf.float32), t)).prefetch(2)


def selection(history: list[dict]) -> dict:
    """Which fine-tuning epoch the model is (the one with the lowest val loss), or none."""
    if not history:
        return {"monitor": "val_loss", "kept": None, "note": "no fine-tuning (--epochs 0): the pruned weights as copied"}
    h = history[0]["history"]
    best = int(np.argmin(h["val_loss"]))
    return {"monitor": "val_loss", "epochs_run": history[0]["epochs"],
            "kept": {"best_epoch": best + 1, "val_loss": h["val_loss"][best], "val_accuracy": h["val_accuracy"][best]}}


def calibrate_on_val(model, pixels: np.ndarray, y: np.ndarray, batch_size: int, calibrate: bool) -> tuple[dict, np.ndarray]:
    """Re-fit the temperature on val and fold it into `model` (when the source run was calibrated), as `train` does."""
    features = batched_predict(temperature.logits_model(model), pixels, batch_size, "calibrate on val")
    record, after = temperature.calibrate(model, features, y, calibrate)
    if calibrate:
        console.print(f"temperature {record['temperature']:.3f} (re-fitted on val): val ECE {record['val']['ece_before']:.4f} -> {record['val']['ece_after']:.4f}")
    return record, after


def test_outputs(model, pixels: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the test split: the last layer's inputs (for the uncalibrated ECE) and the model's own probabilities."""
    import keras

    both = keras.Model(model.inputs, keras.layers.Concatenate()([model.get_layer(temperature.OUTPUT_LAYER).input, model.output]))
    out = batched_predict(both, pixels, batch_size, "evaluate test")
    classes = model.output_shape[-1]
    return out[:, :-classes], out[:, -classes:]
