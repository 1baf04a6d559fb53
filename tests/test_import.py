"""`vgg-edge import`: models built and saved the way the seed notebooks do, made into runs and shipped.

The seed model: `Sequential([VGG16 base (ImageNet, frozen), Flatten, Dense, Dense(softmax)])`
trained on pixels / 255 and saved as a legacy `.h5`, fitted here for a few seconds on the shared
MNIST digits at 32 px. Everything after import (export with its gate, predict) is the real thing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import MNIST, WEIGHTS
from typer.testing import CliRunner

from vgg_edge.cli import app
from vgg_edge.errors import VggEdgeError
from vgg_edge.images import read_images
from vgg_edge.importing import ImportConfig, import_model
from vgg_edge.manifest import read as read_manifest
from vgg_edge.run import RunDir
from vgg_edge.runtime import load_artifact

SIZE = 32


def seed_model(outputs: int, activation: str = "softmax", scale_layer=None):
    """The seed notebooks' model: a frozen VGG16 base in a Sequential, Flatten, Dense, then the output layer."""
    import keras

    base = keras.applications.VGG16(include_top=False, weights=str(WEIGHTS), input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    layers = [keras.Input((SIZE, SIZE, 3)), *([scale_layer] if scale_layer else []), base, keras.layers.Flatten(),
              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(outputs, activation=activation)]
    return keras.Sequential(layers)


def fit_on(model, data: Path, classes: list[str], per_class: int = 120) -> None:
    """A few seconds of the notebooks' training: train images / 255, sparse labels (or 0/1 for a sigmoid)."""
    paths, y = [], []
    for k, label in enumerate(classes):
        found = sorted((data / "train" / label).glob("*.png"))[:per_class]
        paths += found
        y += [k] * len(found)
    x = read_images(paths, SIZE).pixels.astype(np.float32) / 255.0
    loss = "binary_crossentropy" if model.output_shape[-1] == 1 else "sparse_categorical_crossentropy"
    model.compile("adam", loss)
    model.fit(x, np.array(y), epochs=4, batch_size=32, verbose=0)


@pytest.fixture(scope="module")
def seed_h5(tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = seed_model(10)
    fit_on(model, MNIST, [str(i) for i in range(10)])
    path = tmp_path_factory.mktemp("notebook") / "digits_vgg16.h5"
    model.save(path)  # Keras' legacy HDF5 format, as model.save('model.h5') in Colab
    return path


@pytest.fixture(scope="module")
def imported(seed_h5: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("runs") / "digits-imported"
    result = CliRunner().invoke(app, ["import", str(seed_h5), "--data", str(MNIST), "--preprocess", "scale", "--out", str(out)])
    return out, result


def test_a_seed_notebook_h5_becomes_a_run_that_takes_raw_pixels(imported, seed_h5):
    import keras

    out, result = imported
    assert result.exit_code == 0, result.output
    run = RunDir.open(out)
    assert run.labels == [str(i) for i in range(10)] and run.image_size == SIZE and run.preprocess == "scale"
    report = json.loads((out / "report.json").read_text())
    assert report["inlined"] and report["preprocess_check"]["declared"] == "scale"
    accuracy = report["preprocess_check"]["accuracy"]
    assert accuracy["scale"] > max(accuracy["vgg16"], accuracy["none"])  # the right declaration is the best one
    # the run's model on raw pixels is the notebook's model on pixels / 255, to float rounding
    files = [Path(run.split.data_root) / e.path for e in run.split.files("test")[:16]]
    pixels = read_images(files, SIZE).pixels.astype(np.float32)
    notebook = keras.saving.load_model(seed_h5, compile=False)
    assert np.allclose(run.load_model().predict_on_batch(pixels), notebook.predict_on_batch(pixels / 255.0), atol=1e-5)
    assert any(layer.name == "block5_conv3" for layer in run.load_model().layers)  # inlined: int8 diagnosis can name layers
    metrics = run.metrics
    assert metrics["n"] == 1000 and metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert "optimistic" in result.output and "vgg-edge export" in result.output


def test_the_imported_run_exports_through_the_gate_and_predicts_without_tensorflow(imported, tmp_path):
    out, _ = imported
    exported = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", str(out), "--format", "onnx", "--out", str(exported / "onnx-fp32")])
    assert result.exit_code == 0, result.output
    info = read_manifest(exported / "onnx-fp32")
    assert info.status == "accepted" and info.manifest["preprocessing"]["mode"] == "scale"
    assert info.parity["accuracy"] == pytest.approx(RunDir.open(out).metrics["accuracy"], abs=1e-9)
    result = CliRunner().invoke(app, ["export", str(out), "--format", "tflite", "--int8", "--out", str(exported / "tflite-int8")])
    int8 = read_manifest(exported / "tflite-int8")
    assert int8.status in ("accepted", "unproven"), int8.manifest["gate"]
    assert result.exit_code == 0, result.output
    run = RunDir.open(out)
    files = [Path(run.split.data_root) / e.path for e in run.split.files("test")]
    predictions, failures = load_artifact(exported / "onnx-fp32").classify(files)
    assert not failures
    y = [e.label for e in run.split.files("test")]
    assert np.mean([p.label == t for p, t in zip(predictions, y)]) == pytest.approx(run.metrics["accuracy"], abs=1e-9)


def test_a_wrong_preprocessing_declaration_is_refused_with_the_right_one_named(seed_h5, tmp_path):
    with pytest.raises(VggEdgeError, match=r"--preprocess none looks wrong.*pass --preprocess scale"):
        import_model(ImportConfig(seed_h5, MNIST, "none", out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_sigmoid_binary_model_becomes_two_probabilities(tmp_path):
    """benign/malignant notebooks end in Dense(1, sigmoid): the run outputs [1 - p, p] for the sorted classes."""
    import keras

    data = tmp_path / "two"
    for split in ("train", "test"):
        for label in ("3", "8"):
            (data / split).mkdir(parents=True, exist_ok=True)
            os.symlink(MNIST / split / label, data / split / label)
    keras.utils.set_random_seed(0)
    model = seed_model(1, "sigmoid")
    fit_on(model, data, ["3", "8"], per_class=100)
    path = tmp_path / "binary.keras"
    model.save(path)
    result = import_model(ImportConfig(path, data, "scale", out=tmp_path / "run"))
    run = RunDir.open(result.run)
    pixels = read_images([Path(run.split.data_root) / e.path for e in run.split.files("test")[:8]], SIZE).pixels.astype(np.float32)
    probs = run.load_model().predict_on_batch(pixels)
    p = model.predict_on_batch(pixels / 255.0)[:, 0]
    assert probs.shape == (8, 2) and np.allclose(probs[:, 1], p, atol=1e-6) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert result.metrics["accuracy"] > 0.8


def test_models_that_need_code_or_do_not_fit_the_data_are_one_line_errors(tmp_path, seed_h5):
    import keras

    lam = seed_model(10, scale_layer=keras.layers.Lambda(lambda x: x / 255.0))
    path = tmp_path / "lambda.keras"
    lam.save(path)
    three = tmp_path / "three"
    for label in ("0", "1", "2"):
        (three / "train").mkdir(parents=True, exist_ok=True)
        os.symlink(MNIST / "train" / label, three / "train" / label)
        (three / "test").mkdir(parents=True, exist_ok=True)
        os.symlink(MNIST / "test" / label, three / "test" / label)
    runner = CliRunner()
    cases = [
        (["import", str(path), "--data", str(MNIST), "--preprocess", "none"], "needs custom code to load"),
        (["import", str(seed_h5), "--data", str(three), "--preprocess", "scale"], "the model has 10 outputs but 3 classes"),
        (["import", str(seed_h5), "--data", str(MNIST), "--preprocess", "caffe"], "--preprocess caffe: use one of"),
        (["import", str(seed_h5), "--data", str(MNIST), "--preprocess", "scale", "--labels", "0,1,2"], "--labels 0,1,2: must name each class folder once"),
        (["import", str(tmp_path / "missing.h5"), "--data", str(MNIST), "--preprocess", "scale"], "no such model file"),
        (["import", str(seed_h5), "--data", str(MNIST), "--preprocess", "scale", "--image-size", "64"], "the model takes 32x32 pixels"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code != 0 and isinstance(result.exception, (VggEdgeError, SystemExit)), (args, result.output)
        text = str(result.exception) if isinstance(result.exception, VggEdgeError) else result.output
        assert message in text, (args, text)
    assert not (tmp_path / "out").exists()
