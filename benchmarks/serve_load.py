"""`vgg-edge serve` under load, against `predict` on the same artifact and images, and the SIGKILL test.

    .venv/bin/python benchmarks/serve_load.py exported/brain-mri-128-b2-bf16-flatten/onnx-int8   # ~5 min, quiet machine
    -> benchmarks/results/serve_load.{json,md}

1. `predict`: the API (`load_artifact(...).classify`, batch 32) over the images, and the CLI (`vgg-edge
   predict --json`, process start included): images per second.
2. `serve` (a real process, loopback): 1, 4 and 16 concurrent clients, each sending its share of the
   images, over HTTP (httpx, POST /v1/predict: the latency is the client's, request to result) and over
   DICOM (pynetdicom C-STORE, one association per client: the latency is the acknowledgement's, and
   from receipt to result as the results log records it). Throughput is images per wall-clock second.
3. Kill test: one client streams C-STOREs, the server is SIGKILLed half-way, restarted on the same
   folder; acknowledged images, results written (each exactly once?) and images lost.

The images are the run's recorded test split (JPEG for HTTP; the same pixels as DICOM secondary
captures for C-STORE).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VGG_EDGE = str(ROOT / ".venv" / "bin" / "vgg-edge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": statistics.fmean(ms)}


def results(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class Server:
    def __init__(self, artifact: Path, out: Path):
        import httpx

        self.dicom, self.http, self.out = free_port(), free_port(), out
        self.proc = subprocess.Popen([VGG_EDGE, "serve", str(artifact), "--out", str(out), "--dicom-port", str(self.dicom), "--http-port", str(self.http)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("serve did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def dicom_copies(images: list[Path], folder: Path, size: int) -> list[Path]:
    """Each test image as a DICOM secondary capture (RGB, the decoded pixels at the model's size)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from vgg_edge.images import read_image

    out = []
    for i, path in enumerate(images):
        pixels = read_image(path, size)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = SecondaryCaptureImageStorage, generate_uid(), ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "MR"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = size, size, 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
        out.append(folder / f"{i:04d}.dcm")
    return out


def http_load(server: Server, images: list[Path], clients: int) -> dict:
    import httpx

    def client(share: list[Path]) -> list[float]:
        times = []
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http}", timeout=120) as http:
            for path in share:
                t = time.perf_counter()
                r = http.post("/v1/predict", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ms = [t for part in pool.map(client, [images[i::clients] for i in range(clients)]) for t in part]
    wall = time.perf_counter() - started
    return {"images": len(ms), "seconds": wall, "images_per_s": len(ms) / wall, **percentiles(ms)}


def dicom_load(server: Server, files: list[Path], clients: int) -> dict:
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    uids = {str(ds.SOPInstanceUID) for ds in datasets}

    def client(share: list) -> list[float]:
        ae = AE(ae_title="LOADTEST")
        ae.add_requested_context(SecondaryCaptureImageStorage)
        assoc = ae.associate("127.0.0.1", server.dicom, ae_title="VGGEDGE")
        times = []
        for ds in share:
            t = time.perf_counter()
            assert assoc.send_c_store(ds).Status == 0x0000
            times.append((time.perf_counter() - t) * 1000)
        assoc.release()
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ms = [t for part in pool.map(client, [datasets[i::clients] for i in range(clients)]) for t in part]
    while len([r for r in results(server.out) if r.get("sop_instance_uid") in uids]) < len(uids):
        time.sleep(0.01)
    wall = time.perf_counter() - started
    records = [r for r in results(server.out) if r.get("sop_instance_uid") in uids]
    from datetime import datetime

    to_result = [(datetime.fromisoformat(r["classified_at"]) - datetime.fromisoformat(r["received_at"])).total_seconds() * 1000 for r in records]
    return {"images": len(ms), "seconds": wall, "images_per_s": len(ms) / wall, "ack": percentiles(ms), "receipt_to_result": percentiles(to_result)}


def kill_test(artifact: Path, files: list[Path], out: Path, count: int) -> dict:
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    server = Server(artifact, out)
    ae = AE(ae_title="KILLTEST")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    assoc = ae.associate("127.0.0.1", server.dicom, ae_title="VGGEDGE")
    acknowledged, sent = [], 0
    for i in range(count):
        ds = pydicom.dcmread(files[i % len(files)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        if i == count // 2:
            threading.Thread(target=lambda: server.proc.send_signal(signal.SIGKILL)).start()
        try:
            if not assoc.is_established:
                break
            status = assoc.send_c_store(ds)
        except RuntimeError:
            break
        sent += 1
        if status and status.Status == 0x0000:
            acknowledged.append(str(ds.SOPInstanceUID))
    server.proc.wait(30)
    spooled = len([p for p in (out / "spool").iterdir() if not p.name.startswith(".")])
    logged_before = len(results(out))
    restarted = Server(artifact, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({r.get("sop_instance_uid") for r in results(out)} & set(acknowledged)) < len(acknowledged):
        time.sleep(0.05)
    restarted.stop()
    records = [r for r in results(out) if r.get("sop_instance_uid") in set(acknowledged)]
    per_uid = {uid: sum(r["sop_instance_uid"] == uid for r in records) for uid in acknowledged}
    return {"sent": sent, "acknowledged": len(acknowledged), "results_before_kill_logged": logged_before, "spooled_at_restart": spooled,
            "recovered": sum(r["recovered"] for r in records), "results": len(records), "lost": sum(n == 0 for n in per_uid.values()),
            "duplicated": sum(n > 1 for n in per_uid.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    from vgg_edge.bench import environment
    from vgg_edge.manifest import read
    from vgg_edge.run import RunDir
    from vgg_edge.runtime import load_artifact

    info = read(args.artifact)
    run = RunDir.open(info.source_run)
    images = [Path(run.split.data_root) / e.path for e in run.split.files("test")][: args.images]
    doc: dict = {"artifact": str(args.artifact), "images": len(images), "image_size": info.image_size, "environment": environment(),
                 "command": "benchmarks/serve_load.py " + " ".join(sys.argv[1:])}
    predictor = load_artifact(args.artifact)
    predictor.classify(images[:32])  # warm-up
    t = time.perf_counter()
    predictor.classify(images, batch_size=32)
    doc["predict_api"] = {"images_per_s": len(images) / (time.perf_counter() - t)}
    t = time.perf_counter()
    subprocess.run([VGG_EDGE, "predict", str(args.artifact), *map(str, images), "--json"], check=True, capture_output=True)
    doc["predict_cli"] = {"images_per_s": len(images) / (time.perf_counter() - t), "note": "process start and model load included"}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "dicom").mkdir()
        files = dicom_copies(images, scratch / "dicom", info.image_size)
        server = Server(args.artifact, scratch / "serve")
        try:
            http_load(server, images[:32], 4)  # warm-up
            doc["http"] = {str(n): http_load(server, images, n) for n in (1, 4, 16)}
            doc["dicom"] = {str(n): dicom_load(server, files, n) for n in (1, 4, 16)}
        finally:
            server.stop()
        doc["kill_test"] = kill_test(args.artifact, files, scratch / "kill", 200)
    (ROOT / "benchmarks" / "results" / "serve_load.json").write_text(json.dumps(doc, indent=2) + "\n")
    env = doc["environment"]
    lines = [
        "# `vgg-edge serve` under load", "",
        f"Command: `.venv/bin/python {doc['command']}`. Artifact `{args.artifact}` ({info.format} {info.precision}, {info.image_size} px), "
        f"{len(images)} test-split images; {env['cpu']['model']}, {env['cpu']['usable_cores']} cores; server and clients on the same machine (loopback).", "",
        f"`predict` on the same images: API (`classify`, batch 32) **{doc['predict_api']['images_per_s']:.1f} img/s**; "
        f"CLI (`vgg-edge predict --json`, start-up included) {doc['predict_cli']['images_per_s']:.1f} img/s.", "",
        "| front door | clients | img/s | p50 ms | p99 ms | receipt to result p50 / p99 ms |", "|---|---|---|---|---|---|",
        *(f"| HTTP POST | {n} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | - |" for n, r in doc["http"].items()),
        *(f"| DICOM C-STORE (ack) | {n} | {r['images_per_s']:.1f} | {r['ack']['p50_ms']:.1f} | {r['ack']['p99_ms']:.1f} | "
          f"{r['receipt_to_result']['p50_ms']:.1f} / {r['receipt_to_result']['p99_ms']:.1f} |" for n, r in doc["dicom"].items()), "",
        "HTTP latency is the client's (request sent to result received). DICOM throughput counts until the last result is in the log; "
        "the C-STORE latency is the acknowledgement's (after the image is fsync'ed to the spool), the result follows from the log's timestamps.", "",
        "Kill test (SIGKILL half-way through a stream of C-STOREs, restart on the same folder): "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in doc["kill_test"].items()) + ".", "",
    ]
    (ROOT / "benchmarks" / "results" / "serve_load.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
