"""`train --resume` after a SIGKILL in the middle of fine-tuning ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vgg_edge.errors import VggEdgeError
from vgg_edge.run import RunDir

ARGS = ["--image-size", "32", "--epochs", "3", "--fine-tune-epochs", "3", "--fine-tune-blocks", "1", "--batch-size", "16", "--views", "2", "--patience", "5"]


def settings(data: Path, out: Path, **extra):
    from vgg_edge.training import TrainConfig

    return TrainConfig(out=out, data=data, image_size=32, epochs=3, fine_tune_epochs=3, fine_tune_blocks=1, batch_size=16, views=2, patience=5, **extra)


def test_sigkill_during_fine_tuning_then_resume_gives_the_uninterrupted_model(jittered: Path, tmp_path: Path, monkeypatch):
    from vgg_edge.training import train

    monkeypatch.setenv("VGG_EDGE_CACHE", str(tmp_path / "cache"))
    whole = train(settings(jittered, tmp_path / "whole"))

    out = tmp_path / "killed"
    state = out.parent / f".{out.name}.resume" / "phase1" / "checkpoint" / "checkpoint"  # a fine-tuning epoch is saved
    proc = subprocess.Popen([sys.executable, "-m", "vgg_edge", "train", "--data", str(jittered), "--out", str(out), *ARGS],
                            env={**os.environ, "VGG_EDGE_CACHE": str(tmp_path / "cache")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert state.is_file() and not out.exists()  # killed mid-phase: no run directory yet, a resume folder

    resumed = train(settings(jittered, out, resume=True))
    assert resumed.report["resumed"] and not whole.report["resumed"]
    assert resumed.report["selection"] == whole.report["selection"]
    a, b = RunDir.open(whole.run).load_model().get_weights(), RunDir.open(resumed.run).load_model().get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert resumed.metrics["confusion_matrix"] == whole.metrics["confusion_matrix"]
    assert not (out.parent / f".{out.name}.resume").exists()  # cleaned up once the run directory is written


def test_resume_with_other_settings_is_refused_in_one_line(jittered: Path, tmp_path: Path, monkeypatch):
    from vgg_edge.resume import TrainingCheckpoint

    out = tmp_path / "run"
    TrainingCheckpoint(out, {"epochs": 3}, resume=False)
    with pytest.raises(VggEdgeError, match="left by a run with other settings; run without --resume"):
        TrainingCheckpoint(out, {"epochs": 4}, resume=True)
    assert TrainingCheckpoint(out, {"epochs": 3}, resume=True).resumed
