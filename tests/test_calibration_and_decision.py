"""Temperature scaling and the operating point, checked by simulation against known truths (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from vgg_edge import temperature
from vgg_edge.decision import DecisionRule, choose_threshold, parse_target
from vgg_edge.errors import VggEdgeError


def simulated(n: int, classes: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), and logits z * true_t: a model over-confident by exactly `true_t`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, classes))
    probs = temperature.softmax(z)
    y = np.array([rng.choice(classes, p=p) for p in probs])
    return z * true_t, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fitted_temperature_recovers_the_known_one(true_t):
    logits, y = simulated(20000, 4, true_t, seed=1)
    fitted = temperature.fit_temperature(logits, y)
    assert fitted == pytest.approx(true_t, rel=0.05)
    before, after = temperature.softmax(logits), temperature.softmax(logits, fitted)
    assert np.array_equal(before.argmax(1), after.argmax(1))  # calibration never moves a decision
    assert temperature.nll(after, y) <= temperature.nll(before, y) + 1e-12
    if true_t != 1.0:  # a miscalibrated model gets visibly better calibrated
        assert temperature.reliability(after, y)["ece"] < 0.5 * temperature.reliability(before, y)["ece"]


def test_ece_is_zero_for_a_calibrated_model_and_the_gap_for_a_constant_one():
    logits, y = simulated(50000, 3, 1.0, seed=2)  # calibrated by construction
    assert temperature.reliability(temperature.softmax(logits), y)["ece"] < 0.01
    probs = np.tile([0.9, 0.05, 0.05], (1000, 1))  # says 90%, right 60% of the time
    y = np.array([0] * 600 + [1] * 400)
    table = temperature.reliability(probs, y)
    assert table["ece"] == pytest.approx(0.3) and sum(table["count"]) == 1000


def test_folding_into_the_last_layer_is_the_same_as_dividing_the_logits():
    import keras

    rng = np.random.default_rng(3)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name=temperature.OUTPUT_LAYER)(hidden))
    x = rng.normal(size=(64, 8)).astype(np.float32)
    features = temperature.logits_model(model).predict_on_batch(x)
    z = temperature.logits(model, features)
    temperature.fold(model, 1.7)
    np.testing.assert_allclose(model.predict_on_batch(x), temperature.softmax(z, 1.7), atol=1e-6)


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_threshold_meets_the_target_with_a_margin_from_every_validation_probability(target):
    rng = np.random.default_rng(4)
    positives, negatives = rng.beta(5, 2, 333), rng.beta(2, 5, 500)
    every = np.concatenate([positives, negatives])
    t = choose_threshold(positives, target, every)
    assert (positives >= t).mean() >= target
    called = every[every >= t].min()  # the lowest probability still called positive ...
    assert (positives >= called + 1e-12).mean() < target  # ... is needed: any threshold above it misses the target
    gap = min(called - t, t - every[every < t].max(initial=0.0))
    assert gap > 0 and np.isclose(called - t, t - every[every < t].max(initial=0.0))  # halfway: 1e-7 of export noise flips nothing


def test_a_validation_threshold_holds_its_sensitivity_on_new_images_from_the_same_population():
    """Chosen on 400 positives, the threshold's sensitivity on 100,000 fresh ones is near the target."""
    rng = np.random.default_rng(5)
    t = choose_threshold(rng.beta(5, 2, 400), 0.95)
    assert 0.92 < (rng.beta(5, 2, 100000) >= t).mean() < 0.98


def test_rule_calls_the_class_at_its_threshold_and_the_best_other_class_below():
    rule = DecisionRule(("a", "b", "c"), positive="c", threshold=0.2, target_sensitivity=0.9)
    probs = np.array([[0.7, 0.1, 0.2], [0.5, 0.31, 0.19], [0.1, 0.6, 0.3], [0.05, 0.05, 0.9], [0.1, 0.2, 0.7]])
    assert rule.decide(probs).tolist() == [2, 0, 2, 2, 2]
    assert DecisionRule(("a", "b", "c")).decide(probs).tolist() == probs.argmax(1).tolist()
    strict = DecisionRule(("a", "b", "c"), positive="c", threshold=0.8)  # above 0.5: fewer calls of c than argmax
    assert strict.decide(probs).tolist() == [0, 0, 1, 2, 1]
    assert DecisionRule.from_record(["a", "b", "c"], rule.record()) == rule
    assert DecisionRule.from_record(["a", "b", "c"], None) == DecisionRule(("a", "b", "c"))
    with pytest.raises(VggEdgeError, match="one of a, b, c"):
        DecisionRule.from_record(["a", "b", "c"], {"rule": "threshold", "class": "z", "threshold": 0.5})


@pytest.mark.parametrize("text", ["malignant", "malignant=", "malignant=1.5", "malignant=0", "=0.9", "malignant=high"])
def test_bad_targets_are_refused_with_the_expected_form(text):
    with pytest.raises(VggEdgeError, match="CLASS=FRACTION"):
        parse_target(text)
    assert parse_target("a=b=0.9") == ("a=b", 0.9)
