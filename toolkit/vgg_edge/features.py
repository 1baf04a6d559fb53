"""Training input that does not grow with the data: splits decoded batch by batch, features cached on disk.

`SplitStream` decodes a recorded split a batch at a time with the edge decoder (`images.read_images`,
so the pixels stay those `predict` sees); nothing holds a whole split. Files that do not decode are
collected as they are met, and their rows are left out of everything trained on.

`FeatureStore` holds the output of a frozen part of VGG16 for every image of a split, in `views`
versions (view 0 the image itself, the others augmented), as one `.npy` file per view under the
feature cache (`$VGG_EDGE_CACHE/features/<key>/`). Rows are written and read with positional file
I/O, never memory-mapped, so a training process's memory stays one batch deep however many images
there are (the OS page cache keeps what it can). The key covers everything the features depend on:
the weights file's hash, the cut layer, the image size, the views and augmentation, the seed, the
mixed-precision policy and every image's sha256; `meta.json`, written last, records it. A folder
whose meta does not match its key, or whose files are not complete, is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import SplitManifest
from .fileio import cache_dir, write_json
from .images import read_images
from .ui import progress

CACHE_VERSION = 1
META = "meta.json"


@dataclass
class SplitStream:
    """One recorded split, decoded on demand; `failures` fills up as batches are read."""

    manifest: SplitManifest
    split: str
    size: int

    def __post_init__(self) -> None:
        self.entries = self.manifest.files(self.split)
        index = {label: i for i, label in enumerate(self.manifest.labels)}
        self.labels = np.array([index[e.label] for e in self.entries], np.int64)
        self.paths = [Path(self.manifest.data_root) / e.path for e in self.entries]
        self.failures: dict[str, str] = {}
        self._failed_rows: set[int] = set()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def valid(self) -> np.ndarray:
        """Rows that decoded (all of them until a batch says otherwise)."""
        return np.array([i for i in range(len(self)) if i not in self._failed_rows], np.int64)

    def forget(self, failures: dict[str, str]) -> None:
        """Record failures found by an earlier run (the feature cache's), without decoding again."""
        by_path = {str(p): i for i, p in enumerate(self.paths)}
        for path, why in failures.items():
            if path in by_path:
                self._failed_rows.add(by_path[path])
                self.failures[path] = why

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows that decoded, their uint8 pixels); the others are recorded in `failures`."""
        loaded = read_images([self.paths[i] for i in rows], self.size)
        ok = np.ones(len(rows), bool)
        if loaded.failures:
            for k, i in enumerate(rows):
                if str(self.paths[i]) in loaded.failures:
                    ok[k] = False
                    self._failed_rows.add(int(i))
            self.failures.update(loaded.failures)
        return np.asarray(rows)[ok], loaded.pixels

    def batches(self, batch_size: int, description: str, rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, pixels) batch by batch, in order, with a progress bar."""
        rows = np.arange(len(self)) if rows is None else rows
        with progress(description, len(rows)) as advance:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                yield self.read(chunk)
                advance(len(chunk))


class FeatureStore:
    """(views, n, *shape) features of one split on disk, one .npy per view; rows read with pread."""

    def __init__(self, folder: Path, name: str, views: int, n: int, shape: tuple[int, ...], dtype: np.dtype):
        self.folder, self.name, self.views, self.n, self.shape, self.dtype = folder, name, views, n, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._offsets: dict[int, int] = {}
        self._fds: dict[int, int] = {}

    def path(self, view: int) -> Path:
        return self.folder / f"{self.name}.v{view}.npy"

    def create(self) -> None:
        """Allocate every view's file (sparse: nothing is written yet)."""
        for view in range(self.views):
            np.lib.format.open_memmap(self.path(view), mode="w+", dtype=self.dtype, shape=(self.n, *self.shape)).flush()

    def _fd(self, view: int, writable: bool = False) -> tuple[int, int]:
        if view not in self._fds:
            path = self.path(view)
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(handle)
                self._offsets[view] = handle.tell()  # where the rows start
            self._fds[view] = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        return self._fds[view], self._offsets[view]

    def write(self, view: int, rows: np.ndarray, values: np.ndarray) -> None:
        fd, offset = self._fd(view, writable=True)
        values = np.ascontiguousarray(values, self.dtype)
        for row, value in zip(rows, values):
            os.pwrite(fd, value.tobytes(), offset + int(row) * self.row_bytes)

    def read(self, views: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Rows `rows`, each from its view in `views`, as one float32 batch."""
        out = np.empty((len(rows), *self.shape), self.dtype)
        for k, (view, row) in enumerate(zip(views, rows)):
            fd, offset = self._fd(int(view))
            out[k] = np.frombuffer(os.pread(fd, self.row_bytes, offset + int(row) * self.row_bytes), self.dtype).reshape(self.shape)
        return out.astype(np.float32)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def record(self) -> dict:
        return {"name": self.name, "views": self.views, "n": self.n, "shape": list(self.shape), "dtype": self.dtype.name}

    def complete(self) -> bool:
        expected = self.n * self.row_bytes
        return all(self.path(v).is_file() and self.path(v).stat().st_size >= expected for v in range(self.views))

    @property
    def nbytes(self) -> int:
        return self.views * self.n * self.row_bytes


def cache_key(**parts) -> str:
    """A stable hash of everything a cached feature set depends on."""
    return hashlib.sha256(json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """A folder of FeatureStores made under one key; reused when its meta.json says the same key."""

    def __init__(self, key: str, root: Path | None = None):
        self.key = key
        self.folder = (root or cache_dir() / "features") / key[:24]
        self.meta_path = self.folder / META
        self.reused = False

    def stores(self) -> dict[str, FeatureStore] | None:
        """The stores recorded under this key, if the folder holds them complete; else None (and the folder is cleared)."""
        try:
            meta = json.loads(self.meta_path.read_text())
            stores = {name: FeatureStore(self.folder, name, r["views"], r["n"], tuple(r["shape"]), np.dtype(r["dtype"])) for name, r in meta["stores"].items()}
            if meta["key"] == self.key and all(s.complete() for s in stores.values()):
                self.reused = True
                return stores
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
        return None

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def commit(self, stores: dict[str, FeatureStore], extra: dict) -> None:
        """Record the finished stores: only now is the folder trusted by a later run."""
        write_json(self.meta_path, {"key": self.key, "stores": {n: s.record() for n, s in stores.items()}, **extra})


def extract(model, stream: SplitStream, views: int, batch_size: int, folder: Path, name: str,
            transform: Callable[[int], object] | None = None, dtype: np.dtype | None = None) -> FeatureStore:
    """Run the frozen `model` over every image of `stream` in `views` versions (view 0 as is, view v through
    `transform(v)` in training mode), written row by row to `folder`. Each image is decoded once.

    Stored as float16 unless the first batch comes near its range (`dtype` forces one); a later batch that
    overflows float16 raises OverflowError (the caller extracts again as float32)."""
    shape = tuple(int(d) for d in model.output_shape[1:])
    store = None
    forward = compiled_forward(model)
    augmenters = {v: transform(v) for v in range(1, views)} if transform else {}
    for rows, pixels in stream.batches(batch_size, f"frozen features {stream.split}, {views} view{'s' if views > 1 else ''}"):
        if not len(rows):
            continue
        batch = pixels.astype(np.float32)
        outputs = [np.asarray(forward(batch)).astype(np.float32)]
        outputs += [np.asarray(forward(np.asarray(augmenters[v](batch, training=True)))).astype(np.float32) for v in range(1, views)]
        if store is None:
            near = max(float(np.abs(o).max()) for o in outputs) >= np.finfo(np.float16).max / 8
            store = FeatureStore(folder, name, views, len(stream), shape, dtype or (np.float32 if near else np.float16))
            store.create()
        if store.dtype == np.float16 and max(float(np.abs(o).max()) for o in outputs) >= np.finfo(np.float16).max:
            raise OverflowError(f"{name}: activations beyond float16; extract again as float32")
        for v, out in enumerate(outputs):
            store.write(v, rows, out)
    if store is None:  # nothing decoded
        store = FeatureStore(folder, name, views, len(stream), shape, dtype or np.float16)
        store.create()
    return store


def transform_store(model, source: FeatureStore, name: str, batch_size: int) -> FeatureStore:
    """`model` (frozen layers) applied to every row of every view of `source`: a new store beside it."""
    shape = tuple(int(d) for d in model.output_shape[1:])
    store = FeatureStore(source.folder, name, source.views, source.n, shape, source.dtype)
    store.create()
    forward = compiled_forward(model)
    with progress(f"frozen blocks {name}", source.views * source.n) as advance:
        for view in range(source.views):
            for start in range(0, source.n, batch_size):
                rows = np.arange(start, min(start + batch_size, source.n))
                out = np.asarray(forward(source.read(np.full(len(rows), view), rows))).astype(np.float32)
                store.write(view, rows, out)
                advance(len(rows))
    return store


def compiled_forward(model):
    """`model` in inference mode, as one compiled function. Called directly rather than through `predict`,
    which under a multi-worker strategy gathers every worker's outputs."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
