"""The bar every `vgg-edge train` must clear: logistic regression on frozen VGG16 features.

    VGG_EDGE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.h5 \
        .venv/bin/python benchmarks/frozen_baseline.py --data ../shared/data/brain-mri --image-size 128 \
        [--run runs/brain-mri-128]

Same split as `vgg-edge train` makes of the folder (same seed and fractions, or the run's own
`split.json` with --run), the ImageNet VGG16 base in float32 with no training at all, its
block5_pool output averaged over space (512 numbers per image), standardised, and a multinomial
logistic regression whose C is chosen on the validation split among a few values. The test split
is read once, at the end. With --run, the run's test figures are set beside the baseline's, and
the run passes when it beats the baseline in both accuracy and macro ROC-AUC.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
C_GRID = (0.01, 0.1, 1.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="a data folder (ignored with --run: the run's split is used)")
    parser.add_argument("--run", type=Path, help="a run directory to compare with; its split.json is used")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--name", help="result file name (default: the data folder's name and the size)")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vgg_edge.data import load_split, plan_split
    from vgg_edge.metrics import classification_metrics
    from vgg_edge.model import build_model, split_at
    from vgg_edge.run import RunDir
    from vgg_edge.model import batched_predict
    from vgg_edge.weights import resolve_weights

    started = time.perf_counter()
    run = RunDir.open(args.run) if args.run else None
    manifest = run.split if run else plan_split(args.data)
    size = run.image_size if run else args.image_size
    base, _ = split_at(build_model(len(manifest.labels), size, resolve_weights("imagenet")), "block5_pool")
    features, targets = {}, {}
    for split in ("train", "val", "test"):
        loaded, targets[split] = load_split(manifest, split, size, verify=run is not None)
        features[split] = batched_predict(base, loaded.pixels, 32, f"features {split}").mean(axis=(1, 2))
    extracted = time.perf_counter() - started

    def fit(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(features["train"], targets["train"])

    val_loss = {}
    for c in C_GRID:
        probs = fit(c).predict_proba(features["val"])
        val_loss[c] = float(-np.mean(np.log(np.clip(probs[np.arange(len(probs)), targets["val"]], 1e-12, None))))
    best_c = min(val_loss, key=val_loss.get)
    test = classification_metrics(targets["test"], fit(best_c).predict_proba(features["test"]), manifest.labels)

    name = args.name or (f"{run.name}" if run else f"{Path(manifest.data_root).name}-{size}")
    result = {
        "command": "benchmarks/frozen_baseline.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "data_root": manifest.data_root, "image_size": size, "counts": manifest.counts(),
        "features": "ImageNet VGG16 block5_pool, global average pooled (512), float32",
        "model": "StandardScaler + LogisticRegression (lbfgs, multinomial)",
        "val_log_loss_by_C": {str(c): v for c, v in val_loss.items()}, "chosen_C": best_c,
        "baseline_test": _summary(test), "seconds": time.perf_counter() - started, "feature_seconds": extracted,
    }
    if run:
        ours = json.loads((run.path / "metrics.json").read_text())
        result["run"] = str(run.path)
        result["run_test"] = _summary(ours)
        result["run_beats_baseline"] = bool(ours["accuracy"] > test["accuracy"] and ours["roc_auc_macro"] > test["roc_auc_macro"])
    out = RESULTS / f"frozen_baseline_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("counts",)}, indent=2))


def _summary(metrics: dict) -> dict:
    return {
        "accuracy": metrics["accuracy"], "roc_auc_macro": metrics["roc_auc_macro"], "n": metrics["n"],
        "sensitivity": {label: pc["sensitivity"] for label, pc in metrics["per_class"].items()},
        "roc_auc": {label: pc["roc_auc"] for label, pc in metrics["per_class"].items()},
    }


if __name__ == "__main__":
    main()
