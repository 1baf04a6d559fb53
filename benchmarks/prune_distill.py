"""Does distillation help the pruned model recover? One source run, pruned to the same budget with several --distill weights.

    .venv/bin/python benchmarks/prune_distill.py [--keep 0.5] [--distills 0,0.5,0.9]     # ~15 min on 2 cores at 64 px
    -> benchmarks/results/prune_distill.{json,md}

The source is `vgg-edge train --data ../shared/data/brain-mri --image-size 64 --epochs 3 --fine-tune-epochs 2
--fine-tune-blocks 1 --augment off` (small, so the comparison fits a session; the 128 px model of record is
prune_curve.py's). Each variant is `vgg-edge prune SOURCE --keep K --distill D` with prune's other defaults
(activation criterion, at most 5 fine-tuning epochs, early stopping on val loss). Selection is on val; the
test split (the source's) is read once per variant, and every variant is reported, not only the best.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", ROOT.parent / "shared"))
VGG_EDGE = str(ROOT / ".venv" / "bin" / "vgg-edge")
RESULTS = ROOT / "benchmarks" / "results"
SOURCE_ARGS = ["--data", str(SHARED / "data" / "brain-mri"), "--image-size", "64", "--epochs", "3", "--fine-tune-epochs", "2",
               "--fine-tune-blocks", "1", "--augment", "off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--distills", default="0,0.5,0.9")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prune-distill-") as scratch:
        scratch = Path(scratch)
        env = {**os.environ, "VGG_EDGE_CACHE": str(scratch / "cache")}
        source = scratch / "source"
        subprocess.run([VGG_EDGE, "train", *SOURCE_ARGS, "--out", str(source)], env=env, check=True, stdout=subprocess.DEVNULL)
        source_metrics = json.loads((source / "metrics.json").read_text())
        source_val = json.loads((source / "report.json").read_text())["selection"]["kept"]["val_accuracy"]
        rows = []
        for distill in (float(d) for d in args.distills.split(",")):
            out = scratch / f"keep{args.keep:g}-distill{distill:g}"
            subprocess.run([VGG_EDGE, "prune", str(source), "--keep", f"{args.keep:g}", "--distill", f"{distill:g}", "--out", str(out)],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            report = json.loads((out / "report.json").read_text())
            kept = report["selection"]["kept"]
            rows.append({"distill": distill, "epochs_run": report["selection"]["epochs_run"], "best_epoch": kept["best_epoch"],
                         "val_accuracy": kept["val_accuracy"], "test_accuracy": json.loads((out / "metrics.json").read_text())["accuracy"],
                         "conv_macs_kept": report["prune"]["conv_macs"]["kept"], "fine_tune_s": report["timings"]["fine_tune_s"]})
            print(rows[-1], flush=True)
    doc = {"command": f"benchmarks/prune_distill.py --keep {args.keep:g} --distills {args.distills}", "source_args": SOURCE_ARGS,
           "source": {"val_accuracy": source_val, "test_accuracy": source_metrics["accuracy"]}, "keep": args.keep, "variants": rows}
    (RESULTS / "prune_distill.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# Pruning with and without distillation", "",
             f"Command: `.venv/bin/python {doc['command']}` (2 CPU cores). Source: `vgg-edge train {' '.join(SOURCE_ARGS)}`: "
             f"val accuracy {source_val:.4f} (its kept epoch), test accuracy {source_metrics['accuracy']:.4f}.", "",
             f"Each row: `vgg-edge prune SOURCE --keep {args.keep:g} --distill D` (at most 5 epochs, early stopping on val loss).", "",
             "| distill | conv MACs kept | epochs run | kept epoch | val accuracy | test accuracy | test change, pp | fine-tune s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['distill']:g} | {r['conv_macs_kept']:.3f} | {r['epochs_run']} | {r['best_epoch']} | {r['val_accuracy']:.4f} | "
                     f"{r['test_accuracy']:.4f} | {100 * (r['test_accuracy'] - source_metrics['accuracy']):+.2f} | {r['fine_tune_s']:.0f} |")
    (RESULTS / "prune_distill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
