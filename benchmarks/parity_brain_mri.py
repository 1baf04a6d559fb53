"""Parity of every export of the brain-MRI 128 px model: all formats x precisions against Keras.

    .venv/bin/python benchmarks/parity_brain_mri.py      (from the repository root; about 25 min on 2 cores)

Exports `runs/brain-mri-128-b2-bf16-flatten` (the model of record, trained by benchmarks/train.sh) exactly as
`vgg-edge export RUN --format all --precision all` does, into the default
`exported/<run>/<format>-<precision>/` (a rejected one into `...rejected/`), through one
`ExportJob` so the Keras reference and the calibration set are computed once. Each exported model
is run in its own edge runtime on the run's recorded test split. Writes
benchmarks/results/parity_brain_mri_128.{json,md}: size, conversion time, accuracy and its drop, the
worst per-class sensitivity drop, flip rate, max |dp|, and every fallback the gate had to try.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from vgg_edge.export import EXPORTERS, PRECISIONS, ExportJob
from vgg_edge.export.pipeline import DEFAULT_CALIBRATION_SIZE
from vgg_edge.export.manifest import tool_versions
from vgg_edge.fileio import write_bytes, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "brain-mri-128-b2-bf16-flatten")
    parser.add_argument("--out", type=Path, default=None, help="default: exported/<run name>")
    parser.add_argument("--calibration-size", type=int, default=None, help=f"int8 calibration images (default {DEFAULT_CALIBRATION_SIZE})")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--name", default="parity_brain_mri_128")
    args = parser.parse_args()

    args.out = args.out or ROOT / "exported" / args.run.name
    calibration_size = args.calibration_size or DEFAULT_CALIBRATION_SIZE
    doc = {
        "command": " ".join([".venv/bin/python", "benchmarks/parity_brain_mri.py", *sys.argv[1:]]),
        "run": str(args.run.relative_to(ROOT)),
        "calibration_size": calibration_size,
        "max_drop_pp": args.max_drop,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": tool_versions(),
        "rows": [],
    }
    started = time.perf_counter()
    with ExportJob(args.run, calibration_size=args.calibration_size) as job:
        doc["test_images"] = len(job.test[1])
        for fmt in EXPORTERS:
            for precision in PRECISIONS:
                t = time.perf_counter()
                result = job.export(fmt, precision, args.out / f"{fmt}-{precision}", max_drop=args.max_drop)
                doc["rows"].append(row(result, time.perf_counter() - t))
                doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                doc["total_s"] = round(time.perf_counter() - started, 1)
                save(doc, args.name)  # after every export, so an interrupted run still reports what it measured
    print(markdown(doc))


def save(doc: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{name}.json", doc)
    write_bytes(RESULTS / f"{name}.md", markdown(doc).encode())


def row(result, wall_s: float) -> dict:
    m, p = result.manifest, result.parity
    sensitivity = [d for d in p["sensitivity_drop_pp"].values() if d is not None]
    return {
        "artifact": result.artifact.name, "format": result.format, "precision": result.precision,
        "status": m["status"], "size_mb": round(sum(f["bytes"] for f in m["files"].values()) / 1e6, 2),
        "conversion_s": m["conversion"]["seconds"], "export_wall_s": round(wall_s, 1),
        "reference_accuracy": p["reference_accuracy"], "accuracy": p["accuracy"], "accuracy_drop_pp": p["accuracy_drop_pp"],
        "worst_sensitivity_drop_pp": max(sensitivity), "roc_auc_macro": p["roc_auc_macro"],
        "flips": p["flips"], "flip_rate": p["flip_rate"], "max_abs_prob_diff": p["max_abs_prob_diff"],
        "mean_abs_prob_diff": p["mean_abs_prob_diff"], "kept_attempt": m["conversion"]["attempt"],
        "attempts": [{k: a[k] for k in ("attempt", "passed", "accuracy_drop_pp", "failures")} for a in m["attempts"]],
        "gate": m["gate"],
    }


def markdown(doc: dict) -> str:
    lines = [
        f"# Export parity: {doc['run']} ({doc['test_images']} recorded test images)", "",
        f"`{doc['command']}`  ", f"{doc['machine']['cpus']} CPUs, last row written {doc['finished']}, {doc['total_s'] / 60:.1f} min in all. "
        f"Reference: the Keras model, accuracy {doc['rows'][0]['reference_accuracy']:.4f}. Gates: fp32 no flip and max |dp| <= 1e-4; "
        f"fp16 <= 0.1% flips and max |dp| <= 1e-2; dynamic and int8 within {doc['max_drop_pp']:g} pp of accuracy and of every class's sensitivity.", "",
        "| artifact | status | size MB | conversion s | accuracy | drop pp | worst sensitivity drop pp | flip rate | max abs dp | kept settings (tried) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['artifact']} | {r['status']} | {r['size_mb']:.1f} | {r['conversion_s']:.1f} | {r['accuracy']:.4f} | {r['accuracy_drop_pp']:+.2f} "
            f"| {r['worst_sensitivity_drop_pp']:+.2f} | {r['flip_rate']:.2%} | {r['max_abs_prob_diff']:.1e} | {r['kept_attempt']} ({len(r['attempts'])}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
