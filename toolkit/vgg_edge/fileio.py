"""Atomic file writes and hashing.

Every artifact is written to a temporary name beside its destination and renamed into place,
so an interrupted run (Ctrl-C, a crash, a full disk) never leaves a half-written model or
report, and an earlier good file survives until its replacement is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    The suffix is kept so that writers which infer the format from the name (Keras,
    matplotlib) still work.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _default_mode(tmp_path, 0o666)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    write_bytes(dest, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    from .errors import VggEdgeError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise VggEdgeError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VggEdgeError(f"{path}: not valid JSON ({exc}); re-create it with the command that wrote it") from None


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder under a temporary name, then swap it in for `dest`.

    The previous `dest`, if any, is kept until the new one is complete, then removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    _default_mode(tmp, 0o777)
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _default_mode(path: Path, base: int) -> None:
    """mkstemp/mkdtemp make owner-only entries; give the result the mode a plain open/mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, base & ~umask)


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays, Paths, dataclasses: the things results are made of."""
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def cache_dir() -> Path:
    """Where vgg-edge keeps what it can rebuild: the built-in data set, logs ($VGG_EDGE_CACHE, else ~/.cache/vgg-edge)."""
    return Path(os.environ.get("VGG_EDGE_CACHE", Path.home() / ".cache" / "vgg-edge"))
