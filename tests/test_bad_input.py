"""`vgg-edge train` (and model loading) against bad input, through the real console script.

A data folder mixing real MNIST digits with every kind of broken file trains, counting what it
skipped; a failing or interrupted train leaves the earlier run byte-identical with no temporary
folders left behind; a model file that would run code on loading is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import MNIST, UNREADABLE, bad_corpus, interrupt_after, leftovers, snapshot, vgg_edge, write_dicom

from vgg_edge.errors import VggEdgeError
from vgg_edge.run import RunDir

TINY_TRAIN = ("--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "0", "--fine-tune-blocks", "0", "--batch-size", "16")


def digits(dest: Path, digit: int, count: int) -> Path:
    """A class folder of real MNIST images (links into the shared data)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted((MNIST / "train" / str(digit)).iterdir())[:count]:
        (dest / path.name).symlink_to(path)
    return dest


@pytest.fixture
def previous_run(trained_run, tmp_path) -> Path:
    """A good earlier run at the --out of the next train."""
    out = tmp_path / "runs" / "good run"
    shutil.copytree(trained_run, out)
    return out


def test_train_skips_and_counts_bad_files(tmp_path):
    """Broken files are skipped, counted and recorded; DICOM, unicode and spaces are fine; loops are not followed."""
    data = tmp_path / "data ñ"
    digits(data / "zero 0", 0, 14)
    ones = digits(data / "uno [1]", 1, 30)
    corpus = bad_corpus(tmp_path / "corpus")
    for name in UNREADABLE:
        shutil.copy(corpus / name, ones / name)
    (ones / "odd [").mkdir()
    (ones / "odd [" / "text].png").write_text("'[/text]' in the path reads as rich markup: it must not break the output")
    rng = np.random.default_rng(3)
    for i in range(3):
        write_dicom(ones / f"scan {i}.dcm", rng.integers(0, 4096, (28, 28)).astype(np.uint16), WindowCenter=2000, WindowWidth=3000)
    (ones / "loop").symlink_to(ones, target_is_directory=True)
    (ones / "loop.png").symlink_to(ones / "loop.png")

    out = tmp_path / "out run"
    proc = vgg_edge("train", "--data", data, "--out", out, *TINY_TRAIN)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 5 and all(line.count(": ") >= 1 and str(ones) in line for line in skipped)  # the first five, named
    report = json.loads((out / "report.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert report["unreadable"] == len(UNREADABLE) + 1
    assert sorted(Path(p).name for p in split["unreadable"]) == sorted([*UNREADABLE, "text].png"])
    assert {Path(e["path"]).name for e in split["entries"]} >= {"scan 0.dcm", "scan 1.dcm", "scan 2.dcm"}
    assert split["labels"] == ["uno [1]", "zero 0"]
    assert leftovers(tmp_path, {"data ñ", "corpus", "out run"}) == []


def test_failed_train_keeps_previous_run(previous_run, tmp_path):
    """A data folder that cannot train (one class has no readable image) fails in one line and touches nothing."""
    data = tmp_path / "data"
    digits(data / "0", 0, 6)
    corpus = bad_corpus(tmp_path / "corpus")
    (data / "1").mkdir()
    for name in UNREADABLE:
        shutil.copy(corpus / name, data / "1" / name)
    before = snapshot(previous_run)
    proc = vgg_edge("train", "--data", data, "--out", previous_run, *TINY_TRAIN)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "class '1' has no usable train images" in errors[0]
    assert snapshot(previous_run) == before
    assert leftovers(previous_run.parent, {previous_run.name}) == []


def test_missing_data_folder_is_one_line(tmp_path):
    proc = vgg_edge("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run", *TINY_TRAIN)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nowhere'}: data folder not found")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_during_train_keeps_previous_run(previous_run, tmp_path):
    data = tmp_path / "data"
    for digit in (0, 1):
        digits(data / str(digit), digit, 60)
    before = snapshot(previous_run)
    status, stderr = interrupt_after(
        ["train", "--data", data, "--out", previous_run, "--image-size", "32", "--epochs", "500", "--patience", "500",
         "--fine-tune-epochs", "0", "--fine-tune-blocks", "0"],
        marker="head epoch 1/500", log=tmp_path / "train.log",
    )
    assert status == 130 and "Traceback" not in stderr, stderr
    assert snapshot(previous_run) == before  # model.keras and every other file byte-identical
    # what --resume goes on from, beside the run and hidden; no half-written run directory
    assert leftovers(previous_run.parent, {previous_run.name}) == [f".{previous_run.name}.resume"]


def test_a_ctrl_c_that_a_library_swallows_still_stops_training_at_the_epoch_end(monkeypatch):
    """The CLI's Ctrl-C raises at once as Python's does, and is remembered: where code that catches everything eats
    the KeyboardInterrupt (CI once saw a run train on for 60 s after Ctrl-C), the epoch's end raises it again."""
    import signal
    import time

    from vgg_edge import interrupt

    monkeypatch.setattr(interrupt, "_pressed", False)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        interrupt.install()
        stop = interrupt.stop_on_ctrl_c()
        stop.on_epoch_end(0, {})  # not pressed: training goes on
        with pytest.raises(KeyboardInterrupt):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the signal interrupts this
            except BaseException:  # what a catch-all inside a library does
                pass
            stop.on_epoch_end(1, {})
    finally:
        signal.signal(signal.SIGINT, previous)


def test_model_loading_never_unpickles(previous_run):
    """A model.keras with a Python lambda in it is refused (Keras safe_mode), by the API and by the CLI."""
    import keras

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, outputs).save(previous_run / "model.keras")
    assert keras.saving.load_model(previous_run / "model.keras", safe_mode=False) is not None  # a valid file, refused only for safety

    with pytest.raises(VggEdgeError, match=r"model\.keras: cannot load the model .*Lambda"):
        RunDir.open(previous_run).load_model()
    proc = vgg_edge("evaluate", previous_run)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.keras: cannot load the model" in proc.stderr
