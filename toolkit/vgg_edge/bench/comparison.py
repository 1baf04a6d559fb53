"""Two bench.json files side by side: the ratios behind `vgg-edge bench --compare` and its CI gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import VggEdgeError
from ..fileio import read_json
from .runner import SCHEMA


@dataclass(frozen=True)
class Comparison:
    """One target, thread count and batch size measured in both files: old and new median latency and throughput."""

    key: str
    threads: int
    batch: int
    old_p50_ms: float
    new_p50_ms: float
    old_throughput: float
    new_throughput: float

    @property
    def latency_ratio(self) -> float:
        """New median latency over old: above 1 is slower."""
        return self.new_p50_ms / self.old_p50_ms

    @property
    def throughput_ratio(self) -> float:
        """New throughput over old: below 1 is slower."""
        return self.new_throughput / self.old_throughput


def load_bench(path: Path) -> dict:
    """A bench.json document; a file of another kind or schema version is a one-line error."""
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise VggEdgeError(f"{path}: not a {SCHEMA} file; pass a bench.json written by this version of `vgg-edge bench`")
    return doc


def compare(new: dict, old: dict) -> list[Comparison]:
    """Measurements present in both files, matched on target key, thread count and batch size."""
    before = {(t["key"], m["threads"], m["batch"]): m for t in old["targets"] for m in t["measurements"]}
    out = []
    for t in new["targets"]:
        for m in t["measurements"]:
            prev = before.get((t["key"], m["threads"], m["batch"]))
            if prev:
                out.append(Comparison(t["key"], m["threads"], m["batch"], prev["latency_ms"]["p50"], m["latency_ms"]["p50"],
                                      prev["throughput_ips"], m["throughput_ips"]))
    return out


def regressions(comparisons: list[Comparison], max_ratio: float) -> list[Comparison]:
    """Comparisons whose median latency grew by more than `max_ratio` (1.10: more than 10% slower)."""
    return [c for c in comparisons if c.latency_ratio > max_ratio]
