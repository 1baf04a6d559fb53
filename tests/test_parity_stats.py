"""The parity gate's unit tests, in seconds and without TensorFlow or any conftest fixture: paired
counts, Tango's interval, McNemar, Clopper-Pearson, what `compare` measures (flips under the run's
decision rule, probability drift, evidence pooled over splits), the three verdicts and when a
verdict is worth another converter setting, and simulations against known true differences.

Synthetic labels and probabilities only (`outcomes`, `one_class_changed`): the truth is known.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

import re

from vgg_edge.decision import DecisionRule
from vgg_edge.export.paired import PairedCounts, difference_interval, flip_upper, images_needed, mcnemar_p
from vgg_edge.export.parity import Gate, Predictions, compare, paired_metrics

LABELS = ["a", "b", "c", "d"]


def outcomes(y: np.ndarray, ref_right: np.ndarray, exp_right: np.ndarray, k: int = len(LABELS)) -> Predictions:
    """Probabilities whose argmax is the label where 'right', the next class where wrong."""
    def probs(right):
        decided = np.where(right, y, (y + 1) % k)
        p = np.full((len(y), k), 0.1 / (k - 1))
        p[np.arange(len(y)), decided] = 0.9
        return p

    return Predictions("test", y, probs(ref_right), probs(exp_right))


def one_class_changed(per_class: int, lost: int, gained: int = 0, changed: int = 0) -> Predictions:
    """Every class with `per_class` images, all right in both models, except that class `changed`
    loses `lost` images in the export and gains `gained` (which the reference got wrong)."""
    y = np.repeat(np.arange(len(LABELS)), per_class)
    ref, exp = np.ones(len(y), bool), np.ones(len(y), bool)
    where = np.flatnonzero(y == changed)
    exp[where[:lost]] = False
    ref[where[lost:lost + gained]] = False
    return outcomes(y, ref, exp)


def paired_only(predictions: Predictions) -> dict:
    """What a quantized gate reads of `compare`'s figures, without the test-split ROC curves (fast simulations)."""
    return {"evidence": {}, "paired": paired_metrics([predictions], LABELS)}


def test_paired_counts_are_the_2x2_table():
    ref = np.array([1, 1, 1, 0, 0, 1], bool)
    exp = np.array([1, 0, 1, 1, 0, 1], bool)
    counts = PairedCounts.from_outcomes(ref, exp)
    assert counts.cells == (3, 1, 1, 1) and counts.n == 6 and counts.change == 0
    assert (counts + counts).cells == (6, 2, 2, 2)


def test_tango_interval_reduces_to_mcnemar_at_zero_and_widens_for_small_splits():
    # with no discordant image the interval is not a point: 0 of n excludes about z^2/n, like the rule of three
    lo, hi = difference_interval(PairedCounts(90, 0, 0, 0))
    assert lo == pytest.approx(-1.96**2 / (90 + 1.96**2), rel=1e-3) and hi == pytest.approx(-lo)
    lo300, _ = difference_interval(PairedCounts(300, 0, 0, 0))
    assert lo < lo300 < 0
    # the score statistic at a difference of 0 is McNemar's: the interval excludes 0 iff |b-c|/sqrt(b+c) > 1.96
    assert difference_interval(PairedCounts(80, 10, 2, 8))[1] < 0  # (2-10)/sqrt(12) = -2.31
    assert difference_interval(PairedCounts(80, 8, 3, 9))[1] > 0  # (3-8)/sqrt(11) = -1.51
    lo, hi = difference_interval(PairedCounts(80, 8, 3, 9))
    assert lo < (3 - 8) / 100 < hi


def test_mcnemar_and_clopper_pearson_are_scipys():
    assert mcnemar_p(PairedCounts(50, 9, 1, 5)) == pytest.approx(binomtest(1, 10, 0.5).pvalue)
    assert mcnemar_p(PairedCounts(50, 0, 0, 5)) == 1.0
    assert flip_upper(0, 100) == pytest.approx(1 - 0.025 ** (1 / 100))  # exact for zero events
    assert flip_upper(5, 1000) > 5 / 1000 and flip_upper(1000, 1000) == 1.0


def test_tango_interval_covers_the_true_difference():
    """Coverage by simulation: 95% intervals contain the true paired difference in about 95% of splits."""
    rng = np.random.default_rng(0)
    cells = [0.9, 0.02, 0.01, 0.07]  # true difference -1 pp
    covered = 0
    for _ in range(1000):
        counts = PairedCounts(*rng.multinomial(400, cells))
        lo, hi = difference_interval(counts)
        covered += lo <= -0.01 <= hi
    assert 0.93 <= covered / 1000 <= 0.98


def test_one_changed_decision_among_90_images_is_not_rejected():
    verdict = Gate.for_precision("int8", 1.0).judge(compare([one_class_changed(90, lost=1, changed=3)], LABELS))
    assert verdict.status == "unproven" and not verdict.failures
    line = next(line for line in verdict.unproven if line.startswith("sensitivity of 'd'"))
    assert "sensitivity of 'd' -1.11 pp" in line and "would show it beyond" in line  # -1.11 pp is past the margin


def test_a_true_3pp_sensitivity_drop_on_300_images_is_rejected():
    verdict = Gate.for_precision("int8", 1.0).judge(compare([one_class_changed(300, lost=9)], LABELS))
    assert verdict.status == "rejected"
    assert verdict.failures == [f for f in verdict.failures if "worse than the 1 pp margin" in f]
    assert any("sensitivity of 'a' -3.00 pp" in f for f in verdict.failures)


def test_agreement_on_enough_images_is_accepted_and_require_proof_rejects_unproven():
    assert Gate.for_precision("int8", 1.0).judge(compare([one_class_changed(600, lost=0)], LABELS)).status == "accepted"
    small = compare([one_class_changed(90, lost=0)], LABELS)
    assert Gate.for_precision("int8", 1.0).judge(small).status == "unproven"
    strict = Gate.for_precision("int8", 1.0, require_proof=True).judge(small)
    assert strict.status == "rejected" and strict.failures[0].startswith("unproven (--require-proof)")


def test_images_needed_would_settle_the_margin():
    """The number the gate quotes is the smallest that settles the margin at the observed rates."""
    agree = images_needed(PairedCounts(90, 0, 0, 0), 0.01)
    # 0 discordant of n: the lower limit is -z^2/(n+z^2), above -1 pp from n > z^2 (1 - 0.01) / 0.01
    assert agree == pytest.approx(1.96**2 * 0.99 / 0.01, rel=0.02)  # the search stops within 1%
    assert difference_interval(PairedCounts(agree, 0, 0, 0))[0] > -0.01
    assert difference_interval(PairedCounts(97, 3, 0, 0))[1] > -0.01  # -3 pp on 100 images: not yet shown worse
    worse = images_needed(PairedCounts(97, 3, 0, 0), 0.01)
    assert worse is not None and worse > 100
    m = -(-worse // 100) * 100
    assert difference_interval(PairedCounts(m * 97 // 100, m * 3 // 100, 0, 0))[1] < -0.01
    assert images_needed(PairedCounts(90, 0, 0, 0), 0.0) is None  # a zero margin can never be shown


def test_val_adds_evidence_and_says_which_images():
    test, val = one_class_changed(90, lost=0), one_class_changed(90, lost=0)
    val = Predictions("val", val.y, val.reference, val.exported)
    parity = compare([test, val], LABELS)
    assert parity["evidence"]["splits"] == {"test": 360, "val": 360} and parity["n"] == 360
    accuracy = parity["paired"][0]
    assert accuracy["metric"] == "accuracy" and accuracy["n"] == 720
    assert accuracy["counts_by_split"] == {"test": [360, 0, 0, 0], "val": [360, 0, 0, 0]}
    assert Gate.for_precision("int8", 1.0).judge(compare([test], LABELS)).status == "unproven"
    assert Gate.for_precision("int8", 3.0).judge(compare([test], LABELS)).status == "unproven"  # 90 per class: -4.1 pp
    assert Gate.for_precision("int8", 3.0).judge(parity).status == "accepted"  # 180 per class: -2.1 pp


@pytest.mark.parametrize("per_class", [90, 300, 1000])
def test_simulated_false_accept_rate_at_the_margin_is_at_most_5_percent(per_class):
    """A class whose true sensitivity drop is exactly the margin (1 pp), others unchanged: under
    --require-proof the gate may accept at most 5% of splits (nominal: 2.5%)."""
    rng = np.random.default_rng(per_class)
    gate = Gate.for_precision("int8", 1.0, require_proof=True)
    accepted, trials = 0, 400
    for _ in range(trials):
        y = np.repeat(np.arange(len(LABELS)), per_class)
        ref, exp = np.ones(len(y), bool), np.ones(len(y), bool)
        where = np.flatnonzero(y == 0)
        cell = rng.choice(4, size=len(where), p=[0.92, 0.02, 0.01, 0.05])  # both, ref only, export only, neither
        ref[where] = np.isin(cell, (0, 1))
        exp[where] = np.isin(cell, (0, 2))
        accepted += gate.judge(paired_only(outcomes(y, ref, exp))).status == "accepted"
    assert accepted / trials <= 0.05


@pytest.mark.parametrize("per_class", [90, 300])
def test_simulated_identical_export_is_rarely_rejected(per_class):
    """A truly equivalent export (as many images gained as lost, at random, 2% each) is rejected in at most 5% of splits."""
    rng = np.random.default_rng(per_class + 1)
    gate = Gate.for_precision("int8", 1.0)
    rejected, trials = 0, 400
    for _ in range(trials):
        y = np.repeat(np.arange(len(LABELS)), per_class)
        cell = rng.choice(4, size=len(y), p=[0.90, 0.02, 0.02, 0.06])
        parity = paired_only(outcomes(y, np.isin(cell, (0, 1)), np.isin(cell, (0, 2))))
        rejected += gate.judge(parity).status == "rejected"
    assert rejected / trials <= 0.05


def test_float_gates_keep_their_exact_bounds():
    identical = compare([one_class_changed(50, lost=0)], LABELS)
    assert Gate.for_precision("fp32", 1.0).judge(identical).status == "accepted"
    flipped = compare([one_class_changed(50, lost=1)], LABELS)
    verdict = Gate.for_precision("fp32", 1.0).judge(flipped)
    assert verdict.status == "rejected" and "1 of 200 decisions flipped" in verdict.failures[0]
    assert Gate.for_precision("fp16", 1.0).judge(flipped).status == "rejected"  # 0.5% > 0.1%


def test_identical_predictions_measure_no_change_at_all():
    """Export == reference on random probabilities: no flip, no probability difference, every paired change 0
    with McNemar p = 1 and an interval around 0; the exact fp32 gate accepts, with nothing to retry."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, len(LABELS), 500)
    probs = rng.dirichlet(np.ones(len(LABELS)), 500)
    parity = compare([Predictions("test", y, probs, probs.copy())], LABELS)
    assert parity["flips"] == parity["evidence"]["flips"] == 0
    assert parity["max_abs_prob_diff"] == parity["mean_abs_prob_diff"] == parity["evidence"]["max_abs_prob_diff"] == 0
    assert parity["accuracy"] == parity["reference_accuracy"] and parity["accuracy_drop_pp"] == 0
    assert set(parity["sensitivity_drop_pp"].values()) == set(parity["specificity_drop_pp"].values()) == {0}
    assert all(m["change_pp"] == 0 and m["mcnemar_p"] == 1 and m["ci_pp"][0] < 0 < m["ci_pp"][1] for m in parity["paired"])
    verdict = Gate.for_precision("fp32", 1.0).judge(parity)
    assert (verdict.status, verdict.failures, verdict.worth_retrying) == ("accepted", [], False)


@pytest.mark.parametrize(("precision", "drift", "status"), [
    ("fp32", 5e-5, "accepted"), ("fp32", 5e-4, "rejected"),  # |dp| <= 1e-4
    ("fp16", 5e-3, "accepted"), ("fp16", 2e-2, "rejected"),  # |dp| <= 1e-2
    ("int8", 2e-2, "accepted"),  # a quantized export is judged on its decisions only
])
def test_probabilities_that_move_without_flipping_a_decision_meet_only_the_float_bounds(precision, drift, status):
    """Every image's decided class loses `drift` to the next class, so no decision changes: only the exact
    |dp| bounds of fp32 and fp16 can reject it, and the failure names the probability difference."""
    agree = one_class_changed(600, lost=0)
    moved, rows = agree.exported.copy(), np.arange(len(agree))
    decided = moved.argmax(1)
    moved[rows, decided] -= drift
    moved[rows, (decided + 1) % len(LABELS)] += drift
    parity = compare([Predictions("test", agree.y, agree.reference, moved)], LABELS)
    assert parity["flips"] == 0 and parity["max_abs_prob_diff"] == pytest.approx(drift)
    verdict = Gate.for_precision(precision, 1.0).judge(parity)
    assert verdict.status == status
    assert [f.startswith("max |dp|") for f in verdict.failures] == ([True] if status == "rejected" else [])


RULE = DecisionRule(tuple(LABELS), positive="d", threshold=0.3)


def operating_point_case() -> Predictions:
    """42 images: 40 on which every rule agrees, and two that change, each seen by one rule only.

    Image 41 (a 'd'): 'a' by argmax in both models; by RULE 'd' in the reference (0.35) and 'a' in the export (0.25).
    Image 42 (an 'a'): 'd' by RULE in both models (0.40, 0.34); by argmax 'a' in the reference and 'b' in the export.
    """
    agree = one_class_changed(10, lost=0)
    reference = np.array([[0.50, 0.10, 0.05, 0.35], [0.45, 0.10, 0.05, 0.40]])
    exported = np.array([[0.50, 0.15, 0.10, 0.25], [0.30, 0.36, 0.00, 0.34]])
    return Predictions("test", np.concatenate([agree.y, [3, 0]]), np.concatenate([agree.reference, reference]),
                       np.concatenate([agree.exported, exported]))


@pytest.mark.parametrize(("decide", "changed"), [(None, "a"), (RULE.decide, "d")], ids=["argmax", "operating point"])
def test_the_decision_rule_decides_which_images_count_as_flips(decide, changed):
    """The same probabilities flip a different image under argmax and under an operating point on 'd':
    the flip and the sensitivity that changes follow the rule passed to `compare`."""
    parity = compare([operating_point_case()], LABELS, **({} if decide is None else {"decide": decide}))
    assert parity["flips"] == 1
    assert [m["class"] for m in parity["paired"] if m["metric"] == "sensitivity" and m["change_pp"] != 0] == [changed]


def test_flips_on_val_alone_fail_the_exact_gate_and_are_bounded_over_every_split():
    """The test split's own figures stay clean, but the exact gate and the Clopper-Pearson bound read every evidence split."""
    test, val = one_class_changed(100, lost=0), one_class_changed(100, lost=1)
    parity = compare([test, Predictions("val", val.y, val.reference, val.exported)], LABELS)
    assert (parity["flips"], parity["max_abs_prob_diff"]) == (0, 0)
    evidence = parity["evidence"]
    assert evidence["flips_by_split"] == {"test": 0, "val": 1} and evidence["n"] == 800
    assert evidence["flip_rate"] == 1 / 800 and evidence["flip_rate_upper"] == flip_upper(1, 800)
    assert evidence["max_abs_prob_diff"] == pytest.approx(0.9 - 0.1 / 3)  # the flipped image's two classes swap
    verdict = Gate.for_precision("fp32", 1.0).judge(parity)
    assert verdict.status == "rejected" and verdict.failures[0].startswith("1 of 800 decisions flipped")


def test_a_class_absent_from_the_evidence_is_not_compared_and_does_not_block_the_gate():
    """A label with no image: no sensitivity to compare (only its specificity), null drops and ROC-AUC, and an
    export that agrees everywhere else is still accepted."""
    agree = one_class_changed(600, lost=0)
    no_e = np.zeros((len(agree), 1))  # the fifth class's probability
    parity = compare([Predictions("test", agree.y, np.hstack([agree.reference, no_e]), np.hstack([agree.exported, no_e]))], [*LABELS, "e"])
    assert [m["metric"] for m in parity["paired"] if m["class"] == "e"] == ["specificity"]
    assert parity["sensitivity_drop_pp"]["e"] is None and parity["metrics"]["per_class"]["e"]["roc_auc"] is None
    assert Gate.for_precision("int8", 1.0).judge(parity).status == "accepted"


@pytest.mark.parametrize(("precision", "margin", "per_class", "lost", "status", "shown_drop", "retry"), [
    ("fp32", 1.0, 50, 1, "rejected", False, True),
    ("int8", 1.0, 600, 0, "accepted", False, False),
    ("int8", 1.0, 90, 0, "unproven", False, False),  # only lacks images: no converter setting can add them
    ("int8", 3.0, 300, 6, "unproven", True, True),  # -2 pp shown below 0, not yet beyond the 3 pp margin
    ("int8", 1.0, 300, 9, "rejected", True, True),
], ids=["fp32 flip", "agrees on enough", "agrees on too few", "drop not settled", "drop beyond margin"])
def test_a_verdict_is_worth_retrying_only_when_other_settings_could_help(precision, margin, per_class, lost, status, shown_drop, retry):
    verdict = Gate.for_precision(precision, margin).judge(compare([one_class_changed(per_class, lost=lost)], LABELS))
    assert (verdict.status, verdict.shown_drop, verdict.worth_retrying) == (status, shown_drop, retry)


def test_unproven_figures_come_least_settled_first_with_the_images_that_would_settle_them():
    """The pipeline prints the first unproven line: the figure whose interval reaches lowest ('a', which lost two
    images) comes first, and each line quotes `images_needed` for its counts at the margin as a proportion."""
    parity = compare([one_class_changed(90, lost=2)], LABELS)
    verdict = Gate.for_precision("int8", 1.0).judge(parity)
    lows = [float(re.search(r"CI \[([-+][\d.]+),", line).group(1)) for line in verdict.unproven]
    assert len(lows) == 5 and lows == sorted(lows)  # accuracy and the four sensitivities
    assert verdict.unproven[0].startswith("sensitivity of 'a'") and verdict.unproven[-1].startswith("accuracy")
    b = next(line for line in verdict.unproven if line.startswith("sensitivity of 'b'"))
    assert f"about {images_needed(PairedCounts(90, 0, 0, 0), 0.01)} at these rates would show it within" in b


def test_simulated_true_3pp_drop_on_1000_images_a_class_is_caught():
    """Power: a class truly losing 3 pp (each of its images lost with probability 3%, none gained) against a 1 pp
    margin is rejected in at least 95% of random splits of 1000 images per class, and never accepted
    (benchmarks/gate_simulation.py measured 99.7%)."""
    rng = np.random.default_rng(3)
    gate = Gate.for_precision("int8", 1.0)
    y = np.repeat(np.arange(len(LABELS)), 1000)
    where = np.flatnonzero(y == 0)
    statuses = []
    for _ in range(100):
        exp_right = np.ones(len(y), bool)
        exp_right[where] = rng.random(len(where)) >= 0.03
        statuses.append(gate.judge(paired_only(outcomes(y, np.ones(len(y), bool), exp_right))).status)
    assert statuses.count("rejected") >= 95 and "accepted" not in statuses
