"""Markdown table of finished runs: accuracy, per-class sensitivity/specificity/AUC, wall time.

    .venv/bin/python benchmarks/summarize_train.py runs/brain-mri-128 ... > benchmarks/results/train.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(runs: list[str]) -> None:
    print("| run | images (train/val/test) | val loss / val accuracy at the kept epoch | test accuracy | macro ROC-AUC | kept phase | wall time |")
    print("|---|---|---|---|---|---|---|")
    details = []
    for run in map(Path, runs):
        m = json.loads((run / "metrics.json").read_text())
        r = json.loads((run / "report.json").read_text())
        c = r["counts"]
        sizes = "/".join(str(sum(c.get(s, {}).values())) for s in ("train", "val", "test"))
        kept = next(p["history"] for p in json.loads((run / "history.json").read_text())["phases"] if p["phase"] == r["kept_phase"])
        best = kept["val_loss"].index(min(kept["val_loss"]))
        print(f"| {run.name} | {sizes} | {kept['val_loss'][best]:.4f} / {kept['val_accuracy'][best]:.4f} | {m['accuracy']:.4f} | {m['roc_auc_macro']:.4f} | {r['kept_phase']} | {r['timings']['total_s'] / 60:.1f} min |")
        rows = [f"\n**{run.name}** (per class on the test split; feature extraction {r['timings'].get('feature_extraction_s', 0):.0f} s, "
                f"head {r['timings'].get('head_per_epoch_s', 0):.1f} s/epoch, fine-tune {r['timings'].get('fine-tune_per_epoch_s', 0):.1f} s/epoch)\n",
                "| class | support | sensitivity | specificity | precision | ROC-AUC |", "|---|---|---|---|---|---|"]
        for label, pc in m["per_class"].items():
            rows.append(f"| {label} | {pc['support']} | {pc['sensitivity']:.4f} | {pc['specificity']:.4f} | {pc['precision']:.4f} | {pc['roc_auc']:.4f} |")
        details.append("\n".join(rows))
    print("\n".join(details))


if __name__ == "__main__":
    main(sys.argv[1:])
