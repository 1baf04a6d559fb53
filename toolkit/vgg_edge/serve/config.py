"""`ServeConfig`: every setting of `vgg-edge serve`, its defaults and their validation (the CLI reads both)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import VggEdgeError, check_range


@dataclass
class ServeConfig:
    artifact: Path
    out: Path  # spool/ and results.jsonl
    host: str = "127.0.0.1"  # loopback unless told otherwise
    dicom_port: int = 11112  # 0: no DICOM SCP
    http_port: int = 8080  # 0: no HTTP API
    ae_title: str = "VGGEDGE"
    allow_ae: tuple[str, ...] = ()  # calling AE titles accepted; empty: any
    token: str | None = None  # bearer token required by POST /v1/predict and /metrics
    max_upload_bytes: int = 64 * 1024 * 1024
    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 256
    threads: int | None = None
    device: str = "CPU"

    def check(self) -> None:
        for option, value, low, high in (("--dicom-port", self.dicom_port, 0, 65535), ("--http-port", self.http_port, 0, 65535),
                                         ("--max-batch", self.max_batch, 1, 1024), ("--max-wait-ms", self.max_wait_ms, 0, 10_000),
                                         ("--queue-size", self.queue_size, 1, None), ("--max-upload-mb", self.max_upload_bytes, 1, None)):
            check_range(option, value, low, high)
        if not self.dicom_port and not self.http_port:
            raise VggEdgeError("--dicom-port 0 and --http-port 0: nothing to serve; open at least one")
        if not 1 <= len(self.ae_title) <= 16:
            raise VggEdgeError(f"--ae-title {self.ae_title!r}: a DICOM AE title has 1 to 16 characters")
