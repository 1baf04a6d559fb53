"""DICOM as hospitals and their tools write it, through the shared decoder `images.read_image`.

Every compressed transfer syntax a scanner sends, files without the 128-byte preamble, objects
that hold no image, YBR and palette colour, decompression bombs inside compressed data, and the
decoders' own warnings kept off the terminal. The compressed files are made here from the shared
data with DCMTK's tools (img2dcm, dcmdjpeg, dcmcjpeg, dcmcjpls, dcmcrle, dcmconv) and pydicom's
JPEG 2000 encoder (pylibjpeg-openjpeg); the objects without an image are pydicom's bundled test
files, read offline (never through `get_testdata_file`, which may download).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from helpers import BRAIN, SKIN, write_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MPEG2MPML,
    RLELossless,
    UID,
)
from typer.testing import CliRunner

from vgg_edge import runtime
from vgg_edge.cli import app
from vgg_edge.decision import DecisionRule
from vgg_edge.images import MAX_PIXELS, ImageReadError, collected_warnings, read_image, read_images

BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped inside the pydicom wheel
DCMTK = ("img2dcm", "dcmdjpeg", "dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv")
SIZE = 128

#: transfer syntax -> the command that makes it from an uncompressed file (None: pydicom's own encoder)
LOSSLESS = {
    "JPEG lossless SV1": (JPEGLosslessSV1, ["dcmcjpeg", "+e1"]),
    "JPEG lossless": (JPEGLossless, ["dcmcjpeg", "+el"]),
    "JPEG-LS lossless": (JPEGLSLossless, ["dcmcjpls", "+el"]),
    "RLE": (RLELossless, ["dcmcrle"]),
    "JPEG 2000 lossless": (JPEG2000Lossless, None),
}
LOSSY = {
    "JPEG baseline": (JPEGBaseline8Bit, ["dcmcjpeg", "+eb"]),
    "JPEG extended": (JPEGExtended12Bit, ["dcmcjpeg", "+ee"]),
    "JPEG-LS near-lossless": (JPEGLSNearLossless, ["dcmcjpls", "+en"]),
    "JPEG 2000": (JPEG2000, None),
}


def bundled(name: str) -> Path:
    path = BUNDLED / name
    assert path.is_file(), f"{name} is not bundled with this pydicom"
    return path


def dcmtk(*command: str | Path) -> None:
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(map(str, command))}: {done.stderr}"


def compress(source: Path, out: Path, syntax: UID, command: list[str] | None) -> Path:
    """`source` re-encoded in `syntax` by DCMTK, or by pydicom when `command` is None (JPEG 2000)."""
    if command:
        dcmtk(*command, source, out)
    else:
        ds = pydicom.dcmread(source)
        ds.compress(syntax, **({} if syntax == JPEG2000Lossless else {"j2k_cr": [20]}))  # lossy: 20:1
        ds.save_as(out)
    assert pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    return out


def write_colour_dicom(path: Path, pixels: np.ndarray, photometric: str) -> Path:
    """A secondary-capture file holding (rows, columns, 3) uint8 samples, uncompressed, colour-by-pixel."""
    write_dicom(path, pixels[..., 0])  # every other attribute as a greyscale file, then the colour ones
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, photometric
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Uncompressed DICOM files made from the shared data: `colour` (a dermoscopy photo, RGB 8-bit, through
    img2dcm and dcmdjpeg as a hospital's tools do it) and `grey12` (a brain MRI, 12-bit, with a window)."""
    assert all(shutil.which(tool) for tool in DCMTK), "these tests need DCMTK (apt-get install dcmtk; .ci/run installs it)"
    folder = tmp_path_factory.mktemp("dicom")
    photo = sorted((SKIN / "test" / "benign").glob("*.jpg"))[0]
    dcmtk("img2dcm", photo, folder / "photo jpeg.dcm")  # the JPEG itself, encapsulated: JPEG baseline, YBR_FULL_422
    dcmtk("dcmdjpeg", folder / "photo jpeg.dcm", folder / "colour.dcm")
    mri = np.asarray(Image.open(sorted((BRAIN / "test" / "glioma").glob("*.jpg"))[0]).convert("L"), np.uint16) * 16 + 7
    write_dicom(folder / "grey12.dcm", mri, BitsStored=12, HighBit=11, WindowCenter=2000, WindowWidth=3600)
    return {"photo": photo, "photo jpeg": folder / "photo jpeg.dcm", "colour": folder / "colour.dcm", "grey12": folder / "grey12.dcm"}


@pytest.mark.parametrize("kind", ["colour", "grey12"])
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_syntaxes_decode_bit_identical(originals, tmp_path, name, kind):
    syntax, command = LOSSLESS[name]
    compressed = compress(originals[kind], tmp_path / f"{name}.dcm", syntax, command)
    assert (read_image(compressed, SIZE) == read_image(originals[kind], SIZE)).all()


@pytest.mark.parametrize(
    "name, kind", [("JPEG baseline", "colour"), ("JPEG extended", "grey12"), ("JPEG-LS near-lossless", "colour"),
                   ("JPEG-LS near-lossless", "grey12"), ("JPEG 2000", "colour"), ("JPEG 2000", "grey12")],
)
def test_lossy_syntaxes_decode_close(originals, tmp_path, name, kind):
    syntax, command = LOSSY[name]
    compressed = compress(originals[kind], tmp_path / f"{name}.dcm", syntax, command)
    diff = np.abs(read_image(compressed, SIZE).astype(int) - read_image(originals[kind], SIZE))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99), diff.max())


def test_jpeg_in_dicom_decodes_as_the_jpeg_file(originals):
    """img2dcm wraps the photo's own JPEG bytes (YBR_FULL_422): the DICOM reads as Pillow reads the .jpg, up to
    the rounding of two JPEG decoders (pylibjpeg's libjpeg, Pillow's libjpeg-turbo: 3 levels at most, measured);
    reading YBR as RGB would be off by tens of levels."""
    diff = np.abs(read_image(originals["photo jpeg"], SIZE).astype(int) - read_image(originals["photo"], SIZE))
    assert diff.max() <= 4 and diff.mean() < 0.3, (diff.max(), diff.mean())


def test_ybr_full_converted_to_rgb(tmp_path):
    """YBR_FULL samples computed by hand (PS3.3 C.7.6.3.1.2) from a known RGB image come back as that RGB."""
    rgb = np.asarray(Image.open(sorted((SKIN / "test" / "benign").glob("*.jpg"))[0]).convert("RGB").resize((64, 64)), np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ybr = np.stack([0.299 * r + 0.587 * g + 0.114 * b, -0.1687 * r - 0.3313 * g + 0.5 * b + 128, 0.5 * r - 0.4187 * g - 0.0813 * b + 128], -1)
    path = write_colour_dicom(tmp_path / "ybr.dcm", np.clip(np.round(ybr), 0, 255).astype(np.uint8), "YBR_FULL")
    diff = np.abs(read_image(path, 64).astype(int) - rgb)
    assert diff.max() <= 2, diff.max()  # the rounding of YBR to 8 bits, nothing more


def test_palette_colour_looked_up(tmp_path):
    """PALETTE COLOR (ultrasound, nuclear medicine): stored values are indices into the file's 16-bit colour table."""
    indices = np.array([[0, 1], [2, 3]], np.uint8)
    table = {"Red": [0, 255, 0, 128], "Green": [0, 0, 255, 64], "Blue": [255, 0, 0, 32]}  # 8-bit colours, stored as 16-bit entries
    attributes = {}
    for channel, values in table.items():
        attributes[f"{channel}PaletteColorLookupTableDescriptor"] = [4, 0, 16]
        attributes[f"{channel}PaletteColorLookupTableData"] = (np.array(values, np.uint16) * 257).astype("<u2").tobytes()
    path = write_dicom(tmp_path / "palette.dcm", indices, "PALETTE COLOR", **attributes)
    expected = np.stack([np.array(v)[indices] for v in table.values()], -1)
    assert (read_image(path, 2) == expected).all()


@pytest.mark.parametrize("encoding", ["+ti", "+te"])  # implicit VR, as old archives write bare datasets; explicit VR
def test_file_without_preamble_read_whatever_its_name(originals, tmp_path, encoding):
    """`dcmconv -F` writes the bare dataset: no preamble, no 'DICM', no file meta, as some archives export."""
    bare = tmp_path / "IM000001"  # DICOMDIR-style name, no suffix: Pillow does not know it, so DICOM is tried
    dcmtk("dcmconv", "-F", encoding, originals["grey12"], bare)
    assert bare.read_bytes()[128:132] != b"DICM"
    expected = read_image(originals["grey12"], SIZE)
    assert (read_image(bare, SIZE) == expected).all()
    shutil.copy(bare, tmp_path / "bare.dcm")
    assert (read_image(tmp_path / "bare.dcm", SIZE) == expected).all()


def test_what_is_neither_image_nor_dicom_keeps_pillows_message(tmp_path):
    (tmp_path / "notes").write_text("(0008,0016) is a tag, but this is a text file\n")
    (tmp_path / "text.png").write_text("not an image\n")
    shutil.copy(bundled("README.txt"), tmp_path / "README")
    for name in ("notes", "text.png", "README"):
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name, 8)
        assert str(err.value) == f"{tmp_path / name}: not an image format Pillow can decode (PNG, JPEG, BMP, GIF, TIFF, WebP) nor DICOM"
    junk = tmp_path / "junk.dcm"
    junk.write_text("not a DICOM file\n")
    with pytest.raises(ImageReadError, match=r"junk\.dcm: not a DICOM file \(no 'DICM' marker"):
        read_image(junk, 8)


@pytest.mark.parametrize(
    "name, sop_class",
    [("test-SR.dcm", "Comprehensive SR Storage"), ("reportsi.dcm", "Basic Text SR Storage"), ("rtplan.dcm", "RT Plan Storage"),
     ("waveform_ecg.dcm", "12-lead ECG Waveform Storage"), ("rtstruct.dcm", "RT Structure Set Storage")],  # rtstruct: no preamble either
)
def test_objects_without_an_image_named_by_sop_class(tmp_path, name, sop_class):
    path = shutil.copy(bundled(name), tmp_path / name)
    with pytest.raises(ImageReadError) as err:
        read_image(path, 8)
    assert str(err.value) == f"{path}: holds no image (SOP class: {sop_class})"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header claims `width` x `height`: a decoder would allocate that much."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, height, width)
    return bytes(data)


def with_pixel_data(path: Path, syntax: UID, fragment: bytes, rows: int = 8, columns: int = 8) -> Path:
    """A greyscale file whose pixel data is `fragment`, encapsulated in `syntax`."""
    write_dicom(path, np.zeros((8, 8), np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: what must be refused beforehand is refused beforehand."""
    monkeypatch.setattr(Dataset, "pixel_array", property(lambda ds: pytest.fail("pixel data was decoded")))


def test_compressed_bombs_refused_before_decoding(tmp_path, no_decoding):
    """Rows x Columns, and the size the codestream itself declares (what the decoder allocates), both within MAX_PIXELS."""
    header_bomb = with_pixel_data(tmp_path / "sof.dcm", JPEGBaseline8Bit, jpeg_claiming(40_000, 40_000))
    j2k = pydicom.dcmread(compress(write_dicom(tmp_path / "small.dcm", np.zeros((64, 64), np.uint8)), tmp_path / "j2k.dcm", JPEG2000Lossless, None))
    codestream = bytearray(get_frame(j2k.PixelData, 0, number_of_frames=1))
    struct.pack_into(">II", codestream, 8, 50_000, 50_000)  # SIZ: Xsiz, Ysiz
    siz_bomb = with_pixel_data(tmp_path / "siz.dcm", JPEG2000Lossless, bytes(codestream))
    rows_bomb = with_pixel_data(tmp_path / "rows.dcm", JPEGBaseline8Bit, jpeg_claiming(8, 8), rows=10_000, columns=10_000)
    for path, claimed in ((header_bomb, "40000x40000"), (siz_bomb, "50000x50000"), (rows_bomb, "10000x10000")):
        with pytest.raises(ImageReadError) as err:
            read_image(path, 8)
        assert str(err.value) == (f"{path}: {claimed} pixels is over the {MAX_PIXELS:,}-pixel limit "
                                  "(possible decompression bomb); downscale the image first")


def test_multi_frame_refused_before_decoding(tmp_path, no_decoding):
    path = shutil.copy(bundled("SC_rgb_rle_2frame.dcm"), tmp_path / "cine.dcm")
    with pytest.raises(ImageReadError, match=r"cine\.dcm: multi-frame DICOM \(2 frames\) is not supported; export one frame per file$"):
        read_image(path, 8)


def test_undecodable_pixel_data_names_the_syntax_and_the_fix(originals, tmp_path, monkeypatch):
    damaged = compress(originals["colour"], tmp_path / "j2k.dcm", JPEG2000Lossless, None)
    ds = pydicom.dcmread(damaged)
    frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:400] + bytes(len(frame) - 400)])  # the header kept, the coded data zeroed
    ds.save_as(damaged)
    with pytest.raises(ImageReadError) as err:
        read_image(damaged, 8)
    message = str(err.value)
    assert message.startswith(f"{damaged}: no installed decoder could read its JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90) pixel data (pylibjpeg: ")
    assert "decompress it first" in message and "\n" not in message

    mpeg = with_pixel_data(tmp_path / "video.dcm", MPEG2MPML, b"\x00\x00\x01\xb3" + bytes(60))
    with pytest.raises(ImageReadError, match=r"pydicom cannot decode pixel data in MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\); convert"):
        read_image(mpeg, 8)

    jpeg_ls = compress(originals["grey12"], tmp_path / "jls.dcm", JPEGLSLossless, ["dcmcjpls", "+el"])
    decoder = get_decoder(JPEGLSLossless)  # as an install without the `dicom` extra's plugins sees it (pydicom's private tables)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1"), "pyjpegls": ("pyjpegls>=1.2",)})
    with pytest.raises(ImageReadError) as err:
        read_image(jpeg_ls, 8)
    assert str(err.value) == f"{jpeg_ls}: no decoder for JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) is installed; pip install 'vgg-edge[dicom]'"


def test_decoder_warnings_collected_per_file_not_printed(tmp_path, capfd):
    """pydicom warns (and logs) that MR_small_padded.dcm has excess padding: read anyway, reported per file, in every thread."""
    padded = [shutil.copy(bundled("MR_small_padded.dcm"), tmp_path / f"padded {i}.dcm") for i in range(6)]
    Image.new("RGB", (8, 8)).save(tmp_path / "clean.png")
    root = logging.getLogger()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # an application's own log handler
    root.addHandler(handler)
    try:
        with collected_warnings() as collected, warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            loaded = read_images([*padded, tmp_path / "clean.png"], 16, workers=3)
        assert not records and not shown and capfd.readouterr().err == ""
        logging.getLogger("pydicom").warning("outside decoding")  # records raised outside decoding go on as before
        assert [r.getMessage() for r in records] == ["outside decoding"]
    finally:
        root.removeHandler(handler)
    assert len(loaded.paths) == 7 and not loaded.failures
    assert sorted(loaded.warnings) == sorted(map(str, padded)) and collected == loaded.warnings
    for path, line in loaded.warnings.items():
        assert line == f"{path}: The pixel data is 8320 bytes long, which indicates it contains 128 bytes of excess padding to be removed"
    with pytest.warns(UserWarning, match="outside decoding"):
        warnings.warn("outside decoding", UserWarning)
    later = shutil.copy(padded[0], tmp_path / "later.dcm")
    assert str(later) in read_images([later], 16).warnings and str(later) not in collected  # the block has ended


def test_predict_summarises_decoder_warnings(tmp_path, monkeypatch):
    """`vgg-edge predict` (an exported model stood in for): one line for the files the decoders warned about, and "warnings" in --json."""

    class Classifier:  # decodes as Predictor.classify does, then calls every image "scan"
        labels = ["scan"]
        info = SimpleNamespace(status="accepted", format="onnx", precision="fp32", labels=labels, image_size=16, decision=DecisionRule(("scan",)))

        def classify(self, files, top_k, batch_size):
            loaded = read_images(files, 16)
            return [runtime.Prediction(str(p), "scan", 1.0, [("scan", 1.0)]) for p in loaded.paths], loaded.failures

    monkeypatch.setattr(runtime, "load_artifact", lambda *args, **kwargs: Classifier())
    padded = [shutil.copy(bundled("MR_small_padded.dcm"), tmp_path / f"padded {i}.dcm") for i in range(2)]
    report = shutil.copy(bundled("test-SR.dcm"), tmp_path / "report.dcm")
    done = CliRunner().invoke(app, ["--verbose", "predict", str(tmp_path), *map(str, [*padded, report]), "--json"])
    assert done.exit_code == 1, done.output  # the report holds no image
    doc = json.loads(done.stdout)
    assert [w["path"] for w in doc["warnings"]] == list(map(str, padded)) and len(doc["predictions"]) == 2
    lines = done.stderr.splitlines()
    assert f"error: {report}: holds no image (SOP class: Comprehensive SR Storage)" in lines
    summary = [line for line in lines if "warned" in line]
    assert summary == [f"the image decoders warned about 2 files, read anyway (first: {padded[0]}: The pixel data is 8320 bytes long, "
                       "which indicates it contains 128 bytes of excess padding to be removed)"], lines
