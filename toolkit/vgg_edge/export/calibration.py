"""Calibration data for the int8 quantizers: a seeded, stratified sample of the run's TRAIN split.

Never the test split: the parity gate measures on it, and calibrating on the images that judge
the result would flatter it. The chosen files (path, label, sha256) and one hash over the list
go into the manifest, so the calibration set of any artifact can be named and reproduced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..data import Entry, SplitManifest, load_split
from ..errors import VggEdgeError
from ..ui import progress


@dataclass
class CalibrationSet:
    pixels: np.ndarray  # (n, s, s, 3) uint8
    entries: list[Entry]
    seed: int

    @property
    def sha256(self) -> str:
        """Hash of the sorted file list with each file's content hash: same set, same hash."""
        lines = sorted(f"{e.path}\t{e.label}\t{e.sha256}" for e in self.entries)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def record(self) -> dict:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.label] = counts.get(e.label, 0) + 1
        return {
            "split": "train", "size": len(self.entries), "seed": self.seed, "sha256": self.sha256,
            "per_class": counts, "files": [{"path": e.path, "label": e.label, "sha256": e.sha256} for e in self.entries],
        }


def select(split: SplitManifest, size: int, seed: int = 0) -> list[Entry]:
    """Exactly `size` train entries, allocated to classes in proportion to their counts (at least one each)."""
    train = split.files("train")
    if size < len(split.labels):
        raise VggEdgeError(f"--calibration-size {size}: needs at least one image per class ({len(split.labels)}); pass a larger size")
    if not train:
        raise VggEdgeError(f"{split.data_root}: the run's split has no train images to calibrate on; re-run `vgg-edge train`")
    size = min(size, len(train))
    by_label = {lab: sorted((e for e in train if e.label == lab), key=lambda e: e.path) for lab in split.labels}
    quota = _largest_remainder(size, {lab: len(files) for lab, files in by_label.items()})
    rng = np.random.default_rng(seed)
    chosen = []
    for lab, files in by_label.items():
        picks = rng.choice(len(files), size=min(quota[lab], len(files)), replace=False)
        chosen.extend(files[i] for i in sorted(picks))
    return chosen


def load(split: SplitManifest, image_size: int, size: int, seed: int = 0) -> CalibrationSet:
    """Select and decode (hash-verified) the calibration images."""
    entries = select(split, size, seed)
    subset = SplitManifest(split.data_root, split.labels, entries, split.seed)
    with progress("decode calibration", len(entries)) as advance:
        loaded, _ = load_split(subset, "train", image_size, on_progress=advance)
    if loaded.failures:
        raise VggEdgeError(f"{next(iter(loaded.failures))}: calibration image no longer decodes; restore the data folder")
    return CalibrationSet(loaded.pixels, entries, seed)


class CalibrationReader:
    """What the three quantizers read: float32 NHWC batches of raw 0-255 pixels, restartable.

    onnxruntime wraps it in a `CalibrationDataReader`, TFLite in a representative-dataset
    generator, NNCF in an `nncf.Dataset`: one source, three adaptors of a few lines each.
    """

    def __init__(self, calibration: CalibrationSet, batch_size: int = 1):
        self.calibration = calibration
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.calibration.pixels) // self.batch_size)

    def batches(self) -> Iterator[np.ndarray]:
        pixels = self.calibration.pixels
        for start in range(0, len(pixels), self.batch_size):
            yield pixels[start:start + self.batch_size].astype(np.float32)


def _largest_remainder(size: int, counts: dict[str, int]) -> dict[str, int]:
    """Integer shares of `size` proportional to `counts`, at least 1 each, summing to `size` (Hamilton's method)."""
    total = sum(counts.values())
    exact = {lab: size * n / total for lab, n in counts.items()}
    quota = {lab: max(1, int(x)) for lab, x in exact.items()}
    by_remainder = sorted(counts, key=lambda lab: (exact[lab] - int(exact[lab]), counts[lab]), reverse=True)
    for lab in by_remainder:  # hand out what flooring left over, largest remainder first
        if sum(quota.values()) >= size:
            break
        if quota[lab] < counts[lab]:
            quota[lab] += 1
    while sum(quota.values()) > size:  # the minimum of one per class overshot: trim the largest
        quota[max(quota, key=quota.get)] -= 1
    return quota
