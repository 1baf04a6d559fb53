"""The parity gate: the exported model, run in its edge runtime, against the Keras model on the
same images, and a verdict that knows what those images can prove.

`compare` measures. On the recorded test split: the figures a clinician reads (accuracy,
per-class sensitivity/specificity, ROC-AUC and their drops, decision flips, probability
differences). Over every evidence split (test, plus val unless the converter tuned on it): the
paired 2x2 counts of accuracy and of each class's sensitivity and specificity, each change with
Tango's interval and McNemar's exact p-value, and the flip rate with its Clopper-Pearson bound.
Decisions are the run's own: argmax, or its operating point (decision.py), so a threshold that an
export's probabilities cross differently shows up as flips and as changed sensitivities.

`Gate` judges. fp32 and fp16 keep exact bounds on flips and probabilities. A quantized export is
a non-inferiority question against a margin (`--max-drop`, in points): for accuracy and every
class's sensitivity, the two-sided 95% interval of the change is

- entirely above -margin: shown within the margin;
- entirely below -margin: shown worse than the margin;
- across -margin: not shown either way by these images.

The verdict is `accepted` when every gated figure is shown within, `rejected` when any is shown
worse, and `unproven` otherwise. Accepting needs every figure to pass its own one-sided 2.5% test
(an intersection-union test), so an export that truly loses the margin on one figure is accepted in
at most 2.5% of splits; `--require-proof` turns `unproven` into a rejection for regulated use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..metrics import classification_metrics
from .paired import PairedCounts, difference_interval, flip_upper, images_needed, mcnemar_p

STATUSES = ("accepted", "unproven", "rejected")  # best first
COUNTS_ORDER = ["both right", "only reference right", "only export right", "both wrong"]


@dataclass(frozen=True)
class Predictions:
    """One split's labels, and the reference's and the export's probabilities on the same images."""

    split: str
    y: np.ndarray
    reference: np.ndarray
    exported: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Verdict:
    status: str  # one of STATUSES
    failures: list[str] = field(default_factory=list)  # why rejected
    unproven: list[str] = field(default_factory=list)  # what the images could not settle, and how many would
    shown_drop: bool = False  # some gated figure is shown worse than the reference (its CI lies below 0), margin or not

    @property
    def worth_retrying(self) -> bool:
        """Rejected, or unproven with a real drop: other converter settings may do better. An unproven
        export with no shown drop only lacks images, which no setting can add."""
        return self.status == "rejected" or (self.status == "unproven" and self.shown_drop)


@dataclass(frozen=True)
class Gate:
    """Exact bounds (None: not checked) for float exports; a margin in points for quantized ones."""

    max_flip_rate: float | None = None
    max_prob_diff: float | None = None
    max_drop_pp: float | None = None
    confidence: float = 0.95
    require_proof: bool = False

    @classmethod
    def for_precision(cls, precision: str, max_drop: float, require_proof: bool = False) -> Gate:
        """fp32: no flipped decision, |dp| <= 1e-4; fp16: <= 0.1% flips, |dp| <= 1e-2; quantized: the margin."""
        if precision == "fp32":
            return cls(max_flip_rate=0.0, max_prob_diff=1e-4)
        if precision == "fp16":
            return cls(max_flip_rate=0.001, max_prob_diff=1e-2)
        return cls(max_drop_pp=max_drop, require_proof=require_proof)

    def judge(self, parity: dict) -> Verdict:
        evidence = parity["evidence"]
        failures = []
        if self.max_flip_rate is not None and evidence["flip_rate"] > self.max_flip_rate:
            failures.append(f"{evidence['flips']} of {evidence['n']} decisions flipped (rate {evidence['flip_rate']:.4%} > {self.max_flip_rate:.2%})")
        if self.max_prob_diff is not None and evidence["max_abs_prob_diff"] > self.max_prob_diff:
            failures.append(f"max |dp| {evidence['max_abs_prob_diff']:.2e} > {self.max_prob_diff:.0e}")
        if self.max_drop_pp is None:
            return Verdict("rejected" if failures else "accepted", failures)
        margin, unproven = self.max_drop_pp, []
        gated = [m for m in parity["paired"] if m["gated"]]
        shown_drop = any(m["ci_pp"][1] < 0 for m in gated)
        for m in gated:
            lo, hi = m["ci_pp"]
            said = f"{_name(m)} {m['change_pp']:+.2f} pp, {self.confidence:.0%} CI [{lo:+.2f}, {hi:+.2f}] on {m['n']} images"
            if hi < -margin:
                failures.append(f"{said}: worse than the {margin:g} pp margin")
            elif lo <= -margin:
                needed = images_needed(PairedCounts(*m["counts"]), margin / 100, self.confidence)
                side = "within" if m["change_pp"] > -margin else "beyond"
                enough = f"about {needed} at these rates would show it {side}" if needed else "no realistic number would settle it"
                unproven.append((lo, f"{said}: shows it neither within {margin:g} pp nor beyond; {enough}"))
        unproven = [line for _, line in sorted(unproven, key=lambda item: item[0])]  # least settled first
        if failures:
            return Verdict("rejected", failures, unproven, shown_drop)
        if unproven and self.require_proof:
            return Verdict("rejected", [f"unproven (--require-proof): {line}" for line in unproven], unproven, shown_drop)
        return Verdict("unproven" if unproven else "accepted", [], unproven, shown_drop)

    def record(self) -> dict:
        exact = {"max_flip_rate": self.max_flip_rate, "max_prob_diff": self.max_prob_diff}
        if self.max_drop_pp is None:
            return {k: v for k, v in exact.items() if v is not None}
        return {"max_drop_pp": self.max_drop_pp, "confidence": self.confidence, "require_proof": self.require_proof,
                "rule": "non-inferiority: the two-sided CI (Tango) of each gated change lies above -max_drop_pp"}


Decide = Callable[[np.ndarray], np.ndarray]  # probabilities -> class indices (decision.DecisionRule.decide)


def _argmax(probs: np.ndarray) -> np.ndarray:
    return probs.argmax(axis=1)


def compare(evidence: list[Predictions], labels: list[str], confidence: float = 0.95, decide: Decide = _argmax) -> dict:
    """Parity figures of the export against the reference; `evidence[0]` is the test split.

    Decisions, flips and every paired count are made by `decide`: the run's operating point when it has one.
    """
    test = evidence[0]
    ref = classification_metrics(test.y, test.reference, labels, decide(test.reference))
    new = classification_metrics(test.y, test.exported, labels, decide(test.exported))
    diffs = {p.split: np.abs(p.exported.astype(np.float64) - p.reference.astype(np.float64)) for p in evidence}
    diff = diffs[test.split]
    flips = {p.split: int((decide(p.exported) != decide(p.reference)).sum()) for p in evidence}
    n = sum(len(p) for p in evidence)

    def drops(key: str) -> dict:
        return {lab: _pp(ref["per_class"][lab][key], new["per_class"][lab][key]) for lab in labels}

    return {
        "n": len(test),
        "reference_accuracy": ref["accuracy"],
        "accuracy": new["accuracy"],
        "accuracy_drop_pp": _pp(ref["accuracy"], new["accuracy"]),
        "sensitivity_drop_pp": drops("sensitivity"),
        "specificity_drop_pp": drops("specificity"),
        "reference_roc_auc_macro": ref["roc_auc_macro"],
        "roc_auc_macro": new["roc_auc_macro"],
        "flips": flips[test.split],
        "flip_rate": flips[test.split] / len(test) if len(test) else 0.0,
        "max_abs_prob_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_prob_diff": float(diff.mean()) if diff.size else 0.0,
        "evidence": {
            "splits": {p.split: len(p) for p in evidence}, "n": n, "confidence": confidence, "counts_order": COUNTS_ORDER,
            "flips": sum(flips.values()), "flips_by_split": flips, "flip_rate": sum(flips.values()) / n if n else 0.0,
            "flip_rate_upper": flip_upper(sum(flips.values()), n, confidence),
            "max_abs_prob_diff": max(float(d.max()) if d.size else 0.0 for d in diffs.values()),
        },
        "paired": paired_metrics(evidence, labels, confidence, decide),
        "reference_metrics": ref,
        "metrics": new,
    }


def paired_metrics(evidence: list[Predictions], labels: list[str], confidence: float = 0.95, decide: Decide = _argmax) -> list[dict]:
    """Accuracy, then each class's sensitivity and specificity: paired counts per split and pooled, change, CI, McNemar.

    Gated: accuracy and the sensitivities (as before the statistics); specificities are reported.
    """
    return paired_decisions([Decisions(p.split, p.y, decide(p.reference), decide(p.exported)) for p in evidence], labels, confidence)


@dataclass(frozen=True)
class Decisions:
    """One split's labels and two models' decisions (class indices) on the same images."""

    split: str
    y: np.ndarray
    reference: np.ndarray
    exported: np.ndarray


def paired_decisions(decided: list[Decisions], labels: list[str], confidence: float = 0.95) -> list[dict]:
    """`paired_metrics` from decisions already made, for two models that decide by different rules
    (a pruned run re-chooses its operating point's threshold; `prune` judges it against its source)."""
    outcomes = []  # (metric, class, gated, per split: (reference right, export right) over the metric's images)
    decided = [(d.split, d.y, d.reference, d.exported) for d in decided]
    outcomes.append(("accuracy", None, True, {s: (r == y, e == y) for s, y, r, e in decided}))
    for k, label in enumerate(labels):
        outcomes.append(("sensitivity", label, True, {s: ((r == k)[y == k], (e == k)[y == k]) for s, y, r, e in decided}))
        outcomes.append(("specificity", label, False, {s: ((r != k)[y != k], (e != k)[y != k]) for s, y, r, e in decided}))
    records = []
    for metric, label, gated, by_split in outcomes:
        per_split = {s: PairedCounts.from_outcomes(*pair) for s, pair in by_split.items()}
        pooled = sum(per_split.values(), PairedCounts(0, 0, 0, 0))
        if pooled.n == 0:
            continue  # a class absent from every evidence split: nothing to compare
        lo, hi = difference_interval(pooled, confidence)
        records.append({
            "metric": metric, "class": label, "gated": gated, "n": pooled.n,
            "counts": list(pooled.cells), "counts_by_split": {s: list(c.cells) for s, c in per_split.items()},
            "change_pp": 100 * pooled.change, "ci_pp": [100 * lo, 100 * hi], "mcnemar_p": mcnemar_p(pooled),
        })
    return records


def _name(metric: dict) -> str:
    return metric["metric"] if metric["class"] is None else f"{metric['metric']} of {metric['class']!r}"


def _pp(before: float | None, after: float | None) -> float | None:
    """Drop in percentage points (positive: worse)."""
    return None if before is None or after is None else 100.0 * (before - after)

