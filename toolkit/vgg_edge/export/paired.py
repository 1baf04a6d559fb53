"""Paired statistics for the parity gate: the Keras model and the export judged on the same images.

Every image gives a pair of outcomes (reference right?, export right?), so a change in accuracy or
in a class's sensitivity is a difference of *paired* proportions. Only the discordant images (right
in one model only) carry information about it; the images both get right or both get wrong do not.

- `PairedCounts`: the 2x2 table (both right, only the reference right, only the export right, both wrong).
- `difference_interval`: Tango's score interval for the difference (export minus reference)
  of paired proportions (T. Tango, Stat. Med. 17:891-908, 1998). It keeps its coverage with few
  discordant images and with empty cells, where the Wald interval collapses to a point: an export
  that agrees on all of 90 images is not "proven equal", it is known to within about 4 points.
- `mcnemar_p`: McNemar's exact test (a binomial test on the discordant images, scipy).
- `flip_upper`: the Clopper-Pearson upper bound of a flip rate (scipy's beta distribution).
- `images_needed`: how many images, at the observed rates, would let the interval settle a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEARCH_LIMIT = 10_000_000  # images: beyond this `images_needed` answers None ("no realistic split")


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of the same images under two models; `export_only` = right only in the export."""

    both: int
    reference_only: int
    export_only: int
    neither: int

    @classmethod
    def from_outcomes(cls, reference_right: np.ndarray, export_right: np.ndarray) -> PairedCounts:
        r, e = np.asarray(reference_right, bool), np.asarray(export_right, bool)
        return cls(int((r & e).sum()), int((r & ~e).sum()), int((~r & e).sum()), int((~r & ~e).sum()))

    def __add__(self, other: PairedCounts) -> PairedCounts:
        return PairedCounts(*(a + b for a, b in zip(self.cells, other.cells)))

    @property
    def cells(self) -> tuple[int, int, int, int]:
        return self.both, self.reference_only, self.export_only, self.neither

    @property
    def n(self) -> int:
        return sum(self.cells)

    @property
    def change(self) -> float:
        """Export minus reference proportion (negative: the export is worse)."""
        return (self.export_only - self.reference_only) / self.n if self.n else 0.0


def _score(b: float, c: float, n: float, delta: float) -> float:
    """Tango's score statistic for H0: difference = delta (b: export-only right, c: reference-only right).

    The restricted maximum-likelihood estimate of the reference-only cell probability under H0 is
    the root of 2n q^2 + w q - c delta (1 - delta) = 0, with w = -b - c + (2n - b + c) delta.
    """
    w = -b - c + (2 * n - b + c) * delta
    q = (math.sqrt(w * w + 8 * n * c * delta * (1 - delta)) - w) / (4 * n)
    variance = n * (2 * q + delta * (1 - delta))
    return (b - c - n * delta) / math.sqrt(max(variance, 1e-300))


def _limit(b: float, c: float, n: float, confidence: float, side: int) -> float:
    """Tango's lower (side -1) or upper (side +1) limit, for real-valued counts (`images_needed` scales them)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    point, eps = (b - c) / n, 1e-12
    # The statistic falls as delta rises: the lower limit is where it crosses +z, the upper where it crosses -z.
    if side < 0:
        if _score(b, c, n, -1 + eps) <= z:
            return -1.0
        return brentq(lambda d: _score(b, c, n, d) - z, -1 + eps, min(point, 1 - eps) - eps)
    if _score(b, c, n, 1 - eps) >= -z:
        return 1.0
    return brentq(lambda d: _score(b, c, n, d) + z, max(point, -1 + eps) + eps, 1 - eps)


def difference_interval(counts: PairedCounts, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided `confidence` interval of the export-minus-reference difference, as proportions."""
    if counts.n == 0:
        return -1.0, 1.0
    b, c, n = counts.export_only, counts.reference_only, counts.n
    return _limit(b, c, n, confidence, -1), _limit(b, c, n, confidence, +1)


def mcnemar_p(counts: PairedCounts) -> float:
    """McNemar's exact two-sided p-value: are the two kinds of discordant image equally likely?"""
    from scipy.stats import binomtest

    discordant = counts.export_only + counts.reference_only
    return 1.0 if discordant == 0 else float(binomtest(counts.export_only, discordant, 0.5).pvalue)


def flip_upper(flips: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson upper limit of a flip rate (the two-sided interval's upper end)."""
    from scipy.stats import beta

    if n == 0 or flips >= n:
        return 1.0
    return float(beta.ppf(0.5 + confidence / 2, flips + 1, n - flips))


def images_needed(counts: PairedCounts, margin: float, confidence: float = 0.95) -> int | None:
    """Images at which, with the same observed rates, the interval would settle the margin.

    Settling means the lower limit above -margin (the export shown within it) when the observed
    change is above -margin, else the upper limit below -margin (shown worse). None when no
    split up to `SEARCH_LIMIT` images would do.
    """
    if counts.n == 0:
        return None
    side = -1 if counts.change > -margin else +1
    rate_b, rate_c = counts.export_only / counts.n, counts.reference_only / counts.n

    def settled(n: float) -> bool:
        limit = _limit(rate_b * n, rate_c * n, n, confidence, side)
        return limit > -margin if side < 0 else limit < -margin

    if settled(counts.n):
        return counts.n
    if not settled(SEARCH_LIMIT):
        return None
    low, high = counts.n, SEARCH_LIMIT  # settled(high); bisect on a log scale to within 1%
    while high > 1.01 * low:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if settled(mid) else (mid, high)
    return math.ceil(high)
