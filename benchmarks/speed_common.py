"""What the training-speed benchmarks share: their options, the image sample, the timed epoch, the result file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def parse_args(name: str, **int_options: int) -> argparse.Namespace:
    """The common options (plus `int_options` with their defaults); `args.command` records the call."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    for option, default in int_options.items():
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    args = parser.parse_args()
    args.command = f"benchmarks/{name}.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")
    return args


def train_sample(data: Path, image_size: int, images: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A fixed random sample of the train split: class labels, uint8 pixels, targets."""
    from vgg_edge.data import load_split, plan_split

    manifest = plan_split(data)
    loaded, y = load_split(manifest, "train", image_size, verify=False)
    order = np.random.default_rng(0).permutation(len(y))[:images]
    return manifest.labels, loaded.pixels[order], y[order]


def second_epoch_seconds(net, x: np.ndarray, y: np.ndarray, batch_size: int, learning_rate: float) -> float:
    """Seconds of one training epoch, timed on the second: the first includes tracing."""
    import keras

    net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    times = []
    for _ in range(2):
        start = time.perf_counter()
        net.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return times[1]


def write_result(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
