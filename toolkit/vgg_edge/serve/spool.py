"""The two files that make `serve` crash-safe: the spool of accepted images and the results log.

An image is accepted only once its bytes are on disk: written to a temporary name, fsync'ed,
renamed into `spool/` and the folder fsync'ed (`Spool.put`). Only then does the DICOM SCP answer
success (or the HTTP request go on). A result is appended to `results.jsonl` and fsync'ed before
its spool file is deleted. So after a crash at any point:

- an image that was acknowledged is in the spool or in the log (or both);
- on restart, spool files whose id is already in the log are deleted, the others are classified:
  every acknowledged image ends with exactly one result.

Spool names are made here (`<receive time ns>-<random id>.<source><suffix>`), never taken from a request.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import VggEdgeError

RESULTS = "results.jsonl"
SPOOL = "spool"


@dataclass(frozen=True)
class Spooled:
    """One accepted image on disk: its id, path, front door ("dicom" or "http") and when it was received."""

    id: str
    path: Path
    source: str
    received_ns: int

    @classmethod
    def from_path(cls, path: Path) -> Spooled:
        received, rest = path.name.split("-", 1)
        ident, source = rest.split(".")[:2]
        return cls(ident, path, source, int(received))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Accepted images not yet classified: durable files in `<out>/spool/`."""

    def __init__(self, out: Path):
        self.folder = Path(out) / SPOOL
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # a write the crash interrupted was never acknowledged
            stale.unlink(missing_ok=True)

    def put(self, data: bytes, suffix: str, source: str) -> Spooled:
        """Write `data` durably and return its entry; when this returns, the image survives a crash."""
        received = time.time_ns()
        ident = uuid.uuid4().hex
        final = self.folder / f"{received}-{ident}.{source}{suffix}"
        tmp = self.folder / f".{final.name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        return Spooled(ident, final, source, received)

    def pending(self) -> list[Spooled]:
        """Every spooled image, oldest first."""
        return sorted((Spooled.from_path(p) for p in self.folder.iterdir() if not p.name.startswith(".")), key=lambda s: s.received_ns)

    def remove(self, entries: Iterable[Spooled]) -> None:
        for entry in entries:
            entry.path.unlink(missing_ok=True)


class ResultLog:
    """`<out>/results.jsonl`: one JSON object per classified (or failed) image, appended and fsync'ed."""

    def __init__(self, out: Path):
        self.path = Path(out) / RESULTS
        self._lock = threading.Lock()
        self.ids: set[str] = set()
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                self.ids.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                if i == len(lines) - 1:  # a line the crash cut short: its image is still in the spool
                    continue
                raise VggEdgeError(f"{self.path}: line {i + 1} is not a result record; move the file away to start a new log") from None

    def append(self, records: list[dict]) -> None:
        """Append the records and fsync once: a batch's results become durable together."""
        if not records:
            return
        with self._lock, open(self.path, "ab") as handle:
            if handle.tell() and not self._ends_with_newline():
                handle.write(b"\n")  # after a torn last line, start clean
            handle.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
            self.ids.update(r["id"] for r in records)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
