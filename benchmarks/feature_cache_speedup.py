"""Per-epoch speed of phase 1 (head on the frozen base): cached features vs running VGG16 every epoch.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 \
        .venv/bin/python benchmarks/feature_cache_speedup.py --data ../shared/data/brain-mri --image-size 128 --images 640

Both loops train the same head with the same optimizer on the same images; each is timed on its
second epoch (the first includes tracing). The one-off cost of extracting the features is
reported separately: it is paid once, not every epoch.
"""

from __future__ import annotations

import time

import numpy as np
from speed_common import parse_args, second_epoch_seconds, train_sample, write_result


def main() -> None:
    args = parse_args("feature_cache_speedup")

    import keras

    from vgg_edge.model import build_model, set_trainable, split_at
    from vgg_edge.weights import resolve_weights

    keras.utils.set_random_seed(0)
    labels, x, y = train_sample(args.data, args.image_size, args.images)
    x = x.astype(np.float32)

    model = build_model(len(labels), args.image_size, resolve_weights("imagenet"))
    set_trainable(model, first_block=6)  # phase 1: the whole base frozen
    base, head = split_at(model, "block5_pool")

    recompute = second_epoch_seconds(model, x, y, args.batch_size, 1e-3)
    start = time.perf_counter()
    features = base.predict(x, batch_size=args.batch_size, verbose=0)
    extraction = time.perf_counter() - start
    cached = second_epoch_seconds(head, features, y, args.batch_size, 1e-3)
    write_result(args.out, {
        "command": args.command,
        "images": len(y), "image_size": args.image_size,
        "epoch_s_recompute_vgg16": recompute, "epoch_s_cached_features": cached,
        "speedup_per_epoch": recompute / cached, "one_off_feature_extraction_s": extraction,
    })


if __name__ == "__main__":
    main()
