"""What an operating point would do for a finished run: the threshold chosen on its val split, then the test split.

    .venv/bin/python benchmarks/operating_point.py runs/default-skin-lesion-128 malignant=0.90 malignant=0.95

The same choice `vgg-edge train --target-sensitivity` makes (decision.choose_threshold on the run's
calibrated validation probabilities), applied after the fact to a run trained without one, so one
training run shows several targets. Test figures per target, beside argmax; JSON on stdout and in
benchmarks/results/operating_point_<run>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(run_dir: str, targets: list[str]) -> None:
    from vgg_edge.decision import DecisionRule, choose_threshold, parse_target
    from vgg_edge.metrics import classification_metrics
    from vgg_edge.run import RunDir
    from vgg_edge.model import batched_predict

    run = RunDir.open(run_dir)
    model = run.load_model()
    probs, y = {}, {}
    for split in ("val", "test"):
        pixels, y[split] = run.load_images(split)
        probs[split] = batched_predict(model, pixels, 64, split)
    rows = [{"rule": "argmax", **_summary(classification_metrics(y["test"], probs["test"], run.labels))}]
    for text in targets:
        label, target = parse_target(text)
        k = run.labels.index(label)
        threshold = choose_threshold(probs["val"][y["val"] == k, k], target, probs["val"][:, k])
        rule = DecisionRule(tuple(run.labels), label, threshold, target)
        val = classification_metrics(y["val"], probs["val"], run.labels, rule.decide(probs["val"]))
        test = classification_metrics(y["test"], probs["test"], run.labels, rule.decide(probs["test"]))
        rows.append({"rule": rule.record(), "val_sensitivity": val["per_class"][label]["sensitivity"], **_summary(test)})
    doc = {"command": "benchmarks/operating_point.py " + " ".join([run_dir, *targets]), "run": str(run.path), "results": rows}
    (RESULTS / f"operating_point_{run.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


def _summary(metrics: dict) -> dict:
    return {"test_accuracy": metrics["accuracy"],
            "test_sensitivity": {lab: m["sensitivity"] for lab, m in metrics["per_class"].items()},
            "test_specificity": {lab: m["specificity"] for lab, m in metrics["per_class"].items()}}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
