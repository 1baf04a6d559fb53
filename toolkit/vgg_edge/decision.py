"""How probabilities become a decision: argmax, or an operating point on the class that matters.

A clinic rarely weighs every mistake alike: a missed tumour or melanoma costs more than a second
look at a benign one. The operating point says "call CLASS whenever its probability reaches t",
with t chosen on the validation split as the highest threshold that still finds `target` of that
class's validation images (`--target-sensitivity malignant=0.95`). Below t the decision is the most
probable other class. The rule is part of the model: train records it in the run, export copies it
into every manifest, the parity gate judges decisions made by it, and predict applies it.

Numpy only: the edge runtime imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VggEdgeError


@dataclass(frozen=True)
class DecisionRule:
    """Argmax (no `positive` class), or: `positive` whenever its probability >= `threshold`."""

    labels: tuple[str, ...]
    positive: str | None = None
    threshold: float | None = None
    target_sensitivity: float | None = None

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class indices for probabilities of shape (n, classes)."""
        probs = np.asarray(probs)
        if self.positive is None:
            return probs.argmax(axis=1)
        k = self.labels.index(self.positive)
        others = probs.copy()
        others[:, k] = -np.inf
        return np.where(probs[:, k] >= self.threshold, k, others.argmax(axis=1))

    def record(self) -> dict | None:
        """What a run and a manifest store (None for argmax)."""
        if self.positive is None:
            return None
        return {"rule": "threshold", "class": self.positive, "threshold": self.threshold,
                "target_sensitivity": self.target_sensitivity, "chosen_on": "val"}

    @classmethod
    def from_record(cls, labels: list[str], doc: dict | None) -> DecisionRule:
        if not doc:
            return cls(tuple(labels))
        if doc.get("rule") != "threshold" or doc.get("class") not in labels or not 0 <= float(doc.get("threshold", -1)) <= 1:
            raise VggEdgeError(f"unreadable decision rule {doc!r}: expected a threshold on one of {', '.join(labels)}")
        return cls(tuple(labels), doc["class"], float(doc["threshold"]), doc.get("target_sensitivity"))

    def describe(self) -> str:
        if self.positive is None:
            return "argmax"
        return f"'{self.positive}' when its probability >= {self.threshold:.4f} (target sensitivity {self.target_sensitivity:g}, chosen on val)"


def choose_threshold(positive_probs: np.ndarray, target: float, all_probs: np.ndarray | None = None) -> float:
    """A threshold that finds `target` of `positive_probs` (the class's own validation images) and no more than it must.

    The highest such threshold is one of the probabilities itself, where an export that computes it
    1e-7 lower would flip that image's decision. So the threshold sits halfway between it and the
    next lower probability of the class among `all_probs` (every validation image): the same
    decisions on validation, with the widest margin either side.
    """
    if len(positive_probs) == 0:
        raise VggEdgeError("the operating point's class has no validation images; add images or drop --target-sensitivity")
    ordered = np.sort(np.asarray(positive_probs, np.float64))
    misses = int(np.floor(len(ordered) * (1.0 - target) + 1e-9))  # positives allowed below the threshold
    highest = ordered[misses]
    pool = np.asarray(positive_probs if all_probs is None else all_probs, np.float64)
    below = pool[pool < highest]
    return float((highest + (below.max() if below.size else 0.0)) / 2)


def parse_target(text: str) -> tuple[str, float]:
    """`CLASS=0.95` -> ("CLASS", 0.95); whether CLASS exists is checked against the data's labels."""
    label, sep, value = text.rpartition("=")
    try:
        target = float(value)
    except ValueError:
        target = -1.0
    if not sep or not label or not 0.0 < target <= 1.0:
        raise VggEdgeError(f"--target-sensitivity {text}: use CLASS=FRACTION with FRACTION in (0, 1], e.g. malignant=0.95")
    return label, target
