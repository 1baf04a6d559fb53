"""What several test modules share, in one place: the shared data's paths, the console script run
as a user runs it, folder snapshots, and a corpus of awkward image files.

Fixtures live in conftest.py; plain constants and functions live here, imported as
`from helpers import ...` (pytest puts tests/ on sys.path). Nothing here imports TensorFlow, so
the fast unit modules (test_unit_*.py) may use it too.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# The shared data beside the checkout (never downloaded); conftest.py checks it is there.
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
WEIGHTS = SHARED / "weights" / "vgg16_imagenet_notop.h5"
MNIST = SHARED / "data" / "mnist-digits"
BRAIN = SHARED / "data" / "brain-mri"
SKIN = SHARED / "data" / "skin-lesion"

VGG_EDGE = Path(sys.executable).with_name("vgg-edge")


def vgg_edge(*args: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed console script, run as a user runs it."""
    return subprocess.run([str(VGG_EDGE), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def interrupt_after(args: list, marker: str, log: Path, timeout: float = 240, env: dict | None = None) -> tuple[int, str]:
    """Start `vgg-edge ARGS`, send SIGINT (Ctrl-C) once `marker` appears in its stderr, return (status, stderr)."""
    with open(log, "w") as err:
        # SIGINT back to its default: a shell that started the test run in the background may have set it to ignored
        proc = subprocess.Popen([str(VGG_EDGE), *map(str, args)], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + timeout
        while marker not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, f"finished before {marker!r} was seen:\n{log.read_text()}"
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=120)
    return status, log.read_text()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes: equal snapshots mean nothing was touched."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    """Entries of `parent` other than `keep`: temporary or half-written folders of an atomic write."""
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes) -> Path:
    """A DICOM part-10 file (secondary capture, explicit VR little endian) holding `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb costs nothing to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


#: What `bad_corpus` writes: readable files (awkward but valid) and files no decoder can use.
READABLE = ("deep 16-bit.png", "alpha RGBA.png", "palette.png", "cmyk.jpg", "rotated exif.jpg", "résumé scan [1].png", "mono1.dcm")
UNREADABLE = ("zero-byte.png", "truncated.jpg", "text named.png", "bomb.png", "cine.dcm")


def bad_corpus(folder: Path, seed: int = 0) -> Path:
    """Every awkward input of the issue in one folder, plus a looping file link and a looping folder link."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(rng.integers(0, 65536, (40, 40)).astype(np.uint16)).save(folder / "deep 16-bit.png")
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (40, 40), dtype=np.uint8)]), "RGBA").save(folder / "alpha RGBA.png")
    Image.fromarray(rgb).quantize(colors=8).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 8
    rotated.save(folder / "rotated exif.jpg", exif=exif)
    Image.fromarray(rgb).save(folder / "résumé scan [1].png")
    write_dicom(folder / "mono1.dcm", rng.integers(0, 4096, (40, 40)).astype(np.uint16), "MONOCHROME1", RescaleSlope=1, RescaleIntercept=-1024)
    (folder / "zero-byte.png").write_bytes(b"")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(rgb).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    (folder / "text named.png").write_text("not an image\n")
    png_claiming(folder / "bomb.png", 30_000, 30_000)
    write_dicom(folder / "cine.dcm", np.zeros((2, 8, 8), np.uint8))
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "loop dir").symlink_to(folder, target_is_directory=True)
    return folder
