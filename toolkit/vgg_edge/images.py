"""Image decoding shared by training and the edge runtime.

Both sides call `read_image`, so the pixels an edge device feeds its model are, bit for bit,
the pixels the model was trained and validated on: decode with Pillow (or pydicom), apply the
EXIF orientation, turn any mode (greyscale, palette, RGBA, CMYK, 16-bit) into 8-bit RGB, then
resize to a square with Pillow's bilinear filter. The model itself takes raw RGB 0-255; VGG16's
own preprocessing is inside the graph. This module imports only numpy and Pillow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import VggEdgeError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
#: Larger images are refused before decoding: a decompression bomb must not exhaust memory.
MAX_PIXELS = 64_000_000
RESAMPLE = Image.Resampling.BILINEAR


class ImageReadError(VggEdgeError):
    """An input image that cannot be used; the message names the file and the reason."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode `path` into a (size, size, 3) uint8 RGB array, or raise ImageReadError."""
    path = Path(path)
    try:
        if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
            image = _read_dicom(path)
        else:
            image = _read_raster(path)
        rgb = _to_rgb8(image)
        return np.asarray(rgb.resize((size, size), RESAMPLE), dtype=np.uint8)
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


def _read_raster(path: Path) -> Image.Image:
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixel_count(path, *image.size)
                image.load()
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own, larger limit
        raise ImageReadError(f"{path}: {_reason(exc)}; downscale the image first") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image format Pillow can decode (PNG, JPEG, BMP, GIF, TIFF, WebP) nor DICOM") from None


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


def _read_dicom(path: Path) -> Image.Image:
    """A single-frame DICOM image as 8-bit greyscale (or RGB), the way a viewer would show it.

    Modality LUT (rescale slope/intercept), then the first VOI window when the file has one
    (else its VOI LUT, else the image's own min-max range); MONOCHROME1 is inverted so that
    bone is bright in every file.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageReadError(f"{path}: DICOM input needs pydicom; pip install 'vgg-edge[dicom]'") from None
    try:
        ds = pydicom.dcmread(path)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; export one frame per file")
        _check_pixel_count(path, int(ds.Columns), int(ds.Rows))
        pixels = ds.pixel_array
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


@dataclass(frozen=True)
class LoadedImages:
    """Decoded pixels for the files that could be read, and the reasons for those that could not."""

    pixels: np.ndarray  # (n, size, size, 3) uint8
    paths: list[Path]
    failures: dict[str, str]  # path -> one-line reason


def read_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> LoadedImages:
    """Decode many images in a thread pool (Pillow releases the GIL while decoding)."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def one(path: str | os.PathLike) -> np.ndarray | str:
        try:
            return read_image(path, size)
        except ImageReadError as exc:
            return str(exc)

    ok_pixels: list[np.ndarray] = []
    ok_paths: list[Path] = []
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, result in zip(paths, pool.map(one, paths)):
            if isinstance(result, str):
                failures[str(path)] = result
            else:
                ok_pixels.append(result)
                ok_paths.append(Path(path))
            if on_progress:
                on_progress(1)
    pixels = np.stack(ok_pixels) if ok_pixels else np.zeros((0, size, size, 3), np.uint8)
    return LoadedImages(pixels, ok_paths, failures)
