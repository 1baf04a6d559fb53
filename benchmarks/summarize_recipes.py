"""Markdown tables of finished runs against the frozen-feature baseline of the same data and size.

    .venv/bin/python benchmarks/summarize_recipes.py runs/default-brain-mri-128 ...

Per run: the recipe (augmentation, fine-tuned blocks, precision), what validation chose (kept
phase and epoch, its val loss and accuracy, and the val loss after the temperature: the scale on
which recipes with and without label smoothing compare), the test figures read once at the end (accuracy,
macro ROC-AUC, the weakest class's sensitivity), calibration (temperature, test ECE before and
after), wall time, and whether it beats the logistic regression on frozen VGG16 features
(`frozen_baseline.py`, matched by data folder and image size) in both accuracy and AUC.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def baseline_for(data_root: str, size: int) -> dict | None:
    for path in sorted(RESULTS.glob("frozen_baseline_*.json")):
        doc = json.loads(path.read_text())
        if doc["data_root"] == data_root and doc["image_size"] == size:
            return doc["baseline_test"]
    return None


def main(runs: list[str]) -> None:
    print("| run | recipe | kept (val loss / val acc) | test acc | test macro AUC | weakest sensitivity | T | test ECE before -> after | wall | baseline acc / AUC | beats it |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in map(Path, runs):
        m = json.loads((run / "metrics.json").read_text())
        r = json.loads((run / "report.json").read_text())
        c = json.loads((run / "config.json").read_text())
        aug = r["augmentation"]
        flips = "auto: " if isinstance(aug.get("flip"), dict) else ""  # decided on the data (mirror.py) rather than given
        flips += "flips" if c["augmentation"]["flip"] else "no flips"
        recipe = (f"{aug['mode']}{' x' + str(aug['views']) if aug['views'] else ''} ({flips}), {c['fine_tune_blocks']} blocks, "
                  f"{c['head']['pooling']}, {r['mixed_precision']['used']}, class weights {'on' if c['class_weights'] else 'off'}")
        if c.get("label_smoothing"):
            recipe += f", label smoothing {c['label_smoothing']}"
        if r["selection"]["monitor"] != "val_loss":  # since session 10: the val loss after each epoch's temperature
            recipe += f", epochs by {r['selection']['monitor']}"
        kept = r["selection"]["kept"]
        chosen = f"{kept['phase']} ep {kept['best_epoch']} ({kept['val_loss']:.4f} / {kept['val_accuracy']:.4f})"
        cal = r["calibration"]
        if "nll_after" in cal.get("val", {}):  # a label-smoothed model is under-confident, so raw val losses are on one scale only after T
            chosen += f"; after T {cal['val']['nll_after']:.4f}"
        weakest = min(m["per_class"].items(), key=lambda kv: kv[1]["sensitivity"])
        base = baseline_for(r["data_root"], c["image_size"])
        against = "-" if base is None else f"{base['accuracy']:.4f} / {base['roc_auc_macro']:.4f}"
        beats = "-" if base is None else ("yes" if m["accuracy"] > base["accuracy"] and m["roc_auc_macro"] > base["roc_auc_macro"] else "**no**")
        print(f"| {run.name} | {recipe} | {chosen} | {m['accuracy']:.4f} | {m['roc_auc_macro']:.4f} | {weakest[0]} {weakest[1]['sensitivity']:.4f} | "
              f"{cal['temperature']:.3f} | {cal['test']['ece_before']:.4f} -> {cal['test']['ece_after']:.4f} | {r['timings']['total_s'] / 60:.1f} min | "
              f"{against} | {beats} |")
    for run in map(Path, runs):
        m = json.loads((run / "metrics.json").read_text())
        r = json.loads((run / "report.json").read_text())
        t = r["timings"]
        print(f"\n**{run.name}** (test split, per class; feature extraction {t.get('feature_extraction_s', 0):.0f} s, "
              f"head {t.get('head_per_epoch_s', 0):.1f} s/epoch, fine-tune {t.get('fine-tune_per_epoch_s', 0):.1f} s/epoch; "
              f"mixed precision {r['mixed_precision']['used']}: {r['mixed_precision']['why']})\n")
        print("| class | support | sensitivity | specificity | precision | ROC-AUC |")
        print("|---|---|---|---|---|---|")
        for label, pc in m["per_class"].items():
            print(f"| {label} | {pc['support']} | {pc['sensitivity']:.4f} | {pc['specificity']:.4f} | {pc['precision']:.4f} | {pc['roc_auc']:.4f} |")
        if "operating_point" in m:
            op = m["operating_point"]
            pc = op["metrics"]["per_class"][op["class"]]
            print(f"\nOperating point {op['class']!r} >= {op['threshold']:.4f} (target sensitivity {op['target_sensitivity']} on val): "
                  f"test accuracy {op['metrics']['accuracy']:.4f}, {op['class']} sensitivity {pc['sensitivity']:.4f}, specificity {pc['specificity']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
