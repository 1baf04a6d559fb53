"""Image decoding shared by training and the edge runtime.

Both sides call `read_image`, so the pixels an edge device feeds its model are, bit for bit,
the pixels the model was trained and validated on: decode with Pillow (or pydicom), apply the
EXIF orientation, turn any mode (greyscale, palette, RGBA, CMYK, 16-bit) into 8-bit RGB, then
resize to a square with Pillow's bilinear filter. The model itself takes raw RGB 0-255; VGG16's
own preprocessing is inside the graph. This module imports only numpy and Pillow; pydicom is
imported on the first DICOM file.

DICOM is read as hospitals write it: part-10 files and bare datasets without the preamble, the
compressed transfer syntaxes through pydicom's pixel-data plugins (the `dicom` extra installs
pylibjpeg and pyjpegls), YBR and palette colour as RGB. An object that holds no image, a
multi-frame series or an oversized image is refused before any pixel is decoded. What the
decoders warn about on their own is collected per file, never printed: `LoadedImages.warnings`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import VggEdgeError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.pixels.decoders.base import Decoder
    from pydicom.uid import UID

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
#: Larger images are refused before decoding: a decompression bomb must not exhaust memory.
MAX_PIXELS = 64_000_000
RESAMPLE = Image.Resampling.BILINEAR
#: DICOM elements larger than this are read only when used, so a refused file's pixels are never loaded.
DEFER_BYTES = 1 << 20
PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: The loggers of pydicom and its pixel-data plugins: their records are collected per file, not printed.
DECODER_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg", "jpeg_ls")
#: Start-of-frame markers of JPEG (SOF0-SOF15 less DHT, JPG, DAC) and JPEG-LS (SOF55): they carry the frame's size.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


class ImageReadError(VggEdgeError):
    """An input image that cannot be used; the message names the file and the reason."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode `path` into a (size, size, 3) uint8 RGB array, or raise ImageReadError.

    The decoders' own warnings are kept off the terminal; `read_images` reports them per file.
    """
    return _read_image(Path(path), size)[0]


def _read_image(path: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """`read_image`, and what the decoders warned about while decoding the file."""
    with _decoder_messages() as messages:
        try:
            if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
                image = _read_dicom(path)
            else:
                image = _read_raster(path)
                if image is None:  # Pillow does not know the format: a DICOM dataset without preamble or name?
                    image = _read_dicom(path, sniffed=True)
            rgb = _to_rgb8(image)
            return np.asarray(rgb.resize((size, size), RESAMPLE), dtype=np.uint8), messages
        except ImageReadError:
            raise
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read image ({_reason(exc)})") from None
        except Exception as exc:  # a malformed file can make a decoder raise almost anything; it names the file, not a crash
            raise ImageReadError(f"{path}: cannot decode image ({_reason(exc)})") from None


def find_images(folder: str | os.PathLike) -> tuple[list[Path], int]:
    """Image files below `folder`, sorted, and the number of other entries skipped.

    Symlinked folders are not followed, so a link loop cannot trap the walk; a dangling or
    looping file link, a hidden file or a non-image file is skipped and counted.
    """
    found: list[Path] = []
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(".") or not is_image_file(path) or not path.is_file():
                skipped += 1
            else:
                found.append(path)
    return sorted(found), skipped


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _has_dicom_preamble(path: Path) -> bool:
    """DICOM part-10 files carry 'DICM' at byte 128, whatever their name."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _unknown_format(path: Path) -> str:
    return f"{path}: not an image format Pillow can decode (PNG, JPEG, BMP, GIF, TIFF, WebP) nor DICOM"


def _read_raster(path: Path) -> Image.Image | None:
    """The image as Pillow decodes it, or None when Pillow does not recognise the format."""
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            _check_pixel_count(path, *image.size)
            image.load()
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, checked while opening
        raise ImageReadError(f"{path}: {_reason(exc)}; downscale the image first") from None
    except UnidentifiedImageError:
        return None


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    """Refuse an image before decoding it when it is too large to be a real scan."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"{path}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit "
            "(possible decompression bomb); downscale the image first"
        )


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. 16-bit and float greyscale are scaled by their full range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image, dtype=np.uint16).astype(np.float32) / 257.0
        return Image.fromarray(np.round(arr).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        limit = 65535.0 if image.mode == "I" and arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(arr * 255.0 / limit), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _read_dicom(path: Path, sniffed: bool = False) -> Image.Image:
    """A single-frame DICOM image as 8-bit greyscale (or RGB), the way a viewer would show it.

    Modality LUT (rescale slope/intercept), then the first VOI window when the file has one
    (else its VOI LUT, else the image's own min-max range); MONOCHROME1 is inverted so that
    bone is bright in every file. `sniffed`: neither the name nor a 'DICM' marker says DICOM
    and Pillow did not know the file; unless it parses as a DICOM dataset, it is refused as an
    unknown format, with Pillow's message.
    """
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
    except ImportError:
        if sniffed:
            raise ImageReadError(_unknown_format(path)) from None
        raise ImageReadError(f"{path}: DICOM input needs pydicom; pip install 'vgg-edge[dicom]'") from None
    ds = _parse_dicom(path, sniffed)
    try:
        _check_one_image(path, ds)
        pixels = _decode_pixels(path, ds)
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":  # indices into the file's colour table
            rgb = apply_color_lut(pixels, ds)[..., :3]
            return Image.fromarray(rgb if rgb.dtype == np.uint8 else np.round(rgb / 257.0).astype(np.uint8), "RGB")
        if pixels.ndim == 3:  # colour DICOM (e.g. dermoscopy): already display values
            return Image.fromarray(_min_max_8bit(pixels) if pixels.dtype != np.uint8 else pixels, "RGB")
        values = apply_modality_lut(pixels, ds).astype(np.float64)
        if "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) > 0:  # a zero width is a broken header
            grey = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction", "LINEAR")))
        elif "VOILUTSequence" in ds:
            grey = _min_max_8bit(apply_voi_lut(values, ds, index=0))
        else:
            grey = _min_max_8bit(values)
    except ImageReadError:
        raise
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageReadError(f"{path}: cannot read DICOM ({_reason(exc)})") from None
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L")


def _parse_dicom(path: Path, sniffed: bool) -> Dataset:
    """The file's DICOM dataset: a part-10 file, or else a bare dataset without the 128-byte
    preamble and 'DICM' marker, as older scanners and some archives write them.

    A forced read makes some dataset of almost any bytes, so it is kept only if it has what a
    DICOM object has: a SOP class or pixel data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return _with_transfer_syntax(pydicom.dcmread(path, defer_size=DEFER_BYTES))
    except InvalidDicomError:
        pass  # no preamble and 'DICM': read it as a bare dataset below
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read DICOM ({_reason(exc)})") from None
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=True)
        is_dicom = "SOPClassUID" in ds or any(keyword in ds for keyword in PIXEL_DATA)
    except Exception:
        is_dicom = False
    if not is_dicom:
        raise ImageReadError(_unknown_format(path) if sniffed else f"{path}: not a DICOM file (no 'DICM' marker at byte 128, and no DICOM dataset without it)")
    return _with_transfer_syntax(ds)


def _with_transfer_syntax(ds: Dataset) -> Dataset:
    """A dataset whose file meta lacks the transfer syntax (a bare dataset has no file meta) gets the
    one it was read with: pydicom needs it to decode the pixels, which are then uncompressed."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    return ds


def _check_one_image(path: Path, ds: Dataset) -> None:
    """Refuse, before a pixel is decoded, an object with no image, several frames, or too many pixels."""
    if not any(keyword in ds for keyword in PIXEL_DATA):
        sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        if not sop_class:
            raise ImageReadError(f"{path}: cannot read DICOM (neither pixel data nor a SOP class: a damaged or partial file)")
        raise ImageReadError(f"{path}: holds no image (SOP class: {sop_class.name})")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageReadError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; export one frame per file")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(f"{path}: cannot read DICOM (pixel data without Rows and Columns)")
    _check_pixel_count(path, int(ds.Columns), int(ds.Rows))


def _decode_pixels(path: Path, ds: Dataset) -> np.ndarray:
    """The stored pixel values, decoded by the first of pydicom's plugins for the transfer syntax that can.

    pydicom returns YBR_FULL and YBR_FULL_422 colour as RGB (its default `as_rgb`); the JPEG 2000
    decoders undo YBR_ICT and YBR_RCT themselves. A failure names the transfer syntax and the fix.
    """
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageReadError(
            f"{path}: pydicom cannot decode pixel data in {_syntax_name(syntax)}; "
            "convert the file to an uncompressed transfer syntax first (e.g. gdcmconv --raw IN OUT)"
        ) from None
    if not decoder.is_available:
        raise ImageReadError(f"{path}: no decoder for {_syntax_name(syntax)} is installed; {_install_hint(decoder)}")
    if not syntax.is_encapsulated:
        return ds.pixel_array
    _check_codestream_size(path, ds, syntax)
    try:
        return ds.pixel_array
    except Exception as exc:
        tried = "; ".join(line.strip() for line in str(exc).splitlines()[1:]) or _reason(exc)  # pydicom: one line per plugin
        hint = _install_hint(decoder)
        raise ImageReadError(
            f"{path}: no installed decoder could read its {_syntax_name(syntax)} pixel data ({tried}); the data may be damaged: "
            f"if another viewer opens it, {hint + ' or ' if hint else ''}decompress it first (e.g. gdcmconv --raw IN OUT)"
        ) from None


def _syntax_name(syntax: UID) -> str:
    """'JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)', as the messages name a transfer syntax."""
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else f"unknown transfer syntax {syntax}"


def _install_hint(decoder: Decoder) -> str:
    """What to install for the pydicom plugins this decoder could use but are missing ('' if none)."""
    missing = {entry.split(" - ")[0] for entry in decoder.missing_dependencies}
    if missing & {"pylibjpeg", "pyjpegls"}:
        return "pip install 'vgg-edge[dicom]'"
    return "pip install python-gdcm" if "gdcm" in missing else ""


def _check_codestream_size(path: Path, ds: Dataset, syntax: UID) -> None:
    """Refuse compressed pixel data whose own header declares too many pixels, before decoding it.

    The JPEG and JPEG 2000 decoders allocate what the codestream declares, not the DICOM Rows and
    Columns: a few bytes claiming 40000x40000 would otherwise take gigabytes. RLE decodes into
    Rows x Columns, checked already.
    """
    from pydicom.encaps import get_frame
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    if syntax in JPEG2000TransferSyntaxes:
        read_size = _j2k_size
    elif syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        read_size = _jpeg_size
    else:
        return
    size = read_size(get_frame(ds.PixelData, 0, number_of_frames=1))
    if size is None:
        raise ImageReadError(f"{path}: its {_syntax_name(syntax)} pixel data has no readable frame header; the file is damaged")
    _check_pixel_count(path, *size)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the frame header of a JPEG or JPEG-LS codestream (ISO 10918-1 B.2.2), or None."""
    if data[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
        elif marker in _SOF_MARKERS:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return width, height
        else:
            offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
    return None


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the SIZ segment of a JPEG 2000 codestream (ISO 15444-1 A.5.1), also behind a JP2 header, or None."""
    start = data.find(b"\xff\x4f\xff\x51")  # SOC, then SIZ: always the first two markers
    if start < 0 or len(data) < start + 24:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", data, start + 8)
    return width - x_offset, height - y_offset


def _first(value) -> float:
    """Window centre/width may hold several alternative views; the first is the default one."""
    return float(value[0] if isinstance(value, Sequence) else value)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The DICOM VOI window (PS3.3 C.11.2.1.2) mapped straight onto 0-255."""
    function = function.upper()
    if function == "SIGMOID":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        scaled = (values - center) / width + 0.5
    else:  # LINEAR, the default
        scaled = (values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _min_max_8bit(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * 255.0 / (high - low)).astype(np.uint8)


# What the decoders warn about. pydicom reports an odd but readable file through `warnings` and
# through its `pydicom` logger (its plugins through theirs), all process-wide, while `read_images`
# decodes in several threads (where `warnings.catch_warnings` is not safe). So they are routed, for
# the whole process, to the list of the thread that is decoding a file; other threads' warnings and
# records go where they went before. pydicom logs every warning it raises, so its messages are all
# kept even where `warnings` shows a repeated one only once.
_decoding = threading.local()  # .messages: the list of the file this thread is decoding, else None
_routing = threading.Lock()
_warnings_sink: ContextVar[dict[str, str] | None] = ContextVar("vgg_edge_image_warnings", default=None)


def _keep(message: str) -> bool:
    """Keep the first line of `message` for the file this thread is decoding; False when it decodes none (the message goes on as usual)."""
    messages = getattr(_decoding, "messages", None)
    if messages is None:
        return False
    line = next((text.strip() for text in message.splitlines() if text.strip()), "")
    if line and line not in messages:
        messages.append(line)
    return True


class _DecoderRecords(logging.Handler):
    """The decoders' log records: kept for the file being decoded, else handed to the root logger's handlers as propagation would."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _keep(record.getMessage()):
            for handler in logging.getLogger().handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


_DECODER_RECORDS = _DecoderRecords()


def _keeping(shown: Callable[..., None]) -> Callable[..., None]:
    """`warnings.showwarning` that keeps a decoding thread's warnings and passes the others to `shown`."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if not _keep(str(message)):
            shown(message, category, filename, lineno, file, line)

    showwarning.keeps_decoder_messages = True
    return showwarning


def _route_decoder_messages() -> None:
    """Route `warnings` and the decoders' loggers through `_keep`. Checked for every file: a
    `warnings.catch_warnings` block elsewhere (pytest's, a library's) puts back the `showwarning` it found."""
    with _routing:
        if not getattr(warnings.showwarning, "keeps_decoder_messages", False):
            warnings.showwarning = _keeping(warnings.showwarning)
        for name in DECODER_LOGGERS:
            logger = logging.getLogger(name)
            if _DECODER_RECORDS not in logger.handlers:
                logger.addHandler(_DECODER_RECORDS)
                logger.propagate = False  # _DECODER_RECORDS passes on what it does not keep


@contextlib.contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """The warnings and log lines the decoders raise in this thread during the block, collected instead of printed."""
    _route_decoder_messages()
    _decoding.messages = messages = []
    try:
        yield messages
    finally:
        _decoding.messages = None


@contextlib.contextmanager
def collected_warnings() -> Iterator[dict[str, str]]:
    """Every `read_images` call in this block (in this thread) adds its `LoadedImages.warnings` to the dict yielded.

    For callers above an API that does not pass them on, as `vgg-edge predict` around `Predictor.classify`.
    """
    collected: dict[str, str] = {}
    token = _warnings_sink.set(collected)
    try:
        yield collected
    finally:
        _warnings_sink.reset(token)


@dataclass(frozen=True)
class LoadedImages:
    """Decoded pixels for the files that could be read, and the reasons for those that could not."""

    pixels: np.ndarray  # (n, size, size, 3) uint8
    paths: list[Path]
    failures: dict[str, str]  # path -> one-line reason
    warnings: dict[str, str] = field(default_factory=dict)  # path -> "<path>: <the decoders' first warning>", for files read anyway


def read_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> LoadedImages:
    """Decode many images in a thread pool (Pillow releases the GIL while decoding)."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def one(path: str | os.PathLike) -> tuple[np.ndarray, list[str]] | str:
        try:
            return _read_image(Path(path), size)
        except ImageReadError as exc:
            return str(exc)

    ok_pixels: list[np.ndarray] = []
    ok_paths: list[Path] = []
    failures: dict[str, str] = {}
    warned: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, result in zip(paths, pool.map(one, paths)):
            if isinstance(result, str):
                failures[str(path)] = result
            else:
                pixels, messages = result
                ok_pixels.append(pixels)
                ok_paths.append(Path(path))
                if messages:
                    warned[str(path)] = f"{path}: {messages[0]}"
            if on_progress:
                on_progress(1)
    collected = _warnings_sink.get()
    if collected is not None:
        collected.update(warned)
    pixels = np.stack(ok_pixels) if ok_pixels else np.zeros((0, size, size, 3), np.uint8)
    return LoadedImages(pixels, ok_paths, failures, warned)
