"""`vgg-edge prune`: the session's real 32 px MNIST run (operating point on class 9) pruned to half its
convolutional MACs with one fine-tuning epoch, then exported; and the filter surgery checked exactly
on the trained weights, behind both heads (global average pooling and Flatten).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import vgg_edge
from typer.testing import CliRunner

from vgg_edge.cli import app
from vgg_edge.errors import VggEdgeError
from vgg_edge.fileio import sha256_file
from vgg_edge.model import PREPROCESS_LAYER, AugmentConfig, HeadConfig, batched_predict, build_model
from vgg_edge.prune import PruneConfig, check_prunable, conv_layers, conv_macs, fine_tune, filter_scores, plan_filters, prune, pruned_copy, kept_filters, source_augmentation
from vgg_edge.run import RunDir
from vgg_edge.temperature import logits_model

KEEP = 0.5


@pytest.fixture(scope="module")
def pruned(trained_run: Path, tmp_path_factory) -> tuple[Path, str]:
    """The trained run pruned through the command line: keep 0.5, one fine-tuning epoch; (run, printed output)."""
    out = tmp_path_factory.mktemp("runs") / "mnist-32-keep0.5"
    result = CliRunner().invoke(app, ["prune", str(trained_run), "--keep", str(KEEP), "--epochs", "1", "--batch-size", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def source_model(trained_run: Path):
    return RunDir.open(trained_run).load_model()


def test_the_pruned_model_meets_the_mac_budget_with_fewer_filters_in_every_convolution(pruned, trained_run, source_model):
    out, printed = pruned
    model = RunDir.open(out).load_model()
    assert [layer.name for layer in model.layers] == [layer.name for layer in source_model.layers]
    budget = KEEP * conv_macs(source_model)
    assert abs(conv_macs(model) - budget) / budget < 0.03
    for before, after in zip(conv_layers(source_model), conv_layers(model)):
        assert after.filters < before.filters and after.filters % 8 == 0, after.name
    assert conv_layers(model)[0].kernel.shape[2] == 3  # the first convolution still reads B, G and R
    for a, b in zip(model.get_layer(PREPROCESS_LAYER).get_weights(), source_model.get_layer(PREPROCESS_LAYER).get_weights()):
        assert np.array_equal(a, b)
    assert model.output_shape[-1] == 10
    assert model.count_params() < 0.6 * source_model.count_params()
    for what in ("conv MACs", "parameters", "test accuracy", "test sensitivity of '9', operating point", "vgg-edge export"):
        assert what in printed, printed


def test_the_pruned_run_is_complete_on_the_source_split_and_keeps_the_operating_point(pruned, trained_run):
    out, _ = pruned
    run = RunDir.open(out)
    source = RunDir.open(trained_run)
    for name in ("model.keras", "labels.json", "config.json", "split.json", "metrics.json", "decision.json", "history.json", "report.json",
                 "curves.png", "confusion_matrix.png", "reliability.png"):
        assert (out / name).is_file(), name
    assert (out / "split.json").read_bytes() == (trained_run / "split.json").read_bytes()
    assert run.labels == source.labels and run.image_size == source.image_size and run.preprocess == "vgg16"
    record = run.config["prune"]
    assert record["source_model_sha256"] == sha256_file(source.model_path)
    assert record["keep"] == KEEP and record["criterion"] == "activation"
    assert set(record["filters"]) == {layer.name for layer in conv_layers(source.load_model())}
    assert record["conv_macs"]["after"] < record["conv_macs"]["before"]
    assert run.metrics["n"] == source.metrics["n"] and run.metrics["accuracy"] > 0.5  # chance is 0.1

    decision = json.loads((out / "decision.json").read_text())
    assert decision["temperature"] > 0 and run.config["calibrate"]
    rule = run.decision
    assert rule.positive == "9" and rule.target_sensitivity == 0.97
    pixels, y = run.load_images("val")  # the threshold was re-chosen on val for the pruned, recalibrated model
    decided = rule.decide(batched_predict(run.load_model(), pixels, 64, "val"))
    assert np.mean(decided[y == 9] == 9) >= 0.97
    assert "operating_point" in run.metrics


def test_the_pruned_model_is_judged_against_its_source_with_the_gates_statistics(pruned, trained_run, source_model):
    """Recomputed here from both models' test decisions, each by its own rule (the source's threshold, the pruned run's re-chosen one)."""
    out, printed = pruned
    run, source = RunDir.open(out), RunDir.open(trained_run)
    pixels, y = source.load_images("test")
    before = source.decision.decide(batched_predict(source_model, pixels, 64, "source"))
    after = run.decision.decide(batched_predict(run.load_model(), pixels, 64, "pruned"))
    judged = json.loads((out / "report.json").read_text())["against_source"]
    assert judged["gate"]["max_drop_pp"] == 1.0
    accuracy = next(m for m in judged["paired"] if m["metric"] == "accuracy")
    right_before, right_after = before == y, after == y
    assert accuracy["counts"] == [int(np.sum(right_before & right_after)), int(np.sum(right_before & ~right_after)),
                                  int(np.sum(~right_before & right_after)), int(np.sum(~right_before & ~right_after))]
    assert accuracy["change_pp"] == pytest.approx(100 * (right_after.mean() - right_before.mean()))
    assert accuracy["change_pp"] == pytest.approx(100 * (run.metrics["operating_point"]["metrics"]["accuracy"] - source.metrics["operating_point"]["metrics"]["accuracy"]))
    lo, hi = accuracy["ci_pp"]
    assert lo < accuracy["change_pp"] < hi
    worst = min(m["ci_pp"][1] for m in judged["paired"] if m["gated"])  # the status follows the gated intervals and the margin
    least = min(m["ci_pp"][0] for m in judged["paired"] if m["gated"])
    assert judged["status"] == ("rejected" if worst < -1.0 else "accepted" if least > -1.0 else "unproven")
    assert "against the source, by the parity gate's statistics" in printed and judged["status"] in printed


def test_export_of_the_pruned_run_passes_the_gate_and_is_smaller(pruned, source_model, tmp_path):
    from vgg_edge.export import export_run

    out, _ = pruned
    result = export_run(out, "onnx", "fp32", out=tmp_path / "onnx-fp32")
    assert result.accepted, result.manifest["gate"]
    size = sum(f["bytes"] for f in result.manifest["files"].values())
    assert size < 0.6 * 4 * source_model.count_params()  # any fp32 export of the source holds 4 bytes a parameter


def _zero_filters(model, filters: dict[str, list[int]]) -> None:
    for name, indices in filters.items():
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., indices], bias[indices] = 0.0, 0.0
        model.get_layer(name).set_weights([kernel, bias])


def _without(model, filters: dict[str, list[int]]) -> dict[str, np.ndarray]:
    return {name: np.setdiff1d(np.arange(model.get_layer(name).filters), indices) for name, indices in filters.items()}


def test_filter_surgery_is_exact_behind_global_average_pooling(trained_run, source_model):
    pixels, _ = RunDir.open(trained_run).load_images("test", limit=32)
    x = pixels.astype(np.float32)
    reference = source_model.predict_on_batch(x)
    every = {layer.name: np.arange(layer.filters) for layer in conv_layers(source_model)}
    assert np.abs(pruned_copy(source_model, every).predict_on_batch(x) - reference).max() < 1e-5

    zeroed = pruned_copy(source_model, every)  # a copy: the session's model stays as trained
    filters = {"block1_conv1": [0, 5], "block3_conv2": [7], "block5_conv3": [1, 100, 511]}
    _zero_filters(zeroed, filters)
    cut = pruned_copy(zeroed, _without(zeroed, filters))
    assert [layer.filters for layer in conv_layers(cut)][0] == 62 and conv_layers(cut)[-1].filters == 509
    assert np.abs(cut.predict_on_batch(x) - zeroed.predict_on_batch(x)).max() < 1e-5
    assert np.allclose(logits_model(cut).predict_on_batch(x), logits_model(zeroed).predict_on_batch(x), rtol=1e-5, atol=1e-5)


def test_filter_surgery_is_exact_behind_flatten(source_model):
    model = build_model(10, 64, None, HeadConfig(pooling="flatten", dense_units=16, dropout=0.0))  # block5_pool is 2x2: 4 positions
    for layer in conv_layers(source_model):
        model.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3)).astype(np.float32)
    filters = {"block2_conv1": [10], "block5_conv3": [3, 200, 400]}
    _zero_filters(model, filters)
    cut = pruned_copy(model, _without(model, filters))
    assert cut.get_layer("head_dense").get_weights()[0].shape == (4 * 509, 16)
    features = logits_model(model).predict_on_batch(x)
    assert (features > 0).mean() > 0.1  # the dense rows matter: a wrong row mapping would show
    assert np.allclose(logits_model(cut).predict_on_batch(x), features, rtol=1e-5, atol=1e-4)


def test_the_plan_meets_every_budget_and_l1_ranks_by_kernel_norm(source_model):
    before = conv_macs(source_model)
    for keep in (1.0, 0.7, 0.5, 0.3):
        plan = plan_filters(source_model, keep, 8)
        assert abs(plan.macs_after - keep * before) / (keep * before) < 0.03, keep
        assert all(a % 8 == 0 and 8 <= a <= b for b, a in plan.filters.values())
    full = plan_filters(source_model, 1.0, 8)
    assert full.ratio == 1.0 and all(a == b for b, a in full.filters.values())
    scores = filter_scores(source_model, "l1", np.zeros((0, 32, 32, 3), np.uint8), 8)
    kernel = source_model.get_layer("block4_conv2").get_weights()[0]
    assert np.allclose(scores["block4_conv2"], np.abs(kernel).sum(axis=(0, 1, 2)))


def test_bad_options_and_unprunable_inputs_are_one_line_errors(trained_run, tmp_path):
    import keras

    for option, value in (("keep", 0.0), ("keep", 1.5), ("criterion", "l2"), ("samples", 0), ("round_to", 0), ("epochs", -1), ("distill", 1.5),
                          ("learning_rate", 0.0), ("patience", 0), ("batch_size", 0)):
        flag = "--lr" if option == "learning_rate" else f"--{option.replace('_', '-')}"
        with pytest.raises(VggEdgeError, match=f"^{flag} "):
            PruneConfig(run=trained_run, out=tmp_path / "out", **{option: value}).check()
    with pytest.raises(VggEdgeError, match="^--out .*source run"):
        PruneConfig(run=trained_run, out=trained_run).check()
    assert PruneConfig(run=Path("runs/x"), keep=0.3).destination == Path("runs/x-keep0.3")
    with pytest.raises(VggEdgeError, match="not a complete run directory"):
        prune(PruneConfig(run=tmp_path, out=tmp_path / "out"))
    foreign = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name="block1_conv1"), keras.layers.BatchNormalization(),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="predictions")])
    with pytest.raises(VggEdgeError, match="BatchNormalization"):
        check_prunable(foreign, tmp_path)

    done = vgg_edge("prune", trained_run, "--keep", "2", "--out", tmp_path / "out")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and lines == ["error: --keep 2.0: must be between 0.01 and 1.0"], lines
    assert not (tmp_path / "out").exists()


def test_distillation_pulls_the_pruned_model_towards_the_teachers_probabilities(trained_run, source_model):
    """A teacher that calls every image class 0: fine-tuned towards it (--distill 1) the pruned model calls class 0 far more
    often than fine-tuned towards the labels (--distill 0), from the same pruned weights, on the same images."""
    run = RunDir.open(trained_run)
    pixels, y = run.load_images("train")
    mixed = np.random.default_rng(0).permutation(len(y))[:256]  # every class (the split lists them class by class)
    pixels, y = pixels[mixed], y[mixed]
    val_pixels, y_val = pixels[:64], y[:64]
    plan = plan_filters(source_model, KEEP, 8)
    scores = filter_scores(source_model, "l1", pixels[:8], 64)
    teacher = np.zeros((len(y), source_model.output_shape[-1]), np.float32)
    teacher[:, 0] = 1.0
    share = {}
    for distill in (0.0, 1.0):
        model = pruned_copy(source_model, kept_filters(scores, plan))
        config = PruneConfig(run=trained_run, epochs=1, distill=distill, learning_rate=1e-3, batch_size=64)
        fine_tune(model, {"train": pixels, "val": val_pixels}, {"train": y, "val": y_val}, config, teacher, None)
        share[distill] = float(np.mean(batched_predict(model, pixels, 64, "predict").argmax(1) == 0))
    assert np.mean(y == 0) < 0.2 and share[1.0] > 0.9 and share[0.0] < 0.5, share


def test_fine_tuning_trains_on_augmented_images_and_validates_on_the_originals(trained_run, source_model):
    """The source run's augmentations enter the fine-tuning batches (the same pruned weights and seed end elsewhere
    with them than without), while validation and the kept model see plain images: the recorded val loss of the
    kept epoch is the kept model's loss on the original val images."""
    run = RunDir.open(trained_run)
    pixels, y = run.load_images("train")
    mixed = np.random.default_rng(1).permutation(len(y))[:192]
    pixels, y = pixels[mixed], y[mixed]
    val_pixels, y_val = pixels[:64], y[:64]
    plan = plan_filters(source_model, KEEP, 8)
    scores = filter_scores(source_model, "l1", pixels[:8], 64)
    augmentation = source_augmentation(run.config)
    assert augmentation == AugmentConfig(**run.config["augmentation"])  # what the source was trained with
    weights, val_loss = {}, {}
    for name, augment in (("augmented", augmentation), ("plain", None)):
        model = pruned_copy(source_model, kept_filters(scores, plan))
        config = PruneConfig(run=trained_run, epochs=1, learning_rate=1e-3, batch_size=64)
        history = fine_tune(model, {"train": pixels, "val": val_pixels}, {"train": y, "val": y_val}, config, None, augment)
        weights[name] = model.get_weights()
        probs = batched_predict(model, val_pixels, 64, "predict")
        val_loss[name] = (history[0]["history"]["val_loss"][-1], float(np.mean(-np.log(probs[np.arange(len(y_val)), y_val]))))
    assert any(not np.allclose(a, b) for a, b in zip(weights["augmented"], weights["plain"]))
    for recorded, recomputed in val_loss.values():
        assert recorded == pytest.approx(recomputed, rel=1e-3, abs=1e-4), val_loss
