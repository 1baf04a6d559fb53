"""`metrics.classification_metrics` against confusion matrices worked out by hand, and the parts of
`decision.py` that test_calibration_and_decision.py leaves out. No TensorFlow, no conftest fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from vgg_edge.decision import DecisionRule, choose_threshold, parse_target
from vgg_edge.errors import VggEdgeError
from vgg_edge.metrics import classification_metrics

LABELS = ["a", "b", "c"]
# Ten images; rows of the confusion matrix are the truth, columns the decision:
#   a: 2 right, 1 called b, 1 called c;  b: 1 called a, 2 right;  c: 1 called b, 2 right.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
DECIDED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
CONFUSION = [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
BY_HAND = {  # tp, fn, fp, tn read off CONFUSION: a 2,2,1,5; b 2,1,2,5; c 2,1,1,6
    "a": {"sensitivity": 2 / 4, "specificity": 5 / 6, "precision": 2 / 3, "recall": 2 / 4, "f1": 4 / 7, "support": 4},
    "b": {"sensitivity": 2 / 3, "specificity": 5 / 7, "precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3},
    "c": {"sensitivity": 2 / 3, "specificity": 6 / 7, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3},
}  # F1 = 2 tp / (2 tp + fp + fn)


def auc_by_pairs(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic: the share of (positive, negative) pairs ranked right, ties half."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def assert_by_hand(metrics: dict) -> None:
    assert metrics["confusion_matrix"] == CONFUSION
    assert metrics["accuracy"] == pytest.approx(6 / 10) and metrics["n"] == 10
    assert metrics["macro_f1"] == pytest.approx((4 / 7 + 4 / 7 + 2 / 3) / 3)
    for label, expected in BY_HAND.items():
        got = {key: metrics["per_class"][label][key] for key in expected}
        assert got == pytest.approx(expected), label


def test_decision_figures_match_a_confusion_matrix_worked_by_hand():
    """Probabilities whose argmax is DECIDED: every count-based figure is the hand-computed one."""
    probs = np.full((len(Y), 3), 0.1)
    probs[np.arange(len(Y)), DECIDED] = 0.8
    assert_by_hand(classification_metrics(Y, probs, LABELS))


def test_an_operating_point_overrides_argmax_but_not_the_ranking():
    """With `y_pred`, the decisions (and every figure counted from them) are y_pred's, not the argmax; ROC-AUC still
    ranks the probabilities, one class against the rest, and its macro mean averages the classes."""
    probs = np.random.default_rng(0).dirichlet(np.ones(3), len(Y))
    assert not np.array_equal(probs.argmax(1), DECIDED)
    metrics = classification_metrics(Y, probs, LABELS, y_pred=DECIDED)
    assert_by_hand(metrics)
    aucs = [auc_by_pairs(probs[:, k], Y == k) for k in range(3)]
    assert [metrics["per_class"][lab]["roc_auc"] for lab in LABELS] == pytest.approx(aucs)
    assert metrics["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    by_argmax = classification_metrics(Y, probs, LABELS)
    counted = np.zeros((3, 3), int)
    np.add.at(counted, (Y, probs.argmax(1)), 1)
    assert by_argmax["confusion_matrix"] == counted.tolist()
    assert [by_argmax["per_class"][lab]["roc_auc"] for lab in LABELS] == pytest.approx(aucs)


def test_a_class_with_no_positives_has_no_sensitivity_or_roc_auc():
    """'c' never occurs: its sensitivity and ROC-AUC are null (undefined, not 0) and the macro AUC averages a and b only."""
    y, decided = np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 0])
    probs = np.array([[0.7, 0.1, 0.2], [0.3, 0.2, 0.5], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.5, 0.4, 0.1]])
    assert np.array_equal(probs.argmax(1), decided)
    metrics = classification_metrics(y, probs, LABELS)
    c = metrics["per_class"]["c"]
    assert c["sensitivity"] is None and c["roc_auc"] is None and c["support"] == 0
    assert c["specificity"] == pytest.approx(4 / 5)  # one of the five negatives was called c
    aucs = [auc_by_pairs(probs[:, k], y == k) for k in (0, 1)]
    assert metrics["roc_auc_macro"] == pytest.approx(np.mean(aucs))


def test_a_split_of_one_class_has_no_roc_auc_at_all():
    """Every image is an 'a': a has no negatives (no specificity, no AUC), b and c no positives; the macro AUC is null."""
    probs = np.random.default_rng(1).dirichlet(np.ones(3), 6)
    metrics = classification_metrics(np.zeros(6, int), probs, LABELS, y_pred=np.zeros(6, int))
    assert metrics["roc_auc_macro"] is None and all(metrics["per_class"][lab]["roc_auc"] is None for lab in LABELS)
    assert metrics["per_class"]["a"]["specificity"] is None and metrics["per_class"]["a"]["sensitivity"] == 1.0
    assert metrics["per_class"]["b"]["sensitivity"] is None and metrics["per_class"]["b"]["specificity"] == 1.0


@pytest.mark.parametrize("doc", [
    {"rule": "top2", "class": "a", "threshold": 0.5},
    {"rule": "threshold", "class": "a", "threshold": 1.5},
    {"rule": "threshold", "class": "a", "threshold": -0.1},
    {"rule": "threshold", "class": "a"},
], ids=["unknown rule", "threshold above 1", "threshold below 0", "no threshold"])
def test_unreadable_decision_records_are_refused(doc):
    """A run or manifest whose operating point cannot be applied as written is an error, not silently argmax."""
    with pytest.raises(VggEdgeError, match="unreadable decision rule"):
        DecisionRule.from_record(LABELS, doc)


@pytest.mark.parametrize(("positives", "target", "others", "expected"), [
    ([0.9, 0.8, 0.6, 0.4], 0.75, None, 0.5),  # one of four may be missed: halfway between 0.6 and the next, 0.4
    ([0.9, 0.8, 0.6, 0.4], 0.75, [0.55, 0.1], 0.575),  # another class's 0.55 is the next probability down
    ([0.9, 0.8], 1.0, None, 0.4),  # nothing lower: halfway down to 0
])
def test_threshold_sits_halfway_to_the_next_lower_probability(positives, target, others, expected):
    every = None if others is None else np.array(positives + others)
    assert choose_threshold(np.array(positives), target, every) == pytest.approx(expected)


def test_a_threshold_for_a_class_without_validation_images_is_refused():
    with pytest.raises(VggEdgeError, match="no validation images"):
        choose_threshold(np.array([]), 0.9)


@pytest.mark.parametrize(("text", "parsed"), [("malignant=0.95", ("malignant", 0.95)), ("malignant=1", ("malignant", 1.0))])
def test_targets_up_to_and_including_1_are_read(text, parsed):
    assert parse_target(text) == parsed
