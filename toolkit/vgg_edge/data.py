"""From a folder of labelled images to a recorded, de-duplicated, stratified split.

Accepted layouts:
    DATA/train/<class>/*, DATA/[val|validation]/<class>/*, DATA/test/<class>/*  (already split)
    DATA/<class>/*                                                          (split here, seeded)

The split is written into the run directory as `split.json`: every file with its split, label
and sha256, so that export and bench later use exactly this test split, and so that a changed
file is noticed. Byte-identical images are kept in one split only (test wins over val, val over
train): a test image that is also a training image would inflate every figure downstream.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import VggEdgeError
from .fileio import read_json, sha256_file, write_json
from .images import ImageReadError, LoadedImages, find_images, read_images

SPLITS = ("train", "val", "test")
#: How a folder without val/ or test/ sub-folders is split (train and import both default to these).
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
SEED = 42
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
#: Priority when the same bytes appear in several splits: the copy in the stronger split stays.
_KEEP_ORDER = {"test": 0, "val": 1, "train": 2}


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the data root, POSIX separators
    split: str
    label: str
    sha256: str


@dataclass
class SplitManifest:
    """Which file is in which split, with what label and content hash."""

    data_root: str
    labels: list[str]
    entries: list[Entry]
    seed: int
    dropped_duplicates: list[dict] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    ignored_files: int = 0

    def files(self, split: str) -> list[Entry]:
        return [e for e in self.entries if e.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for e in self.entries:
            counts[e.split][e.label] += 1
        return {s: c for s, c in counts.items() if sum(c.values())}

    def save(self, path: Path) -> None:
        doc = asdict(self)
        doc["counts"] = self.counts()
        write_json(path, doc)

    @classmethod
    def load(cls, path: Path) -> SplitManifest:
        doc = read_json(path)
        try:
            entries = [Entry(**e) for e in doc["entries"]]
            return cls(
                data_root=doc["data_root"],
                labels=list(doc["labels"]),
                entries=entries,
                seed=int(doc["seed"]),
                dropped_duplicates=doc.get("dropped_duplicates", []),
                unreadable=doc.get("unreadable", {}),
                ignored_files=int(doc.get("ignored_files", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise VggEdgeError(f"{path}: not a vgg-edge split manifest (missing {exc}); re-run `vgg-edge train`") from None


def plan_split(root: Path, val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION, seed: int = SEED) -> SplitManifest:
    """Discover, validate, hash, de-duplicate and split the images under `root` (no decoding yet)."""
    root = Path(root)
    if not root.is_dir():
        raise VggEdgeError(f"{root}: data folder not found; pass --data with one sub-folder per class (or train/ and test/)")
    tree, ignored = _discover(root)
    labels = _validate(root, tree)
    hashed = {split: {lab: [(p, sha256_file(p)) for p in files] for lab, files in classes.items()} for split, classes in tree.items()}
    kept, dropped = _drop_duplicates(root, hashed)
    rng = np.random.default_rng(seed)
    if "test" not in kept:
        kept["test"] = _carve(kept["train"], test_fraction, rng)
    if "val" not in kept:
        kept["val"] = _carve(kept["train"], val_fraction, rng)
    entries = [
        Entry(path.relative_to(root).as_posix(), split, label, digest)
        for split in SPLITS
        for label in labels
        for path, digest in kept[split].get(label, [])
    ]
    manifest = SplitManifest(str(root.resolve()), labels, entries, seed, dropped, {}, ignored)
    _check_nonempty(manifest)
    return manifest


def load_split(manifest: SplitManifest, split: str, size: int, on_progress=None, verify: bool = True) -> tuple[LoadedImages, np.ndarray]:
    """Decode one split; returns the images and their integer labels.

    With `verify`, every file's sha256 is checked against the manifest first: a figure computed
    on different bytes than the ones recorded would not be the figure it claims to be.
    """
    root = Path(manifest.data_root)
    entries = manifest.files(split)
    paths = [root / e.path for e in entries]
    if verify:
        for path, entry in zip(paths, entries):
            if not path.is_file():
                raise VggEdgeError(f"{path}: listed in the run's split manifest but missing; restore the data folder {root}")
            if sha256_file(path) != entry.sha256:
                raise VggEdgeError(f"{path}: content changed since training (sha256 differs from the split manifest); restore the original file")
    loaded = read_images(paths, size, on_progress=on_progress)
    index = {lab: i for i, lab in enumerate(manifest.labels)}
    by_path = {str(p): e.label for p, e in zip(paths, entries)}
    y = np.array([index[by_path[str(p)]] for p in loaded.paths], dtype=np.int64)
    return loaded, y


def drop_unreadable(manifest: SplitManifest, failures: dict[str, str]) -> None:
    """Remove files that could not be decoded from the manifest and record why."""
    if not failures:
        return
    root = Path(manifest.data_root)
    rel = {Path(p).relative_to(root).as_posix(): why for p, why in failures.items()}
    manifest.unreadable.update(rel)
    manifest.entries = [e for e in manifest.entries if e.path not in rel]
    _check_nonempty(manifest)


def _discover(root: Path) -> tuple[dict[str, dict[str, list[Path]]], int]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {_SPLIT_ALIASES[p.name.lower()]: p for p in subdirs if p.name.lower() in _SPLIT_ALIASES}
    if split_dirs and "train" not in split_dirs:
        raise VggEdgeError(f"{root}: has {', '.join(sorted(split_dirs))}/ but no train/ folder; add train/<class>/ images")
    layout = split_dirs or {"train": root}
    tree: dict[str, dict[str, list[Path]]] = {}
    ignored = 0
    for split, folder in layout.items():
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        tree[split] = {}
        for cls in classes:
            files, skipped = find_images(cls)
            tree[split][cls.name] = files
            ignored += skipped
    return tree, ignored


def _validate(root: Path, tree: dict[str, dict[str, list[Path]]]) -> list[str]:
    labels = sorted(tree["train"])
    if not labels:
        raise VggEdgeError(f"{root}: no class folders found; put images in one sub-folder per class, e.g. {root}/glioma/*.jpg")
    if len(labels) < 2:
        raise VggEdgeError(f"{root}: only one class ({labels[0]}); a classifier needs at least two class folders")
    for split, classes in tree.items():
        if sorted(classes) != labels:
            diff = sorted(set(classes) ^ set(labels))
            raise VggEdgeError(
                f"{root}: the classes of {split}/ differ from train/ ({', '.join(diff)}); every split needs the same class folders"
            )
        for label, files in classes.items():
            if not files:
                where = root / split / label if split != "train" or (root / "train").is_dir() else root / label
                raise VggEdgeError(f"{where}: class folder has no images; add images or remove the folder")
    return labels


def _drop_duplicates(root: Path, hashed):
    """Keep one copy of each distinct file content: test over val over train, then first by path."""
    owners: dict[str, tuple[str, str, Path]] = {}
    for split in sorted(hashed, key=_KEEP_ORDER.__getitem__):
        for label in sorted(hashed[split]):
            for path, digest in hashed[split][label]:
                owners.setdefault(digest, (split, label, path))
    kept: dict[str, dict[str, list[tuple[Path, str]]]] = defaultdict(lambda: defaultdict(list))
    dropped = []
    for split, classes in hashed.items():
        for label, files in classes.items():
            for path, digest in files:
                owner = owners[digest]
                if owner[2] == path:
                    kept[split][label].append((path, digest))
                else:
                    dropped.append({
                        "path": path.relative_to(root).as_posix(), "split": split, "label": label,
                        "duplicate_of": owner[2].relative_to(root).as_posix(), "duplicate_split": owner[0],
                        "label_conflict": owner[1] != label,
                    })
    return {s: dict(c) for s, c in kept.items()}, dropped


def _carve(pool: dict[str, list], fraction: float, rng: np.random.Generator) -> dict[str, list]:
    """Move a stratified, seeded `fraction` of each class out of `pool` (at least one image if it can)."""
    carved: dict[str, list] = {}
    for label in sorted(pool):
        items = pool[label]
        take = min(max(1, round(fraction * len(items))), len(items) - 1) if fraction > 0 else 0
        order = rng.permutation(len(items))
        chosen = set(order[:take].tolist())
        carved[label] = [it for i, it in enumerate(items) if i in chosen]
        pool[label] = [it for i, it in enumerate(items) if i not in chosen]
    return carved


def _check_nonempty(manifest: SplitManifest) -> None:
    counts = manifest.counts()
    for split in ("train", "test"):
        for label in manifest.labels:
            if counts.get(split, {}).get(label, 0) == 0:
                raise VggEdgeError(
                    f"{manifest.data_root}: class '{label}' has no usable {split} images after de-duplication and "
                    "unreadable files; add images to that class"
                )


def builtin_digits(cache_dir: Path | None = None) -> Path:
    """The built-in offline data set: scikit-learn's 1,797 real 8x8 handwritten digits.

    Materialised once as greyscale 32x32 PNGs in one folder per class (the same task as the
    MNIST-to-RGB seed notebook); training turns them into RGB at the requested size.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from .fileio import atomic_dir, cache_dir as default_cache_dir

    dest = Path(cache_dir or default_cache_dir()) / "sklearn-digits"
    if (dest / "9").is_dir():
        return dest
    digits = load_digits()
    with atomic_dir(dest) as tmp:
        for i, (image, target) in enumerate(zip(digits.images, digits.target)):
            folder = tmp / str(target)
            folder.mkdir(exist_ok=True)
            grey = Image.fromarray((image * (255.0 / 16.0)).round().astype(np.uint8), "L")
            grey.resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"digit_{i:04d}.png")
    return dest


def label_counts(y: np.ndarray, n_classes: int) -> list[int]:
    counts = Counter(y.tolist())
    return [counts.get(i, 0) for i in range(n_classes)]


__all__ = ["Entry", "SplitManifest", "plan_split", "load_split", "drop_unreadable", "label_counts", "ImageReadError"]
