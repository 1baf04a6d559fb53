"""The parity gate: the exported model, run in its edge runtime, against the Keras model, on the
run's recorded test split.

`compare` measures (accuracy, per-class sensitivity/specificity, ROC-AUC and their drops, the
decision-flip rate, the probability differences); `Gate` holds the bounds a precision must
meet and says, in words, which ones it missed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..metrics import classification_metrics


@dataclass(frozen=True)
class Gate:
    """Bounds; None means not checked. Drops are in percentage points."""

    max_flip_rate: float | None = None
    max_prob_diff: float | None = None
    max_drop_pp: float | None = None

    @classmethod
    def for_precision(cls, precision: str, max_drop: float) -> Gate:
        """fp32: no flipped decision, |dp| <= 1e-4; fp16: <= 0.1% flips, |dp| <= 1e-2; quantized: --max-drop."""
        if precision == "fp32":
            return cls(max_flip_rate=0.0, max_prob_diff=1e-4)
        if precision == "fp16":
            return cls(max_flip_rate=0.001, max_prob_diff=1e-2)
        return cls(max_drop_pp=max_drop)

    def failures(self, parity: dict) -> list[str]:
        """One sentence per missed bound; empty when the artifact passes."""
        missed = []
        if self.max_flip_rate is not None and parity["flip_rate"] > self.max_flip_rate:
            missed.append(f"{parity['flips']} of {parity['n']} decisions flipped (rate {parity['flip_rate']:.4%} > {self.max_flip_rate:.2%})")
        if self.max_prob_diff is not None and parity["max_abs_prob_diff"] > self.max_prob_diff:
            missed.append(f"max |dp| {parity['max_abs_prob_diff']:.2e} > {self.max_prob_diff:.0e}")
        if self.max_drop_pp is not None:
            if parity["accuracy_drop_pp"] > self.max_drop_pp:
                missed.append(f"accuracy drop {parity['accuracy_drop_pp']:.2f} pp > {self.max_drop_pp:g} pp")
            for label, drop in parity["sensitivity_drop_pp"].items():
                if drop is not None and drop > self.max_drop_pp:
                    missed.append(f"sensitivity of {label!r} drops {drop:.2f} pp > {self.max_drop_pp:g} pp")
        return missed

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def compare(y: np.ndarray, reference: np.ndarray, exported: np.ndarray, labels: list[str]) -> dict:
    """Parity figures of `exported` against `reference` probabilities on the same images."""
    ref = classification_metrics(y, reference, labels)
    new = classification_metrics(y, exported, labels)
    diff = np.abs(exported.astype(np.float64) - reference.astype(np.float64))
    flips = int((exported.argmax(axis=1) != reference.argmax(axis=1)).sum())

    def drops(key: str) -> dict:
        return {lab: _pp(ref["per_class"][lab][key], new["per_class"][lab][key]) for lab in labels}

    return {
        "n": len(y),
        "reference_accuracy": ref["accuracy"],
        "accuracy": new["accuracy"],
        "accuracy_drop_pp": _pp(ref["accuracy"], new["accuracy"]),
        "sensitivity_drop_pp": drops("sensitivity"),
        "specificity_drop_pp": drops("specificity"),
        "reference_roc_auc_macro": ref["roc_auc_macro"],
        "roc_auc_macro": new["roc_auc_macro"],
        "flips": flips,
        "flip_rate": flips / len(y) if len(y) else 0.0,
        "max_abs_prob_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_prob_diff": float(diff.mean()) if diff.size else 0.0,
        "reference_metrics": ref,
        "metrics": new,
    }


def _pp(before: float | None, after: float | None) -> float | None:
    """Drop in percentage points (positive: worse)."""
    return None if before is None or after is None else 100.0 * (before - after)
