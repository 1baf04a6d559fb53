"""The evidence behind `train`'s automatic flip decision (toolkit/vgg_edge/mirror.py), on every shared data set.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 .venv/bin/python benchmarks/mirror_test.py \
        brain-mri:128 skin-lesion:128 mnist-digits:64 [--shared ../shared/data]

For each DATA:SIZE: the split `vgg-edge train` makes of the folder (same seed and fractions), the test
`train` runs when neither --flip nor --no-flip is given, and what it decides. The test split is never
read. Results: benchmarks/results/mirror_test.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="+", help="DATA:SIZE, DATA a folder under --shared")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    from vgg_edge.data import SEED, plan_split
    from vgg_edge.features import SplitStream
    from vgg_edge.mirror import MAX_ERROR_RATIO, mirror_test
    from vgg_edge.model import build_model, split_at
    from vgg_edge.weights import resolve_weights

    rows = []
    for item in args.sets:
        name, size = item.rsplit(":", 1)
        started = time.perf_counter()
        manifest = plan_split(args.shared / name)
        base, _ = split_at(build_model(len(manifest.labels), int(size), resolve_weights("imagenet")), "block5_pool")
        test = mirror_test(base, SplitStream(manifest, "train", int(size)), SplitStream(manifest, "val", int(size)), 32, SEED)
        rows.append({"data": name, "image_size": int(size), **test.record(), "seconds": time.perf_counter() - started})
        print(name, size, test.describe(), flush=True)
    command = "benchmarks/mirror_test.py " + " ".join(args.sets)
    (RESULTS / "mirror_test.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    lines = ["# The flip decision on the shared data sets", "", f"Produced by `{command}` (2 CPU cores). The test `train` runs "
             "when neither `--flip` nor `--no-flip` is given (toolkit/vgg_edge/mirror.py): a logistic regression on frozen ImageNet VGG16 "
             "features (block5_pool, averaged over space), learnt from up to 1000 train images as they are, classifies up to 1000 "
             f"validation images as they are and mirrored. Flips stay while mirrored images are misread at most {MAX_ERROR_RATIO:g}x as often "
             "(one error added to each count).", "",
             "| data | size | train images | val images | errors | errors mirrored | ratio | flips | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['image_size']} | {r['train_images']} | {r['val_images']} | {r['errors']} | {r['mirrored_errors']} | "
                     f"{r['error_ratio']:.2f} | {'on' if r['flip'] else 'off'} | {r['seconds']:.0f} |")
    (RESULTS / "mirror_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
