"""Start the service, recover what a previous process accepted, run until told to stop, stop without loss.

Start-up order: open the artifact (manifest verified, a rejected one refused), open the spool and
the results log, start the engine, queue the spooled images a previous process acknowledged but
did not classify, then open the front doors. Stop (SIGTERM or Ctrl-C): close the DICOM port, let
HTTP requests in flight finish, classify every image already accepted, then exit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import VggEdgeError
from ..runtime import load_artifact
from .config import ServeConfig
from .engine import Engine
from .spool import RESULTS, ResultLog, Spool


def serve(config: ServeConfig, on_ready: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> dict:
    """Run until `stop` is set (by SIGTERM/SIGINT when called from the main thread); returns a summary."""
    config.check()
    predictor = load_artifact(config.artifact, threads=config.threads, device=config.device)
    info = predictor.info
    out = Path(config.out)
    spool, log = Spool(out), ResultLog(out)
    artifact = {"artifact": str(info.path.resolve()), "format": info.format, "precision": info.precision, "parity": info.status,
                "model_sha256": info.files[info.model_file]["sha256"]}
    if config.dicom_port:
        from .dicom_scp import start_scp  # pynetdicom (and pydicom) imported before any thread starts
    engine = Engine(predictor, spool, log, artifact, config.max_batch, config.max_wait_ms, config.queue_size)
    engine.start()
    recovered = engine.recover()

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    started = threading.Event()
    scp = http = http_thread = None
    try:
        if config.dicom_port:
            scp = start_scp(engine, spool, config.host, config.dicom_port, config.ae_title, config.allow_ae)
        if config.http_port:
            http, http_thread = _start_http(engine, spool, config, started.is_set)
        started.set()
        summary = {"artifact": artifact, "out": str(out), "results": str(out / RESULTS), "recovered": recovered,
                   "dicom": f"{config.ae_title}@{config.host}:{config.dicom_port}" if scp else None,
                   "http": f"http://{config.host}:{config.http_port}" if http else None}
        if on_ready:
            on_ready(summary)
        stop.wait()
    finally:
        if scp:
            scp.shutdown()
        if http:
            http.should_exit = True
            http_thread.join(30)
        engine.stop()
    return summary


def _start_http(engine: Engine, spool: Spool, config: ServeConfig, ready: Callable[[], bool]):
    """uvicorn in a thread of its own (signals stay with the main thread); returns once it listens."""
    import uvicorn

    from .http_api import create_app

    app = create_app(engine, spool, config.max_upload_bytes, config.token, ready)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.http_port, log_level="warning", access_log=False,
                                           lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, name="vgg-edge-http", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise VggEdgeError(f"--http-port {config.http_port}: cannot listen on {config.host}:{config.http_port} (in use?)")
        thread.join(0.05)
    return server, thread
