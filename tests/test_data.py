"""Split planning on real images: layouts, seeded stratification, cross-split duplicates, bad layouts."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import BRAIN, MNIST

from vgg_edge.data import builtin_digits, drop_unreadable, load_split, plan_split
from vgg_edge.errors import VggEdgeError


def _copy_class_images(src: Path, dest: Path, n: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(src.iterdir())[:n]:
        shutil.copy(path, dest / path.name)
        copied.append(dest / path.name)
    return copied


@pytest.fixture
def presplit(tmp_path: Path) -> Path:
    """Real brain-MRI images in train/ and test/, with test images copied into train like the public set."""
    root = tmp_path / "mri"
    for cls in ("glioma", "notumor"):
        _copy_class_images(BRAIN / "train" / cls, root / "train" / cls, 12)
        test = _copy_class_images(BRAIN / "test" / cls, root / "test" / cls, 5)
        shutil.copy(test[0], root / "train" / cls / f"leaked_{test[0].name}")
    # the same bytes under another class name in train: a label conflict
    shutil.copy(root / "test" / "glioma" / sorted((root / "test" / "glioma").iterdir())[1].name, root / "train" / "notumor" / "conflict.jpg")
    return root


def test_presplit_layout_drops_test_copies_from_train(presplit: Path) -> None:
    m = plan_split(presplit, val_fraction=0.25, seed=1)
    assert m.labels == ["glioma", "notumor"]
    dropped = {d["path"]: d for d in m.dropped_duplicates}
    assert set(dropped) == {"train/glioma/leaked_" + sorted((presplit / "test/glioma").iterdir())[0].name,
                            "train/notumor/leaked_" + sorted((presplit / "test/notumor").iterdir())[0].name,
                            "train/notumor/conflict.jpg"}
    assert dropped["train/notumor/conflict.jpg"]["label_conflict"] is True
    assert all(d["duplicate_split"] == "test" for d in dropped.values())
    hashes = {s: {e.sha256 for e in m.files(s)} for s in ("train", "val", "test")}
    assert not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"] and not hashes["train"] & hashes["val"]
    counts = m.counts()
    assert counts["test"] == {"glioma": 5, "notumor": 5}  # the test split is kept whole
    assert counts["val"] == {"glioma": 3, "notumor": 3}  # 25% of the 12 de-duplicated train images
    assert counts["train"] == {"glioma": 9, "notumor": 9}


def test_single_folder_is_split_stratified_and_repeatably(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    for digit in "012":
        _copy_class_images(MNIST / "train" / digit, root / digit, 40)
    a = plan_split(root, val_fraction=0.15, test_fraction=0.25, seed=7)
    b = plan_split(root, val_fraction=0.15, test_fraction=0.25, seed=7)
    c = plan_split(root, val_fraction=0.15, test_fraction=0.25, seed=8)
    assert a.entries == b.entries
    assert [e.path for e in a.files("test")] != [e.path for e in c.files("test")]
    for split, share in (("test", 10), ("val", 4), ("train", 26)):
        assert Counter(e.label for e in a.files(split)) == {"0": share, "1": share, "2": share}
    assert len({e.path for e in a.entries}) == 120


def test_real_brain_mri_has_no_duplicates_left_across_splits() -> None:
    """The shared set was cleaned of 216 test images repeated in train; hashing confirms it."""
    m = plan_split(BRAIN, seed=0)
    assert m.dropped_duplicates == []
    assert sum(m.counts()["test"].values()) == 1281


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"a": 2}, "only one class"),
        ({"a": 2, "b": 0}, "class folder has no images"),
        ({"train/a": 2, "train/b": 2, "test/a": 1, "test/c": 1}, "differ from train"),
        ({"test/a": 1, "test/b": 1}, "no train/ folder"),
        ({}, "no class folders"),
    ],
)
def test_bad_layouts_fail_before_training(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    source = sorted((MNIST / "train" / "3").iterdir())
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            shutil.copy(source[i], tmp_path / folder / f"{i}.png")
    with pytest.raises(VggEdgeError, match=message):
        plan_split(tmp_path)


def test_unreadable_files_are_skipped_and_recorded(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for digit in "01":
        _copy_class_images(MNIST / "train" / digit, root / "train" / digit, 6)
        _copy_class_images(MNIST / "test" / digit, root / "test" / digit, 3)
    (root / "train" / "0" / "broken.png").write_text("not an image")
    (root / "train" / "1" / "notes.txt").write_text("ignored: not an image suffix")
    m = plan_split(root, val_fraction=0.2)
    assert m.ignored_files == 1
    loaded, y = load_split(m, "train", 32, verify=False)
    assert len(loaded.failures) == 1 and "broken.png" in next(iter(loaded.failures.values()))
    drop_unreadable(m, loaded.failures)
    assert list(m.unreadable) == ["train/0/broken.png"]
    assert all(e.path != "train/0/broken.png" for e in m.entries)
    assert loaded.pixels.shape[1:] == (32, 32, 3) and loaded.pixels.dtype == np.uint8
    # greyscale became 3 identical channels
    assert np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 2])
    assert len(y) == len(loaded.paths)


def test_changed_file_is_caught_when_the_split_is_reloaded(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for digit in "01":
        _copy_class_images(MNIST / "train" / digit, root / "train" / digit, 4)
        _copy_class_images(MNIST / "test" / digit, root / "test" / digit, 2)
    m = plan_split(root)
    victim = root / m.files("test")[0].path
    victim.write_bytes((root / m.files("test")[1].path).read_bytes())
    with pytest.raises(VggEdgeError, match="content changed since training"):
        load_split(m, "test", 32)


def test_builtin_digits_are_materialised_offline(tmp_path: Path) -> None:
    root = builtin_digits(tmp_path)
    counts = {d.name: len(list(d.iterdir())) for d in root.iterdir()}
    assert sorted(counts) == [str(i) for i in range(10)] and sum(counts.values()) == 1797
    assert builtin_digits(tmp_path) == root  # cached: the second call does nothing
    m = plan_split(root)
    assert sum(m.counts()["test"].values()) == pytest.approx(0.15 * 1797, abs=10)
