"""Per-epoch speed of phase 1 (head on the frozen base): cached features vs running VGG16 every epoch.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 \
        .venv/bin/python benchmarks/feature_cache_speedup.py --data ../shared/data/brain-mri --image-size 128 --images 640

Both loops train the same head with the same optimizer on the same images; each is timed on its
second epoch (the first includes tracing). The one-off cost of extracting the features is
reported separately: it is paid once, not every epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "feature_cache_speedup.json")
    args = parser.parse_args()

    import keras

    from vgg_edge.data import load_split, plan_split
    from vgg_edge.model import build_model, split_at
    from vgg_edge.training import _set_trainable
    from vgg_edge.weights import resolve_weights

    keras.utils.set_random_seed(0)
    manifest = plan_split(args.data)
    loaded, y = load_split(manifest, "train", args.image_size, verify=False)
    order = np.random.default_rng(0).permutation(len(y))[: args.images]
    x, y = loaded.pixels[order].astype(np.float32), y[order]

    model = build_model(len(manifest.labels), args.image_size, resolve_weights("imagenet"))
    _set_trainable(model, first_block=6)  # phase 1: the whole base frozen
    base, head = split_at(model, "block5_pool")

    def second_epoch_seconds(net, inputs) -> float:
        net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        times = []
        for _ in range(2):
            start = time.perf_counter()
            net.fit(inputs, y, batch_size=args.batch_size, epochs=1, verbose=0)
            times.append(time.perf_counter() - start)
        return times[1]

    recompute = second_epoch_seconds(model, x)
    start = time.perf_counter()
    features = base.predict(x, batch_size=args.batch_size, verbose=0)
    extraction = time.perf_counter() - start
    cached = second_epoch_seconds(head, features)
    result = {
        "command": "benchmarks/feature_cache_speedup.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "images": len(y), "image_size": args.image_size,
        "epoch_s_recompute_vgg16": recompute, "epoch_s_cached_features": cached,
        "speedup_per_epoch": recompute / cached, "one_off_feature_extraction_s": extraction,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
