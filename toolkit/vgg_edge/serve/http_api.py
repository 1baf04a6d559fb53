"""The HTTP front door (FastAPI): applications send an image or a DICOM file and get the result as JSON.

    POST /v1/predict   the file as the raw body (Content-Type image/png, application/dicom, ...) or as a
                       multipart form field `file`; 200 with the result record, 413 over the upload limit,
                       415 for a type that is no image, 422 for a file that does not decode, 503 when the
                       queue is full (with Retry-After), 401 without the bearer token when one is set
    GET  /health       200 while the process runs
    GET  /ready        200 when the model is loaded and the queue has room, else 503
    GET  /metrics      Prometheus text format (bearer token required when one is set)

(No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time.)

Uploads go through the same spool and engine as DICOM (so they are batched with everything else).
The upload's name is kept as data in the result, never used in a path.
"""

import asyncio
import hmac

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from .engine import Engine, Job, Overloaded
from .spool import Spool

#: Upload content types and the suffix the spooled file gets (the reader picks its decoder by content anyway).
SUFFIXES = {"application/dicom": ".dcm", "image/png": ".png", "image/jpeg": ".jpg", "image/bmp": ".bmp", "image/tiff": ".tif",
            "image/webp": ".webp", "image/gif": ".gif", "application/octet-stream": ""}


def create_app(engine: Engine, spool: Spool, max_upload_bytes: int, token: str | None = None, ready=lambda: True):
    """The FastAPI application over `engine`; `ready()` says whether the service has finished starting."""
    app = FastAPI(title="vgg-edge serve", docs_url=None, redoc_url=None, openapi_url=None)

    def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def read_limited(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload_bytes:
            raise HTTPException(413, f"upload over the {max_upload_bytes}-byte limit")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_upload_bytes:
                raise HTTPException(413, f"upload over the {max_upload_bytes}-byte limit")
        return bytes(body)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def is_ready() -> Response:
        if ready() and engine.has_room():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return PlainTextResponse(generate_latest(engine.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        authorize(request)
        kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        body = await read_limited(request)
        filename = None
        if kind == "multipart/form-data":
            data, filename, kind = await _form_file(request, body)
        else:
            data = body
        suffix = SUFFIXES.get(kind)
        if suffix is None:
            raise HTTPException(415, f"content type {kind} is not an image; send PNG, JPEG, BMP, TIFF, WebP, GIF or application/dicom")
        if not data:
            raise HTTPException(400, "empty upload")
        if not engine.has_room():
            engine.refused.labels("http").inc()
            return JSONResponse({"detail": "overloaded: the queue is full; retry later"}, status_code=503, headers={"Retry-After": "1"})
        spooled = await asyncio.to_thread(spool.put, data, suffix or _sniff(data), "http")
        try:
            done = engine.submit(Job(spooled, {"filename": filename} if filename else {}))
        except Overloaded:
            spool.remove([spooled])
            engine.refused.labels("http").inc()
            return JSONResponse({"detail": "overloaded: the queue is full; retry later"}, status_code=503, headers={"Retry-After": "1"})
        engine.received.labels("http").inc()
        record = await asyncio.wrap_future(done)
        return JSONResponse(record, status_code=422 if record["error"] else 200)

    return app


async def _form_file(request: Request, body: bytes) -> tuple[bytes, str | None, str]:
    """The multipart field `file`: its bytes, its name (data only) and its declared content type."""

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive).form(max_files=1, max_fields=4)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, "multipart upload without a `file` field")
    kind = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    return await upload.read(), upload.filename or None, kind


def _sniff(data: bytes) -> str:
    """A suffix for an untyped upload: `.dcm` for DICOM part-10 bytes, else none (Pillow identifies rasters by content)."""
    return ".dcm" if data[128:132] == b"DICM" else ""
