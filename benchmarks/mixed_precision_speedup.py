"""Training speed in float32 vs mixed bfloat16, on the loops `vgg-edge train` actually runs.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 \
        .venv/bin/python benchmarks/mixed_precision_speedup.py --data ../shared/data/brain-mri --image-size 128 --images 640

For each policy: the one-off feature extraction up to the cut (blocks 1-3, for two fine-tuned
blocks), and one fine-tuning epoch of blocks 4-5 plus the head on those cached features, timed on
the second epoch (the first includes tracing). Same images, optimizer and batch size in both.
"""

from __future__ import annotations

import platform
import time

from speed_common import parse_args, second_epoch_seconds, train_sample, write_result


def main() -> None:
    args = parse_args("mixed_precision_speedup", fine_tune_blocks=2)

    import keras

    from vgg_edge.bench import environment
    from vgg_edge.model import build_model, cut_layer_name, set_trainable, split_at
    from vgg_edge.model import batched_predict
    from vgg_edge.training import MIXED_POLICIES, dtype_policy
    from vgg_edge.weights import resolve_weights

    labels, x, y = train_sample(args.data, args.image_size, args.images)
    weights = resolve_weights("imagenet")

    timings = {}
    for name, policy in MIXED_POLICIES.items():
        keras.utils.set_random_seed(0)
        with dtype_policy(policy):
            model = build_model(len(labels), args.image_size, weights)
            set_trainable(model, first_block=6 - args.fine_tune_blocks)
            prefix, suffix = split_at(model, cut_layer_name(args.fine_tune_blocks))
            batched_predict(prefix, x[: args.batch_size], args.batch_size, "warm-up")
            start = time.perf_counter()
            features = batched_predict(prefix, x, args.batch_size, f"features {name}")
            extraction = time.perf_counter() - start
            epoch = second_epoch_seconds(suffix, features, y, args.batch_size, 1e-4)
        timings[name] = {"feature_extraction_s": extraction, "fine_tune_epoch_s": epoch}
        print(name, timings[name], flush=True)

    fp32, bf16 = timings["off"], timings["bfloat16"]
    write_result(args.out, {
        "command": args.command,
        "images": len(y), "image_size": args.image_size, "fine_tune_blocks": args.fine_tune_blocks,
        "cpu": environment()["cpu"], "python": platform.python_version(), "keras": keras.__version__,
        "float32": fp32, "mixed_bfloat16": bf16,
        "speedup_feature_extraction": fp32["feature_extraction_s"] / bf16["feature_extraction_s"],
        "speedup_fine_tune_epoch": fp32["fine_tune_epoch_s"] / bf16["fine_tune_epoch_s"],
    })


if __name__ == "__main__":
    main()
