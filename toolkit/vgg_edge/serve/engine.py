"""The classifier behind both front doors: a bounded queue and one worker that batches what arrives together.

`submit` never blocks: when `queue_size` images are already waiting it raises `Overloaded`, and the
front door answers that (HTTP 503, DICOM 0xA700) instead of letting memory grow. The worker takes
the first waiting image, then whatever else arrives within `max_wait_ms`, up to `max_batch`
images, and runs them through the model in one call (dynamic micro-batching). Each batch's results
are appended to the log and fsync'ed, and only then are their spool files deleted and their
callers answered (spool.py: exactly one result per acknowledged image, crash or not).

Counters and latencies are Prometheus metrics in the engine's own registry (`/metrics`).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..images import ImageReadError, read_image
from ..runtime import Predictor
from .spool import ResultLog, Spool, Spooled


class Overloaded(Exception):
    """The queue is full: the caller must refuse the image (and the sender retry later)."""


@dataclass
class Job:
    """One accepted image on its way through the engine; `done` resolves to its result record."""

    spooled: Spooled
    meta: dict = field(default_factory=dict)  # sop_instance_uid, calling_ae, filename: data only, never paths
    recovered: bool = False  # found in the spool at start-up (accepted before a crash or stop)
    done: Future = field(default_factory=Future)


def _recorded_meta(spooled: Spooled) -> dict:
    """What a recovered image still tells about itself: a DICOM object's SOP Instance UID."""
    if spooled.source != "dicom":
        return {}
    try:
        import pydicom

        return {"sop_instance_uid": str(pydicom.dcmread(spooled.path, stop_before_pixels=True).SOPInstanceUID)}
    except Exception:  # unreadable: its result will say why
        return {}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")


class Engine:
    """Classifies spooled images with `predictor`, in micro-batches, and logs every result."""

    def __init__(self, predictor: Predictor, spool: Spool, log: ResultLog, artifact: dict,
                 max_batch: int = 16, max_wait_ms: float = 5.0, queue_size: int = 256):
        self.predictor = predictor
        self.spool = spool
        self.log = log
        self.artifact = artifact  # path, format, precision, model_sha256: copied into every record
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vgg-edge-engine", daemon=True)
        self.registry = CollectorRegistry()
        self.received = Counter("vgg_edge_received", "Images accepted (spooled)", ["source"], registry=self.registry)
        self.refused = Counter("vgg_edge_refused", "Images refused because the queue was full", ["source"], registry=self.registry)
        self.results = Counter("vgg_edge_results", "Results written", ["status"], registry=self.registry)
        self.depth = Gauge("vgg_edge_queue_depth", "Images waiting for the model", registry=self.registry)
        self.batch_size = Histogram("vgg_edge_batch_size", "Images per model call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.latency = Histogram("vgg_edge_latency_seconds", "From spooled to result written", registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job, block: bool = False) -> Future:
        """Queue a spooled image; raises Overloaded when the queue is full (unless `block`)."""
        try:
            self._queue.put(job, block=block)
        except queue.Full:
            raise Overloaded from None
        self.depth.set(self.waiting())
        return job.done

    def has_room(self) -> bool:
        return not self._queue.full()

    def waiting(self) -> int:
        """Images queued and not yet taken by the worker."""
        return self._queue.qsize()

    def recover(self) -> int:
        """Queue the images a previous process accepted but did not classify; drop those it did. Returns the count queued."""
        pending = self.spool.pending()
        done = [s for s in pending if s.id in self.log.ids]
        self.spool.remove(done)
        todo = [s for s in pending if s.id not in self.log.ids]
        if any(s.source == "dicom" for s in todo):
            import pydicom  # noqa: F401  (imported here, not first in the thread below: pydicom's import is not thread-safe)
        threading.Thread(target=lambda: [self.submit(Job(s, _recorded_meta(s), recovered=True), block=True) for s in todo],
                         name="vgg-edge-recover", daemon=True).start()
        return len(todo)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every image already accepted, then stop the worker."""
        self._stop.set()
        self._thread.join(timeout)

    def _next_batch(self) -> list[Job]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        self.depth.set(self.waiting())
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch:
                self._classify(batch)

    def _classify(self, batch: list[Job]) -> None:
        """Decode, run the model once for the batch, log the results durably, then answer and clean up."""
        size = self.predictor.image_size
        pixels, ok, errors = [], [], {}
        for job in batch:
            try:
                pixels.append(read_image(job.spooled.path, size))
                ok.append(job)
            except ImageReadError as exc:
                errors[job.spooled.id] = str(exc).replace(str(job.spooled.path), job.meta.get("filename") or "image")
        records = []
        if ok:
            self.batch_size.observe(len(ok))
            probs = self.predictor.predict(np.stack(pixels))
            decided = self.predictor.info.decision.decide(probs)
            labels = self.predictor.labels
            for job, p, k in zip(ok, probs, decided):
                records.append(self._record(job, label=labels[k], probabilities={lab: float(v) for lab, v in zip(labels, p)}))
        records += [self._record(job, error=errors[job.spooled.id]) for job in batch if job.spooled.id in errors]
        self.log.append(records)
        self.spool.remove(job.spooled for job in batch)
        by_id = {r["id"]: r for r in records}
        now = time.time_ns()
        for job in batch:
            record = by_id[job.spooled.id]
            self.results.labels("ok" if record["error"] is None else "error").inc()
            self.latency.observe((now - job.spooled.received_ns) / 1e9)
            job.done.set_result(record)

    def _record(self, job: Job, label: str | None = None, probabilities: dict | None = None, error: str | None = None) -> dict:
        return {
            "id": job.spooled.id, "source": job.spooled.source, **job.meta, "recovered": job.recovered,
            "label": label, "probabilities": probabilities, "error": error,
            "decision": self.predictor.info.decision.record(), **self.artifact,
            "received_at": _iso(job.spooled.received_ns), "classified_at": _iso(time.time_ns()),
        }
