"""The shared decoder on real files of every awkward kind, DICOM included, built here with Pillow and pydicom.

Every check compares decoded pixels with values worked out independently (by hand or with
Pillow/numpy directly), so a change of behaviour in `images.read_image` fails a test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import READABLE, UNREADABLE, bad_corpus, png_claiming, write_dicom
from PIL import Image

from vgg_edge.data import load_split, plan_split
from vgg_edge.images import MAX_PIXELS, ImageReadError, find_images, read_image, read_images


def grey(rgb: np.ndarray) -> np.ndarray:
    """The single channel of a decoded greyscale image (all three must be equal)."""
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


RAMP = np.array([[0, 1000, 2000, 3000], [500, 1500, 2500, 3500], [0, 0, 4000, 4000], [100, 200, 300, 400]], dtype=np.uint16)


def test_dicom_16bit_min_max_and_monochrome1_inverted(tmp_path):
    size = RAMP.shape[0]  # no resize: the decoded values themselves are compared
    expected = np.round((RAMP - 0.0) * 255.0 / 4000.0).astype(np.uint8)
    mono2 = grey(read_image(write_dicom(tmp_path / "m2.dcm", RAMP), size))
    mono1 = grey(read_image(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1"), size))
    assert (mono2 == expected).all()
    assert (mono1 == 255 - expected).all()


def test_dicom_rescale_then_window(tmp_path):
    """CT-style: stored values -> Hounsfield units (slope 1, intercept -1024) -> soft-tissue window 40/400."""
    path = write_dicom(tmp_path / "ct.dcm", RAMP, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    hu = RAMP.astype(np.float64) - 1024
    # PS3.3 C.11.2.1.2, LINEAR: below c-0.5-(w-1)/2 -> 0, above c-0.5+(w-1)/2 -> 255, linear between
    expected = np.round(np.clip((hu - 39.5) / 399.0 + 0.5, 0, 1) * 255).astype(np.uint8)
    got = grey(read_image(path, 4))
    assert (got == expected).all()
    assert got[0, 1] == 87  # -24 HU: ((-24 - 39.5) / 399 + 0.5) * 255 = 86.9, worked by hand
    assert got[0, 0] == 0 and got[1, 1] == 255  # -1024 HU below the window, 476 HU above it
    # without the window the same file would be stretched min-max over its HU range instead
    plain = grey(read_image(write_dicom(tmp_path / "noWindow.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1024), 4))
    assert (plain == np.round(RAMP * 255.0 / 4000.0).astype(np.uint8)).all()  # a linear map keeps min-max order


@pytest.mark.parametrize(
    "function, expected",
    [
        ("LINEAR_EXACT", lambda v: np.clip((v - 1800.0) / 1000.0 + 0.5, 0, 1)),
        ("SIGMOID", lambda v: 1.0 / (1.0 + np.exp(-4.0 * (v - 1800.0) / 1000.0))),
    ],
)
def test_dicom_voi_functions(tmp_path, function, expected):
    path = write_dicom(tmp_path / "w.dcm", RAMP, WindowCenter=1800, WindowWidth=1000, VOILUTFunction=function)
    assert (grey(read_image(path, 4)) == np.round(expected(RAMP.astype(np.float64)) * 255).astype(np.uint8)).all()


def test_dicom_zero_window_width_ignored(tmp_path):
    path = write_dicom(tmp_path / "w0.dcm", RAMP, WindowCenter=1800, WindowWidth=0)
    assert (grey(read_image(path, 4)) == np.round(RAMP * 255.0 / 4000.0).astype(np.uint8)).all()


def test_dicom_multi_frame_refused(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ImageReadError, match=r"cine\.dcm: multi-frame DICOM \(3 frames\)"):
        read_image(path, 8)


def test_dicom_found_by_preamble_and_broken_dicom_named(tmp_path):
    no_suffix = write_dicom(tmp_path / "scan.png", RAMP)  # wrong name, DICM preamble decides
    assert grey(read_image(no_suffix, 4))[3, 3] == round(400 * 255 / 4000)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(ImageReadError, match=r"broken\.dcm: cannot read DICOM"):
        read_image(broken, 4)


def test_training_reads_dicom_class_folders(tmp_path):
    """`train`'s data path (plan_split + load_split) takes .dcm files through the same reader."""
    rng = np.random.default_rng(0)
    for label in ("benign", "malignant"):
        for i in range(4):
            folder = tmp_path / "data" / label
            folder.mkdir(parents=True, exist_ok=True)
            write_dicom(folder / f"{i}.dcm", rng.integers(0, 4096, (12, 12), dtype=np.uint16), WindowCenter=2048, WindowWidth=4096)
    manifest = plan_split(tmp_path / "data", val_fraction=0.25, test_fraction=0.25, seed=1)
    assert len(manifest.entries) == 8 and not manifest.unreadable
    loaded, y = load_split(manifest, "train", 12)
    assert not loaded.failures and len(loaded.paths) == len(y) == 4
    for path, pixels in zip(loaded.paths, loaded.pixels):
        assert (pixels == read_image(path, 12)).all()


@pytest.mark.parametrize("width", [9_000, 20_000])  # over our limit; over Pillow's own hard limit too
def test_decompression_bomb_refused_before_decoding(tmp_path, width):
    assert width * width > MAX_PIXELS
    path = png_claiming(tmp_path / f"bomb {width}.png", width, width)
    with pytest.raises(ImageReadError) as err:
        read_image(path, 32)
    message = str(err.value)
    assert message.startswith(str(path)) and "decompression bomb" in message and "\n" not in message


def test_unreadable_files_named_in_one_line(tmp_path):
    good = tmp_path / "ok.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    cases = {
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "truncated.jpg": good.read_bytes()[: len(good.read_bytes()) // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    for name in [*cases, "loop.png"]:
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name, 32)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(err.value)
    loaded = read_images([good, *(tmp_path / n for n in cases)], 32)
    assert loaded.paths == [good] and sorted(Path(p).name for p in loaded.failures) == sorted(cases)


def test_pixel_modes_become_8bit_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)

    deep = (rng.integers(0, 65536, (16, 16))).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit greyscale PNG
    assert (grey(read_image(tmp_path / "deep.png", 16)) == np.round(deep / 257.0).astype(np.uint8)).all()

    alpha = np.dstack([rgb, rng.integers(0, 256, (16, 16), dtype=np.uint8)])
    Image.fromarray(alpha, "RGBA").save(tmp_path / "alpha.png")
    assert (read_image(tmp_path / "alpha.png", 16) == rgb).all()  # alpha dropped, colour kept

    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert (read_image(tmp_path / "palette.png", 16) == np.asarray(palette.convert("RGB"))).all()

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as cmyk:
        assert cmyk.mode == "CMYK"
        assert (read_image(tmp_path / "cmyk.jpg", 16) == np.asarray(cmyk.convert("RGB"))).all()


def test_exif_orientation_applied(tmp_path):
    """A 40x20 photo, dark left half, stored with orientation 6 (display rotated 90 degrees clockwise)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "rotated.jpg", 8).mean(axis=(1, 2))
    assert shown[:3].max() < 30 and shown[-3:].min() > 225  # dark on top, bright below, as a viewer shows it


def test_find_images_skips_loops_hidden_and_non_images(tmp_path):
    folder = tmp_path / "scans ünïcode"
    (folder / "sub").mkdir(parents=True)
    Image.new("L", (4, 4)).save(folder / "a [1].png")
    Image.new("L", (4, 4)).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # a folder loop is not followed
    (folder / "self.png").symlink_to(folder / "self.png")  # a file loop is skipped
    found, skipped = find_images(folder)
    assert found == [folder / "a [1].png", folder / "sub" / "b.jpg"]
    assert skipped == 3


def test_bad_corpus_decodes_or_names_each_file(tmp_path):
    folder = bad_corpus(tmp_path / "corpus")
    found, skipped = find_images(folder)
    assert sorted(p.name for p in found) == sorted(READABLE + UNREADABLE) and skipped == 1  # the looping link
    loaded = read_images(found, 32)
    assert sorted(p.name for p in loaded.paths) == sorted(READABLE)
    assert sorted(Path(p).name for p in loaded.failures) == sorted(UNREADABLE)
    for path, why in loaded.failures.items():
        assert why.startswith(f"{path}: ") and "\n" not in why
