"""`vgg-edge import`: a Keras model trained elsewhere (a notebook's `.h5` or `.keras`) made into a run directory.

The seed notebooks save a model that expects its own preprocessing (usually pixels / 255) and was
trained in Colab on some split of a folder like the ones `train` reads. Import turns it into a run
that export, the parity gate, bench and predict take unchanged:

1. load the file with `safe_mode` on: no pickled code (Lambda layers, custom classes) is ever run;
   a model that needs any is refused with a one-line error saying what to do;
2. put the declared preprocessing (`--preprocess`: model.PREPROCESSING) in front of it, so that the
   run's model, like every model `train` writes, takes raw 0-255 RGB pixels; a single sigmoid
   output becomes two probabilities [1 - p, p], as Keras' binary folder loaders number the classes;
   a sequential model is inlined layer by layer (kept only when it gives the same outputs as the
   nested one) so that per-layer int8 diagnosis can name its layers;
3. split the labelled folder exactly as `train` does (recorded, hashed, de-duplicated), check the
   model's output count against the classes, and check the declared preprocessing on val images
   against the other two: a wrong declaration costs accuracy and is named;
4. evaluate on the test split and write the run (`RunDir.write`), argmax decisions.

The test split is this folder's, not the notebook's: if the model was trained on some of these
images its accuracy here is optimistic (import says so). Parity, which compares each export with
this very model on these images, is unaffected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import SEED, TEST_FRACTION, VAL_FRACTION, SplitManifest, load_split, plan_split
from .decision import DecisionRule
from .errors import VggEdgeError, check_range
from .fileio import sha256_file
from .metrics import classification_metrics
from .model import PREPROCESSING, batched_predict, preprocess_layer
from .run import RunContents, RunDir
from .ui import console, progress

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
CHECK_IMAGES = 200  # val images on which the declared preprocessing is compared with the others
CHECK_MARGIN = 0.10  # another preprocessing this much more accurate on them: the declaration is refused


@dataclass
class ImportConfig:
    model: Path
    data: Path
    preprocess: str  # one of model.PREPROCESSING: what the model expects applied to 0-255 RGB pixels
    out: Path | None = None  # default runs/<model file stem>
    labels: list[str] | None = None  # the model's output order; default: the class folders, sorted
    image_size: int | None = None  # default: the model's own input size
    val_fraction: float = VAL_FRACTION
    test_fraction: float = TEST_FRACTION
    seed: int = SEED
    batch_size: int = 32

    def check(self) -> None:
        if not Path(self.model).is_file():
            raise VggEdgeError(f"{self.model}: no such model file; pass a Keras model saved as {', '.join(MODEL_SUFFIXES)}")
        if Path(self.model).suffix.lower() not in MODEL_SUFFIXES:
            raise VggEdgeError(f"{self.model}: not a Keras model file ({', '.join(MODEL_SUFFIXES)}); save it with model.save('model.keras')")
        if self.preprocess not in PREPROCESSING:
            raise VggEdgeError(f"--preprocess {self.preprocess}: use one of {', '.join(PREPROCESSING)} (what the model expects done to 0-255 RGB pixels)")
        if self.image_size is not None:
            check_range("--image-size", self.image_size, 32)
        check_range("--val-fraction", self.val_fraction, 0.0, 0.5)
        check_range("--test-fraction", self.test_fraction, 0.01, 0.5)


@dataclass
class ImportResult:
    run: Path
    metrics: dict
    report: dict


def import_model(config: ImportConfig) -> ImportResult:
    """Load, wrap and check a foreign Keras model, evaluate it on the folder's test split, write the run."""
    started = time.perf_counter()
    config.check()
    source = Path(config.model)
    split = plan_split(Path(config.data), config.val_fraction, config.test_fraction, config.seed)
    split.labels = _output_order(split, config.labels)
    if not split.files("val"):
        raise VggEdgeError(f"{split.data_root}: no validation images; import checks the preprocessing on them (use --val-fraction > 0 or a val/ folder)")
    original = load_keras(source)
    size = _input_size(original, source, config.image_size)
    out = Path(config.out) if config.out else Path("runs") / source.stem
    model, inlined = wrap(original, config.preprocess, size, len(split.labels), source)

    pixels, y = {}, {}
    for name in ("val", "test"):
        with progress(f"decode {name}", len(split.files(name))) as advance:
            loaded, y[name] = load_split(split, name, size, on_progress=advance, verify=False)
        if loaded.failures:
            first = next(iter(loaded.failures.values()))
            raise VggEdgeError(f"{len(loaded.failures)} {name} images do not decode ({first}); remove them from {split.data_root}")
        pixels[name] = loaded.pixels
    check = check_preprocessing(original, config.preprocess, size, pixels["val"][:CHECK_IMAGES], y["val"][:CHECK_IMAGES], len(split.labels), source)
    probs = batched_predict(model, pixels["test"], config.batch_size, "evaluate test")
    _check_probabilities(probs, source)
    metrics = classification_metrics(y["test"], probs, split.labels)

    report = {
        "imported_from": str(source.resolve()), "model_sha256": sha256_file(source), "preprocess": config.preprocess,
        "inlined": inlined, "preprocess_check": check, "counts": split.counts(),
        "dropped_duplicates": len(split.dropped_duplicates),
        "test_split": "recorded here from the folder; if the model was trained on some of these images, its accuracy is optimistic (parity is not affected)",
        "timings": {"total_s": time.perf_counter() - started},
    }
    run_config = {
        "source": "import", "model": str(source.resolve()), "preprocess": config.preprocess, "image_size": size,
        "data": split.data_root, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction, "seed": config.seed,
        "labels_from": "--labels" if config.labels else "class folders, sorted",
    }
    decision = {"rule": DecisionRule(tuple(split.labels)).record(), "temperature": 1.0}
    RunDir.write(out, RunContents(model, split.labels, run_config, split, decision, metrics, report=report))
    return ImportResult(out, metrics, report)


def load_keras(path: Path):
    """The model in `path`, loaded with safe_mode on and without its optimizer; a one-line error for anything else."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises TypeError/ValueError/OSError and h5py errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if any(k in first for k in ("Lambda", "safe_mode", "Could not locate", "Unknown layer", "custom")):
            raise VggEdgeError(
                f"{path}: needs custom code to load ({first[:160]}); vgg-edge runs no code from model files: "
                "rebuild the model from standard Keras layers (no Lambda or custom classes) and save it again"
            ) from None
        raise VggEdgeError(f"{path}: Keras cannot load it ({first[:200]}); save it again with model.save('model.keras')") from None


def wrap(original, preprocess: str, size: int, classes: int, source: Path):
    """Raw 0-255 RGB in, probabilities out: the declared preprocessing in front, two-class output for a sigmoid.

    Returns (model, inlined): a sequential `original` is rebuilt from its own layers (weights shared)
    when that gives the same outputs on random inputs; otherwise it is called as one nested layer.
    """
    import keras

    outputs = original.output_shape[-1]
    if outputs == 1 and classes == 2:
        head = keras.layers.Dense(2, name="sigmoid_to_two_classes", trainable=False)  # [1 - p, p], exactly
        head.build((None, 1))
        head.set_weights([np.array([[-1.0, 1.0]], np.float32), np.array([1.0, 0.0], np.float32)])
    elif outputs != classes:
        raise VggEdgeError(f"{source}: the model has {outputs} outputs but {classes} classes were found; pass the data folder it was trained on (or --labels)")
    else:
        head = None

    def build(body) -> object:
        inputs = keras.Input((size, size, 3), name="image", dtype="float32")
        x = body(preprocess_layer(preprocess)(inputs))
        return keras.Model(inputs, head(x) if head else x, name="vgg_edge_imported")

    nested = build(original)
    try:
        flat = build(lambda x: _call_chain(original, x))
    except Exception:
        return nested, False
    probe = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    if np.allclose(flat.predict_on_batch(probe), nested.predict_on_batch(probe), atol=1e-6):
        return flat, True
    return nested, False


def _call_chain(model, x):
    """Call a sequential model's layers one after the other, inlining nested sequential models (VGG16's base)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = _call_chain(layer, x) if isinstance(layer, keras.Model) else layer(x)
    return x


def check_preprocessing(original, declared: str, size: int, pixels: np.ndarray, y: np.ndarray, classes: int, source: Path) -> dict:
    """Accuracy of the model on `pixels` under each preprocessing; refuses a declaration another one beats clearly."""
    import keras

    accuracy = {}
    for mode in PREPROCESSING:
        inputs = keras.Input((size, size, 3), dtype="float32")
        model = keras.Model(inputs, original(preprocess_layer(mode)(inputs)))
        probs = batched_predict(model, pixels, 32, f"check preprocessing {mode}")
        pred = (probs[:, 0] >= 0.5).astype(int) if probs.shape[-1] == 1 else probs.argmax(axis=1)
        accuracy[mode] = float((pred == y).mean())
    best = max(accuracy, key=accuracy.get)
    shown = ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items())
    if accuracy[best] - accuracy[declared] > CHECK_MARGIN:
        raise VggEdgeError(
            f"{source}: --preprocess {declared} looks wrong: on {len(y)} val images the model scores {shown}; "
            f"pass --preprocess {best} (what the notebook did to the pixels before model.fit)"
        )
    console.print(f"preprocessing check on {len(y)} val images (accuracy): {shown}; declared {declared}", soft_wrap=True)
    return {"images": int(len(y)), "accuracy": accuracy, "declared": declared}


def _output_order(split: SplitManifest, labels: list[str] | None) -> list[str]:
    """The model's output order: --labels (the folder's class names, reordered), else the folders sorted."""
    if not labels:
        return split.labels
    if sorted(labels) != sorted(split.labels) or len(set(labels)) != len(labels):
        raise VggEdgeError(f"--labels {','.join(labels)}: must name each class folder once ({', '.join(split.labels)}), in the model's output order")
    return list(labels)


def _input_size(model, source: Path, asked: int | None) -> int:
    """The square RGB input size: the model's own, or --image-size where the model leaves it open."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise VggEdgeError(f"{source}: input shape {shape}; vgg-edge imports image models taking (height, width, 3) RGB")
    height, width = shape[1], shape[2]
    if height is None and width is None:
        if asked is None:
            raise VggEdgeError(f"{source}: the model accepts any image size; pass --image-size (the size it was trained at)")
        return asked
    if height != width:
        raise VggEdgeError(f"{source}: input {height}x{width}; vgg-edge handles square inputs only")
    if asked is not None and asked != height:
        raise VggEdgeError(f"--image-size {asked}: the model takes {height}x{width} pixels; leave --image-size out")
    return int(height)


def _check_probabilities(probs: np.ndarray, source: Path) -> None:
    """Softmax outputs sum to 1 per image; logits or independent sigmoids do not and would be misread."""
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise VggEdgeError(f"{source}: its outputs are not class probabilities (they sum to {sums.min():.3g}..{sums.max():.3g}); end the model with a softmax layer")

