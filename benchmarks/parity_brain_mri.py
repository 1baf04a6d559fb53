"""Parity of every export of the brain-MRI 128 px model: all formats x precisions against Keras.

    .venv/bin/python benchmarks/parity_brain_mri.py      (from the repository root; about 25 min on 2 cores)

Exports `runs/brain-mri-128-b2-bf16-flatten` (the model of record, trained by benchmarks/train.sh) exactly as
`vgg-edge export RUN --format all --precision all` does, into the default
`exported/<run>/<format>-<precision>/` (a rejected one into `...rejected/`), through one
`ExportJob` so the Keras reference and the calibration set are computed once. Each exported model
is run in its own edge runtime on the run's recorded test and val splits, and judged by the gate
(accepted, unproven, rejected). Writes benchmarks/results/parity_brain_mri_128.{json,md}: size,
conversion time, accuracy and its drop, the worst per-class sensitivity drop, flips, max |dp|, the
verdict with the lowest confidence limit of the gated changes, every fallback tried, and the paired
2x2 tables of the quantized exports; and the per-layer diagnosis of the three int8 exports
(`--diagnose`) as benchmarks/results/diagnosis_brain_mri_128/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

from vgg_edge.export import PRECISIONS, ExportJob
from vgg_edge.export.pipeline import DEFAULT_CALIBRATION_SIZE
from vgg_edge.formats import FORMATS
from vgg_edge.manifest import tool_versions
from vgg_edge.fileio import write_bytes, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "brain-mri-128-b2-bf16-flatten")
    parser.add_argument("--out", type=Path, default=None, help="default: exported/<run name>")
    parser.add_argument("--calibration-size", type=int, default=None, help=f"int8 calibration images (default {DEFAULT_CALIBRATION_SIZE})")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--require-proof", action="store_true", help="unproven counts as rejected: every fallback, the ranked one included, is tried")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--name", default="parity_brain_mri_128")
    args = parser.parse_args()

    args.out = args.out or ROOT / "exported" / args.run.name
    calibration_size = args.calibration_size or DEFAULT_CALIBRATION_SIZE
    doc = {
        "command": " ".join([".venv/bin/python", "benchmarks/parity_brain_mri.py", *sys.argv[1:]]),
        "run": str(args.run.relative_to(ROOT)),
        "calibration_size": calibration_size,
        "max_drop_pp": args.max_drop,
        "require_proof": args.require_proof,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": tool_versions(),
        "rows": [],
    }
    started = time.perf_counter()
    with ExportJob(args.run, calibration_size=args.calibration_size) as job:
        doc["test_images"], doc["val_images"] = len(job.test[1]), len(job.val[1]) if job.val else 0
        for fmt in args.formats.split(","):
            for precision in args.precisions.split(","):
                t = time.perf_counter()
                result = job.export(fmt, precision, args.out / f"{fmt}-{precision}", args.max_drop, args.require_proof, diagnose=True)
                doc["rows"].append(row(result, time.perf_counter() - t))
                doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                doc["total_s"] = round(time.perf_counter() - started, 1)
                save(doc, args.name)  # after every export, so an interrupted run still reports what it measured
        job.diagnosis.write(RESULTS / f"diagnosis_{args.name.removeprefix('parity_')}")
    print(markdown(doc))


def save(doc: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{name}.json", doc)
    write_bytes(RESULTS / f"{name}.md", markdown(doc).encode())


def row(result, wall_s: float) -> dict:
    m, p = result.manifest, result.parity
    sensitivity = [d for d in p["sensitivity_drop_pp"].values() if d is not None]
    gated = [g for g in p["paired"] if g["gated"]]
    return {
        "artifact": result.artifact.name, "format": result.format, "precision": result.precision,
        "status": m["status"], "size_mb": round(sum(f["bytes"] for f in m["files"].values()) / 1e6, 2),
        "conversion_s": m["conversion"]["seconds"], "export_wall_s": round(wall_s, 1),
        "reference_accuracy": p["reference_accuracy"], "accuracy": p["accuracy"], "accuracy_drop_pp": p["accuracy_drop_pp"],
        "worst_sensitivity_drop_pp": max(sensitivity), "roc_auc_macro": p["roc_auc_macro"],
        "flips": p["flips"], "flip_rate": p["flip_rate"], "max_abs_prob_diff": p["max_abs_prob_diff"],
        "mean_abs_prob_diff": p["mean_abs_prob_diff"], "kept_attempt": m["conversion"]["attempt"],
        "evidence": p["evidence"], "worst_ci_low_pp": min(g["ci_pp"][0] for g in gated), "paired": p["paired"],
        "attempts": m["attempts"], "gate": m["gate"],
    }


def markdown(doc: dict) -> str:
    lines = [
        f"# Export parity: {doc['run']} ({doc['test_images']} recorded test images, {doc['val_images']} val images)", "",
        f"`{doc['command']}`  ", f"{'--require-proof: unproven counts as rejected. ' if doc.get('require_proof') else ''}{doc['machine']['cpus']} CPUs, last row written {doc['finished']}, {doc['total_s'] / 60:.1f} min in all. "
        f"Reference: the Keras model, test accuracy {doc['rows'][0]['reference_accuracy']:.4f}. Gates: fp32 no flip and max |dp| <= 1e-4; "
        f"fp16 <= 0.1% flips and max |dp| <= 1e-2 (on test and val); dynamic and int8: non-inferiority with a {doc['max_drop_pp']:g} pp margin, "
        "the 95% Tango interval of the paired change of accuracy and of every class's sensitivity over test + val "
        "(test alone where the converter tuned on val). `CI low` is the lowest lower limit of those changes.", "",
        "| artifact | status | size MB | conversion s | test accuracy | drop pp | worst sensitivity drop pp | CI low pp | flips test+val (upper 95%) | max abs dp | kept settings (tried) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["rows"]:
        e = r["evidence"]
        lines.append(
            f"| {r['artifact']} | {r['status']} | {r['size_mb']:.1f} | {r['conversion_s']:.1f} | {r['accuracy']:.4f} | {r['accuracy_drop_pp']:+.2f} "
            f"| {r['worst_sensitivity_drop_pp']:+.2f} | {r['worst_ci_low_pp']:+.2f} | {e['flips']}/{e['n']} ({e['flip_rate_upper']:.2%}) "
            f"| {r['max_abs_prob_diff']:.1e} | {r['kept_attempt']} ({len(r['attempts'])}) |"
        )
    for r in (r for r in doc["rows"] if r["precision"] in ("dynamic", "int8")):
        lines += ["", f"## {r['artifact']}: {r['status']}; paired counts over {', '.join(f'{k} {v}' for k, v in r['evidence']['splits'].items())}", "",
                  "| figure | gated | n | both right | only Keras right | only export right | both wrong | change pp | 95% CI pp | McNemar p |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for g in r["paired"]:
            name = g["metric"] if g["class"] is None else f"{g['metric']} {g['class']}"
            lines.append(f"| {name} | {'yes' if g['gated'] else 'no'} | {g['n']} | {' | '.join(str(c) for c in g['counts'])} "
                         f"| {g['change_pp']:+.2f} | [{g['ci_pp'][0]:+.2f}, {g['ci_pp'][1]:+.2f}] | {g['mcnemar_p']:.3f} |")
        lines.append("")
        lines += [f"- {line}" for line in r["gate"]["failures"] or r["gate"]["unproven"]]
        if len(r["attempts"]) > 1:
            lines += ["", "| attempt | status | float layers | batch-1 ms (rough, during export) | test accuracy | drop pp |", "|---|---|---|---:|---:|---:|"]
            lines += [f"| {a['attempt']} | {a['status']} | {', '.join(a['float_layers']) or '-'} | {a['latency_ms_batch1']:.2f} | {a['accuracy']:.4f} | {a['accuracy_drop_pp']:+.2f} |"
                      for a in r["attempts"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
