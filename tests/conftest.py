"""Shared fixtures: real data from ../shared, real weights through $VGG_EDGE_WEIGHTS, one tiny real run.

Nothing here downloads. The session-scoped `trained_run` trains once, at 32 px on the shared
MNIST digits, and every export/bench/predict test reads it. Only fixtures live here: constants
and helper functions shared by test modules live in helpers.py. The test_unit_*.py modules use
none of these fixtures and run in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers import MNIST, SHARED, WEIGHTS  # the data paths live in helpers.py; import them from there

if WEIGHTS.is_file():
    os.environ.setdefault("VGG_EDGE_WEIGHTS", str(WEIGHTS))


def pytest_collection_modifyitems(config, items):
    if not WEIGHTS.is_file() or not MNIST.is_dir():
        raise pytest.UsageError(f"the tests need the shared data beside the checkout ({SHARED}); set VGG_EDGE_SHARED")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real VGG16 run on the shared MNIST digits at 32 px: 2 head epochs + 1 fine-tuning epoch.

    The default recipe otherwise (cached augmentation, temperature), plus an operating point on
    class 9, so that every export, parity, bench and predict test runs with a decision rule.
    """
    from vgg_edge.training import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "mnist-32"
    train(TrainConfig(out=out, data=MNIST, image_size=32, epochs=2, fine_tune_epochs=1, fine_tune_blocks=1, batch_size=64,
                      target_sensitivity=("9", 0.97)))
    return out


@pytest.fixture(scope="session")
def fp32_exports(trained_run: Path, tmp_path_factory) -> Path:
    """fp32 exports of `trained_run` in every format, laid out as `export` does: <root>/<run>/<format>-fp32/.

    Shared by the runtime and bench tests, which only read them (tampering tests work on copies).
    """
    from vgg_edge.export import export_many

    out = tmp_path_factory.mktemp("exported") / trained_run.name
    results = export_many(trained_run, ("onnx", "tflite", "openvino"), ["fp32"], out=out)
    assert all(r.accepted for r in results), [r.manifest["gate"] for r in results]
    return out


@pytest.fixture(scope="session")
def jittered(tmp_path_factory) -> Path:
    """3 classes x 40 distinct images: random crops, shifts and brightness of MNIST digits (so every hash differs), one broken file."""
    root = tmp_path_factory.mktemp("jittered")
    rng = np.random.default_rng(0)
    for digit in ("1", "4", "7"):
        sources = sorted((MNIST / "train" / digit).glob("*.png"))[:10]
        (root / digit).mkdir()
        for i in range(40):
            image = np.asarray(Image.open(sources[i % 10]).convert("L"), np.float32)
            y, x = rng.integers(0, 5, 2)
            crop = np.pad(image, 2)[y:y + 28, x:x + 28] * rng.uniform(0.7, 1.0) + rng.uniform(0, 20)
            Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(root / digit / f"{i:03d}.png")
    (root / "4" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root
