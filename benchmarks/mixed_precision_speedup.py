"""Training speed in float32 vs mixed bfloat16, on the loops `vgg-edge train` actually runs.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 \
        .venv/bin/python benchmarks/mixed_precision_speedup.py --data ../shared/data/brain-mri --image-size 128 --images 640

For each policy: the one-off feature extraction up to the cut (blocks 1-3, for two fine-tuned
blocks), and one fine-tuning epoch of blocks 4-5 plus the head on those cached features, timed on
the second epoch (the first includes tracing). Same images, optimizer and batch size in both.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fine-tune-blocks", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mixed_precision_speedup.json")
    args = parser.parse_args()

    import keras

    from vgg_edge.bench import environment
    from vgg_edge.data import load_split, plan_split
    from vgg_edge.model import build_model, cut_layer_name, split_at
    from vgg_edge.training import MIXED_POLICIES, _dtype_policy, _set_trainable, batched_predict
    from vgg_edge.weights import resolve_weights

    manifest = plan_split(args.data)
    loaded, y = load_split(manifest, "train", args.image_size, verify=False)
    order = np.random.default_rng(0).permutation(len(y))[: args.images]
    x, y = loaded.pixels[order], y[order]
    weights = resolve_weights("imagenet")

    timings = {}
    for name, policy in MIXED_POLICIES.items():
        keras.utils.set_random_seed(0)
        with _dtype_policy(policy):
            model = build_model(len(manifest.labels), args.image_size, weights)
            _set_trainable(model, first_block=6 - args.fine_tune_blocks)
            prefix, suffix = split_at(model, cut_layer_name(args.fine_tune_blocks))
            batched_predict(prefix, x[: args.batch_size], args.batch_size, "warm-up")
            start = time.perf_counter()
            features = batched_predict(prefix, x, args.batch_size, f"features {name}")
            extraction = time.perf_counter() - start
            suffix.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
            epochs = []
            for _ in range(2):
                start = time.perf_counter()
                suffix.fit(features, y, batch_size=args.batch_size, epochs=1, verbose=0)
                epochs.append(time.perf_counter() - start)
        timings[name] = {"feature_extraction_s": extraction, "fine_tune_epoch_s": epochs[1]}
        print(name, timings[name], flush=True)

    fp32, bf16 = timings["off"], timings["bfloat16"]
    result = {
        "command": "benchmarks/mixed_precision_speedup.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "images": len(y), "image_size": args.image_size, "fine_tune_blocks": args.fine_tune_blocks,
        "cpu": environment()["cpu"], "python": platform.python_version(), "keras": keras.__version__,
        "float32": fp32, "mixed_bfloat16": bf16,
        "speedup_feature_extraction": fp32["feature_extraction_s"] / bf16["feature_extraction_s"],
        "speedup_fine_tune_epoch": fp32["fine_tune_epoch_s"] / bf16["fine_tune_epoch_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
