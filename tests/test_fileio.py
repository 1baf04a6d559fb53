"""Atomic writes: a failure mid-write keeps the previous file or folder, and modes follow the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vgg_edge.fileio import atomic_dir, atomic_path, write_json


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"good" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_failed_folder_keeps_the_previous_folder(tmp_path: Path) -> None:
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "model.keras").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(dest) as tmp:
            (tmp / "model.keras").write_text("new")
            raise KeyboardInterrupt
    assert (dest / "model.keras").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run"]
    with atomic_dir(dest) as tmp:
        (tmp / "model.keras").write_text("new")
    assert (dest / "model.keras").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_modes_follow_the_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
