"""One real end-to-end training run (shared MNIST digits, 32 px), asserted through its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import MNIST
from PIL import Image

from vgg_edge.data import SplitManifest


def test_run_directory_is_complete(trained_run: Path) -> None:
    for name in ("model.keras", "labels.json", "config.json", "split.json", "history.json", "metrics.json", "report.json", "decision.json",
                 "curves.png", "confusion_matrix.png", "reliability.png"):
        assert (trained_run / name).is_file(), name
    assert not [p for p in trained_run.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    for png in ("curves.png", "confusion_matrix.png", "reliability.png"):
        with Image.open(trained_run / png) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_metrics_are_real_and_consistent(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    labels = json.loads((trained_run / "labels.json").read_text())["labels"]
    assert labels == [str(i) for i in range(10)]
    assert metrics["n"] == 1000 and metrics["accuracy"] > 0.8  # 10 classes: chance is 0.1
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 1000
    assert np.trace(cm) / cm.sum() == metrics["accuracy"]
    for i, label in enumerate(labels):
        m = metrics["per_class"][label]
        assert m["support"] == cm[i].sum()
        assert m["sensitivity"] == cm[i, i] / cm[i].sum()
        assert 0.5 < m["specificity"] <= 1 and 0.5 < m["roc_auc"] <= 1


def test_split_manifest_records_the_shared_test_split(trained_run: Path) -> None:
    m = SplitManifest.load(trained_run / "split.json")
    test_files = {e.path for e in m.files("test")}
    assert test_files == {f"test/{p.parent.name}/{p.name}" for p in (MNIST / "test").glob("*/*.png")}
    assert not {e.sha256 for e in m.files("train")} & {e.sha256 for e in m.files("test")}
    assert len(m.files("val")) > 0 and all(e.path.startswith("train/") for e in m.files("val"))


def test_history_has_both_phases(trained_run: Path) -> None:
    phases = json.loads((trained_run / "history.json").read_text())["phases"]
    assert [p["phase"] for p in phases] == ["head", "fine-tune"]
    assert phases[0]["learning_rate"] == 1e-3 and phases[1]["learning_rate"] == 1e-4
    report = json.loads((trained_run / "report.json").read_text())
    augmentation = report["augmentation"]
    assert augmentation["mode"] == "cached" and augmentation["views"] == 4
    # Neither --flip nor --no-flip: decided on the data; mirrored digits are other shapes, so no flips, and the views were made so.
    assert augmentation["flip"]["flip"] is False and augmentation["flip"]["mirrored_errors"] > augmentation["flip"]["errors"]
    assert json.loads((trained_run / "config.json").read_text())["augmentation"]["flip"] is False
    selection = report["selection"]
    monitor = "val_calibrated_loss"
    assert selection["monitor"] == monitor and [p["phase"] for p in selection["phases"]] == ["head", "fine-tune"]
    kept = selection["kept"]
    assert kept["phase"] == report["kept_phase"] and kept[monitor] == min(p[monitor] for p in selection["phases"])
    history = next(p["history"] for p in phases if p["phase"] == kept["phase"])
    assert history[monitor][kept["best_epoch"] - 1] == min(history[monitor])
    # The monitor is the shipped model's val loss: what the temperature fitted after training (on the float32 model) reaches.
    assert kept[monitor] == pytest.approx(report["calibration"]["val"]["nll_after"], rel=0.03)
    assert all(c <= v for c, v in zip(history[monitor], history["val_loss"]))  # the grid holds T = 1 nearly: never worse than none
    assert report["test_split"].startswith("read once")


def test_temperature_changes_calibration_not_decisions(trained_run: Path) -> None:
    """Undo the folded temperature: the same decisions on every test image, but worse validation likelihood."""
    from vgg_edge import temperature
    from vgg_edge.run import RunDir
    from vgg_edge.model import batched_predict

    run = RunDir.open(trained_run)
    calibration = json.loads((trained_run / "report.json").read_text())["calibration"]
    t = calibration["temperature"]
    assert json.loads((trained_run / "decision.json").read_text())["temperature"] == t and abs(t - 1) > 0.01
    assert calibration["val"]["nll_after"] < calibration["val"]["nll_before"]
    model = run.load_model()
    pixels, _ = run.load_images("test")
    calibrated = batched_predict(model, pixels, 256, "calibrated")
    temperature.fold(model, 1 / t)  # back to the network as trained
    raw = batched_predict(model, pixels, 256, "uncalibrated")
    assert np.array_equal(calibrated.argmax(1), raw.argmax(1))
    assert np.abs(calibrated - raw).max() > 1e-3  # the probabilities did change


def test_same_seed_same_model(tmp_path: Path) -> None:
    """Cached augmentation, both phases, calibration and the operating point: twice, bit for bit the same."""
    from vgg_edge.training import TrainConfig, train

    runs = []
    for name in ("a", "b"):
        config = TrainConfig(out=tmp_path / name, data=MNIST, image_size=32, epochs=1, fine_tune_epochs=1, fine_tune_blocks=1,
                             batch_size=64, views=2, target_sensitivity=("3", 0.9))
        runs.append(train(config))
    a, b = runs
    assert a.metrics == b.metrics
    assert a.report["calibration"] == b.report["calibration"] and a.report["operating_point"] == b.report["operating_point"]
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == json.loads((tmp_path / "b" / "history.json").read_text())


def test_saved_model_has_no_random_layers_and_reproduces_its_metrics(trained_run: Path) -> None:
    from vgg_edge.run import RunDir
    from vgg_edge.training import evaluate_run

    model = RunDir.open(trained_run).load_model()
    assert not [layer.name for layer in model.layers if type(layer).__name__.startswith("Random")]
    recorded = json.loads((trained_run / "metrics.json").read_text())
    assert evaluate_run(trained_run)["confusion_matrix"] == recorded["confusion_matrix"]


def test_cli_evaluate_and_clean_errors(trained_run: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "vgg_edge", "evaluate", str(trained_run)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "reproduced" in done.stderr

    bad = subprocess.run([sys.executable, "-m", "vgg_edge", "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "data folder not found" in bad.stderr and str(tmp_path / "nope") in bad.stderr
    assert not (tmp_path / "r").exists()


def test_mixed_precision_and_online_augmentation_save_a_plain_float32_model(tmp_path: Path) -> None:
    """bfloat16 arithmetic and fresh augmentation every epoch while training; the run's model is plain
    float32 without random layers, and reproduces its metrics."""
    from vgg_edge.run import RunDir
    from vgg_edge.training import TrainConfig, evaluate_run, train

    out = tmp_path / "bf16"
    result = train(TrainConfig(out=out, data=MNIST, image_size=32, epochs=1, fine_tune_epochs=1, fine_tune_blocks=1, batch_size=64,
                               mixed_precision="bfloat16", augment="online"))
    assert result.metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert json.loads((out / "config.json").read_text())["mixed_precision"] == "bfloat16"
    assert result.report["augmentation"]["mode"] == "online" and result.report["augmentation"]["views"] is None
    assert "feature_extraction_s" not in result.report["timings"]
    model = RunDir.open(out).load_model()
    assert not [layer.name for layer in model.layers if type(layer).__name__.startswith("Random")]
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert {w.dtype for w in model.get_weights()} == {np.dtype("float32")}
    probs = model.predict_on_batch(np.zeros((1, 32, 32, 3), np.float32))
    assert probs.dtype == np.float32
    assert evaluate_run(out)["confusion_matrix"] == result.metrics["confusion_matrix"]

    bad = subprocess.run([sys.executable, "-m", "vgg_edge", "train", "--out", str(tmp_path / "r"), "--mixed-precision", "float8"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--mixed-precision float8: use one of" in bad.stderr and "bfloat16" in bad.stderr
    assert not (tmp_path / "r").exists()


def test_float16_mixed_precision_trains_with_loss_scaling_and_saves_float32(jittered: Path, tmp_path: Path, monkeypatch) -> None:
    """The GPU policy (float16 arithmetic, loss-scaled optimizer) also runs on a CPU: small and slow here, but the path is real."""
    import keras

    from vgg_edge.run import RunDir
    from vgg_edge.training import TrainConfig, train

    monkeypatch.setenv("VGG_EDGE_CACHE", str(tmp_path / "cache"))
    optimizers = []
    compile_ = keras.Model.compile
    monkeypatch.setattr(keras.Model, "compile", lambda self, *a, **k: (compile_(self, *a, **k), optimizers.append(type(self.optimizer).__name__))[0])
    result = train(TrainConfig(out=tmp_path / "fp16", data=jittered, image_size=32, epochs=2, fine_tune_epochs=1, fine_tune_blocks=1,
                               batch_size=16, views=1, mixed_precision="float16"))
    assert result.report["mixed_precision"]["used"] == "float16"
    assert optimizers and set(optimizers) == {"LossScaleOptimizer"}  # Keras wraps the optimizer for float16
    model = RunDir.open(result.run).load_model()
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert result.metrics["accuracy"] > 0.5  # 3 classes: chance is 1/3


def test_label_smoothing_is_the_cross_entropy_against_softened_targets() -> None:
    """The training loss under label smoothing e: -(1 - e) log p_true - (e / K) sum_k log p_k, computed here by hand;
    e = 0 is the plain cross-entropy, and smoothing raises the loss of a confident right answer."""
    from vgg_edge.loop import training_loss

    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.01, 0.01, 0.98]], np.float32)
    y = np.array([0, 2, 2])
    logp = np.log(probs)
    plain = -logp[np.arange(3), y]
    np.testing.assert_allclose(np.asarray(training_loss(y, probs)), plain, rtol=1e-5)
    for e in (0.1, 0.3):
        by_hand = -(1 - e) * logp[np.arange(3), y] - e / 3 * logp.sum(axis=1)
        np.testing.assert_allclose(np.asarray(training_loss(y, probs, e)), by_hand, rtol=1e-5)
    assert float(training_loss(y, probs, 0.1)[2]) > float(plain[2])


def test_calibrated_loss_is_the_val_loss_after_the_fitted_temperature() -> None:
    """The figure that selects epochs, summed per temperature in the training graph, is the NLL after temperature
    scaling computed in numpy, and its best grid point is within 0.1% of the fitted temperature's NLL."""
    from vgg_edge import temperature
    from vgg_edge.loop import _loss_per_temperature

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 500)
    logits = rng.normal(size=(500, 4)) + 4.0 * np.eye(4)[y] * rng.uniform(0, 2, (500, 1))  # right on most, over-confident
    probs = temperature.softmax(logits).astype(np.float32)
    sums = np.asarray(_loss_per_temperature(probs, y))
    assert sums.shape == temperature.T_GRID.shape
    for i in (0, 45, 60, 90, 120):
        assert sums[i] / len(y) == pytest.approx(temperature.nll(temperature.softmax(logits, temperature.T_GRID[i]), y), rel=1e-4)
    fitted = temperature.nll(temperature.softmax(logits, temperature.fit_temperature(logits, y)), y)
    assert fitted - 1e-9 <= sums.min() / len(y) <= fitted * 1.001 and sums.min() < sums[60]  # T_GRID[60] is 1: fitting helps here


def test_label_smoothing_out_of_range_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vgg_edge", "train", "--data", str(MNIST), "--out", str(tmp_path / "r"), "--label-smoothing", "0.7"],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines == ["error: --label-smoothing 0.7: must be between 0.0 and 0.5"], done.stderr
    assert not (tmp_path / "r").exists()
