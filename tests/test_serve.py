"""`vgg-edge serve` with the clients hospitals use: DCMTK's echoscu/storescu, pynetdicom's SCU, httpx.

Everything runs on loopback against the session's fp32 ONNX export (32 px), bounded in count and
time. The service runs as a real process (`python -m vgg_edge serve`) except where a test must hold
the model still (overload) or build a spool by hand (recovery): those drive the same classes in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from helpers import MNIST, write_dicom
from PIL import Image

from vgg_edge.runtime import load_artifact
from vgg_edge.serve.config import ServeConfig
from vgg_edge.serve.dicom_scp import OUT_OF_RESOURCES, start_scp
from vgg_edge.serve.engine import Engine, Job, Overloaded
from vgg_edge.serve.http_api import create_app
from vgg_edge.serve.service import serve
from vgg_edge.serve.spool import ResultLog, Spool

TOKEN = "s3cret-token"
ALLOWED = "STORESCU,ECHOSCU,PYNETDICOM"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Server:
    """`python -m vgg_edge serve` as a process, on free ports; stopped with SIGTERM (or killed)."""

    def __init__(self, artifact: Path, out: Path, *extra: str):
        self.out, self.dicom, self.http = out, free_port(), free_port()
        token_file = out.parent / f"{out.name}.token"
        token_file.write_text(TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vgg_edge", "serve", str(artifact), "--out", str(out), "--dicom-port", str(self.dicom),
             "--http-port", str(self.http), "--allow-ae", ALLOWED, "--token-file", str(token_file), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for(self._ready, 90, "the server to be ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
        try:
            return httpx.get(f"{self.url}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out + err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def onnx(fp32_exports: Path) -> Path:
    return fp32_exports / "onnx-fp32"


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> list[Path]:
    """Real MNIST test digits as DICOM secondary captures, two per class."""
    folder = tmp_path_factory.mktemp("dicom")
    files = []
    for digit in range(10):
        for png in sorted((MNIST / "test" / str(digit)).glob("*.png"))[:2]:
            files.append(write_dicom(folder / f"{png.stem}.dcm", np.asarray(Image.open(png).convert("L"))))
    return files


@pytest.fixture(scope="module")
def server(onnx: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "out"
    running = Server(onnx, out, "--max-upload-mb", "0.05")
    yield running
    status, output = running.stop()
    assert status == 0 and "stopped: every accepted image has its result" in output, output


def expected_labels(onnx: Path, files: list[Path]) -> dict[str, str]:
    """What `vgg-edge predict` says for each file: the service must say the same."""
    predictions, failures = load_artifact(onnx).classify(files)
    assert not failures
    return {str(pydicom.dcmread(p.path, stop_before_pixels=True).SOPInstanceUID): p.label for p in predictions}


def test_dcmtk_echo_and_store_each_image_gets_predicts_label(server: Server, onnx: Path, dicoms: list[Path]):
    echo = subprocess.run(["echoscu", "-aet", "ECHOSCU", "-aec", "VGGEDGE", "127.0.0.1", str(server.dicom)], capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, echo.stderr
    store = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "VGGEDGE", "127.0.0.1", str(server.dicom), *map(str, dicoms)],
                           capture_output=True, text=True, timeout=60)
    assert store.returncode == 0, store.stderr
    want = expected_labels(onnx, dicoms)
    got = wait_for(lambda: (r := {x["sop_instance_uid"]: x for x in results(server.out) if x.get("sop_instance_uid") in want}) and len(r) == len(want) and r,
                   what="every stored image's result")
    assert {uid: r["label"] for uid, r in got.items()} == want
    manifest = json.loads((onnx / "manifest.json").read_text())
    for r in got.values():
        assert r["calling_ae"] == "STORESCU" and r["source"] == "dicom" and not r["recovered"] and r["error"] is None
        assert r["model_sha256"] == manifest["files"]["model.onnx"]["sha256"] and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["received_at"] <= r["classified_at"]
    assert not list((server.out / "spool").iterdir())  # classified images leave the spool


def test_a_calling_ae_not_allowed_is_rejected_and_nothing_is_stored(server: Server, dicoms: list[Path]):
    before = len(results(server.out))
    store = subprocess.run(["storescu", "-aet", "INTRUDER", "-aec", "VGGEDGE", "127.0.0.1", str(server.dicom), str(dicoms[0])],
                           capture_output=True, text=True, timeout=30)
    assert store.returncode != 0 and "calling ae title not recogni" in store.stderr.lower()  # DCMTK spells it both ways
    time.sleep(0.3)
    assert len(results(server.out)) == before


def test_pynetdicom_scu_stores_get_success_and_results(server: Server, onnx: Path, dicoms: list[Path]):
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom, ae_title="VGGEDGE")
    assert assoc.is_established
    datasets = [pydicom.dcmread(p) for p in dicoms[:4]]
    for ds in datasets:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()  # new objects, new results
        assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    uids = {str(ds.SOPInstanceUID) for ds in datasets}
    wait_for(lambda: uids <= {r.get("sop_instance_uid") for r in results(server.out)}, what="the pynetdicom images' results")
    assert all(r["calling_ae"] == "PYNETDICOM" for r in results(server.out) if r.get("sop_instance_uid") in uids)


def test_http_api_with_httpx(server: Server, onnx: Path):
    png = sorted((MNIST / "test" / "3").glob("*.png"))[0]
    want = load_artifact(onnx).classify([png])[0][0].label
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"} and client.get("/ready").status_code == 200
        raw = client.post("/v1/predict", content=png.read_bytes(), headers={**auth, "Content-Type": "image/png"})
        assert raw.status_code == 200 and raw.json()["label"] == want and raw.json()["source"] == "http"
        form = client.post("/v1/predict", files={"file": ("../../etc/passwd.png", png.read_bytes(), "image/png")}, headers=auth)
        assert form.status_code == 200 and form.json()["label"] == want and form.json()["filename"] == "../../etc/passwd.png"
        assert not list(server.out.parent.glob("etc*")) and not (server.out / "etc").exists()  # a name is data, never a path
        assert client.post("/v1/predict", content=png.read_bytes(), headers={"Content-Type": "image/png"}).status_code == 401
        assert client.post("/v1/predict", content=png.read_bytes(), headers={"Authorization": "Bearer wrong", "Content-Type": "image/png"}).status_code == 401
        assert client.post("/v1/predict", content=b"%PDF-1.4", headers={**auth, "Content-Type": "application/pdf"}).status_code == 415
        broken = client.post("/v1/predict", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 64, headers={**auth, "Content-Type": "image/png"})
        assert broken.status_code == 422 and broken.json()["error"].startswith("image: ") and str(server.out) not in broken.json()["error"]
        big = client.post("/v1/predict", content=b"\0" * 60_000, headers={**auth, "Content-Type": "image/png"})  # --max-upload-mb 0.05
        assert big.status_code == 413
        assert client.get("/metrics").status_code == 401
        metrics = client.get("/metrics", headers=auth).text
    assert 'vgg_edge_received_total{source="http"}' in metrics and "vgg_edge_latency_seconds_count" in metrics


@pytest.mark.parametrize("clients", [1, 4, 16])
def test_concurrent_http_clients_are_all_answered(server: Server, onnx: Path, clients: int):
    pngs = [p for d in range(10) for p in sorted((MNIST / "test" / str(d)).glob("*.png"))[:2]][:16]
    want = {p.name: r.label for p, r in zip(pngs, load_artifact(onnx).classify(pngs)[0])}
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}

    def client(i: int) -> list[tuple[str, int, str]]:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            out = []
            for png in pngs[i % 4::4][:4]:
                r = http.post("/v1/predict", content=png.read_bytes(), headers=auth)
                out.append((png.name, r.status_code, r.json().get("label")))
            return out

    with ThreadPoolExecutor(clients) as pool:
        answers = [a for batch in pool.map(client, range(clients)) for a in batch]
    assert len(answers) == 4 * clients and all(status == 200 for _, status, _ in answers)
    assert all(label == want[name] for name, _, label in answers)


def test_sigkill_mid_stream_then_restart_every_acknowledged_image_has_exactly_one_result(onnx: Path, dicoms: list[Path], tmp_path: Path):
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    out = tmp_path / "out"
    first = Server(onnx, out)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    acknowledged, sent = [], 0
    assoc = ae.associate("127.0.0.1", first.dicom, ae_title="VGGEDGE")
    for i in range(60):
        ds = pydicom.dcmread(dicoms[i % len(dicoms)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        if i == 25:
            first.kill()  # no warning, no clean-up: the power cord
        if not assoc.is_established:
            break
        try:
            status = assoc.send_c_store(ds)
        except RuntimeError:  # the association died with the server
            break
        sent += 1
        if status and status.Status == 0x0000:
            acknowledged.append(str(ds.SOPInstanceUID))
    assoc.release()
    assert 20 <= len(acknowledged) <= 26 and sent < 60
    second = Server(onnx, out)
    got = wait_for(lambda: (r := [x for x in results(out) if x.get("sop_instance_uid") in acknowledged]) and len({x["sop_instance_uid"] for x in r}) == len(acknowledged) and r,
                   what="every acknowledged image's result after the restart")
    status, _ = second.stop()
    assert status == 0
    got = [x for x in results(out) if x.get("sop_instance_uid") in acknowledged]
    assert sorted(x["sop_instance_uid"] for x in got) == sorted(acknowledged)  # exactly one each: none lost, none twice
    assert not list((out / "spool").iterdir())


def test_a_spool_left_by_a_crash_is_classified_once_after_restart(onnx: Path, dicoms: list[Path], tmp_path: Path):
    """Images acknowledged but not classified, and one whose result was logged just before the crash (its
    spool file not yet deleted): after the restart, the first get one result each, the last none more."""
    out = tmp_path / "out"
    spool, log = Spool(out), ResultLog(out)
    pending = [spool.put(p.read_bytes(), ".dcm", "dicom") for p in dicoms[:5]]
    log.append([{"id": pending[-1].id, "label": "done before the crash"}])
    (spool.folder / f".{pending[0].path.name}.tmp").write_bytes(b"half-written, never acknowledged")
    stop, summary = threading.Event(), {}
    worker = threading.Thread(target=lambda: summary.update(serve(ServeConfig(onnx, out, dicom_port=free_port(), http_port=0), stop=stop)))
    worker.start()
    try:
        wait_for(lambda: len(results(out)) == 5, what="the recovered images' results")
    finally:
        stop.set()
        worker.join(60)
    assert summary["recovered"] == 4
    records = results(out)
    assert sorted(r["id"] for r in records) == sorted(s.id for s in pending)
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in dicoms[:4]}
    assert {r["sop_instance_uid"] for r in records[1:]} == uids and all(r["recovered"] for r in records[1:])
    assert not list(spool.folder.iterdir())


def test_overload_is_answered_503_and_a700_instead_of_queueing_without_bound(onnx: Path, dicoms: list[Path], tmp_path: Path):
    """The model is held still; with a queue of 2 the next image is refused at both doors, then all accepted ones finish."""
    from fastapi.testclient import TestClient
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    predictor = load_artifact(onnx)
    release, run = threading.Event(), predictor.predict
    predictor.predict = lambda x: (release.wait(30), run(x))[1]
    spool, log = Spool(tmp_path), ResultLog(tmp_path)
    engine = Engine(predictor, spool, log, {"artifact": str(onnx)}, max_batch=1, max_wait_ms=0, queue_size=2)
    engine.start()
    try:
        first = engine.submit(Job(spool.put(dicoms[0].read_bytes(), ".dcm", "dicom"), {}))
        wait_for(lambda: engine.waiting() == 0, what="the worker to take the first image")
        queued = [engine.submit(Job(spool.put(p.read_bytes(), ".dcm", "dicom"), {})) for p in dicoms[1:3]]
        with pytest.raises(Overloaded):
            engine.submit(Job(spool.put(dicoms[3].read_bytes(), ".dcm", "dicom"), {}))
        http = TestClient(create_app(engine, spool, 1 << 20))
        refused = http.post("/v1/predict", content=(MNIST / "test" / "3").glob("*.png").__next__().read_bytes(), headers={"Content-Type": "image/png"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1" and http.get("/ready").status_code == 503
        port = free_port()
        scp = start_scp(engine, spool, "127.0.0.1", port, "VGGEDGE")
        try:
            ae = AE(ae_title="PYNETDICOM")
            ae.add_requested_context(SecondaryCaptureImageStorage)
            assoc = ae.associate("127.0.0.1", port, ae_title="VGGEDGE")
            assert assoc.send_c_store(pydicom.dcmread(dicoms[4])).Status == OUT_OF_RESOURCES
            assoc.release()
        finally:
            scp.shutdown()
        release.set()
        for done in (first, *queued):
            assert done.result(30)["error"] is None
    finally:
        release.set()
        engine.stop()
    assert len(results(tmp_path)) == 3


def test_bad_settings_and_a_busy_port_are_one_line_errors(onnx: Path, tmp_path: Path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for args, message in [
            (["--dicom-port", "0", "--http-port", "0"], "nothing to serve"),
            (["--dicom-port", str(port), "--http-port", "0"], f"--dicom-port {port}: cannot listen"),
            (["--dicom-port", "0", "--http-port", str(port)], f"--http-port {port}: cannot listen"),
            (["--ae-title", "A_TITLE_LONGER_THAN_16", "--http-port", "0"], "a DICOM AE title has 1 to 16 characters"),
        ]:
            proc = subprocess.run([sys.executable, "-m", "vgg_edge", "serve", str(onnx), "--out", str(tmp_path / "o"), *args],
                                  capture_output=True, text=True, timeout=60, env={**os.environ, "VGG_EDGE_TOKEN": ""})
            assert proc.returncode == 2 and "Traceback" not in proc.stderr and message in proc.stderr, (args, proc.stderr)
    finally:
        busy.close()
