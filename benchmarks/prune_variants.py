"""What helps a pruned model recover? One source run, pruned to the same budget in several ways, every way reported.

    .venv/bin/python benchmarks/prune_variants.py --run runs/default-brain-mri-64 --keep 0.5 \
        --variant "augmented=" --variant "plain=--no-augment" --name prune_augment
    -> benchmarks/results/<name>.{json,md}; the pruned runs in runs/<source>-keep<K>-<variant>/, or runs/<source>-keep<K>/
       for a variant with no arguments (prune's defaults: the folder prune_curve.py makes and reuses)

Each variant is `vgg-edge prune SOURCE --keep K <its arguments>` with prune's other defaults. A variant whose run exists is not
pruned again. Selection is on val; the test split (the source's) is read once per variant, by prune itself.
Run one at a time on a quiet machine: the fine-tuning seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VGG_EDGE = str(ROOT / ".venv" / "bin" / "vgg-edge")
RESULTS = ROOT / "benchmarks" / "results"
LOGS = ROOT / "benchmarks" / "logs"


def read(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the source run (vgg-edge train's)")
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--variant", action="append", required=True, help="NAME=PRUNE ARGUMENTS (empty: prune's defaults)")
    parser.add_argument("--name", required=True, help="result file name under benchmarks/results/")
    args = parser.parse_args()
    source = args.run.resolve()
    source_kept = read(source, "report.json")["selection"]["kept"]
    source_test = read(source, "metrics.json")["accuracy"]
    LOGS.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variant:
        name, _, extra = variant.partition("=")
        out = source.with_name(f"{source.name}-keep{args.keep:g}" + (f"-{name}" if extra.strip() else ""))
        command = [VGG_EDGE, "prune", str(source), "--keep", f"{args.keep:g}", "--out", str(out), *shlex.split(extra)]
        if not (out / "report.json").is_file():
            print("$", shlex.join(command), flush=True)
            with open(LOGS / f"prune-{out.name}.log", "w") as log:
                subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
        report = read(out, "report.json")
        kept = report["selection"]["kept"]
        rows.append({"variant": name, "arguments": extra, "epochs_run": report["selection"]["epochs_run"], "best_epoch": kept["best_epoch"],
                     "val_loss": kept["val_loss"], "val_accuracy": kept["val_accuracy"], "test_accuracy": read(out, "metrics.json")["accuracy"],
                     "conv_macs_kept": report["prune"]["conv_macs"]["kept"], "fine_tune_s": report["timings"]["fine_tune_s"], "run": str(out)})
        print(rows[-1], flush=True)
    command = f"benchmarks/prune_variants.py --run {args.run} --keep {args.keep:g} " + " ".join(f"--variant {shlex.quote(v)}" for v in args.variant) + f" --name {args.name}"
    doc = {"command": command, "source": {"run": str(source), "val_loss": source_kept["val_loss"], "val_accuracy": source_kept["val_accuracy"],
                                          "test_accuracy": source_test}, "keep": args.keep, "variants": rows}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Pruning variants: keep {args.keep:g} of {source.name}", "",
             f"Command: `.venv/bin/python {command}` (2 CPU cores). Source: `{source.name}`, val loss {source_kept['val_loss']:.4f} / "
             f"val accuracy {source_kept['val_accuracy']:.4f} at its kept epoch, test accuracy {source_test:.4f}.", "",
             f"Each row: `vgg-edge prune SOURCE --keep {args.keep:g} ARGUMENTS`, prune's other options at their defaults.", "",
             "| variant | arguments | conv MACs kept | epochs run | kept epoch | val loss | val accuracy | test accuracy | test change, pp | fine-tune s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | `{r['arguments'] or '(defaults)'}` | {r['conv_macs_kept']:.3f} | {r['epochs_run']} | {r['best_epoch']} | "
                     f"{r['val_loss']:.4f} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | {100 * (r['test_accuracy'] - source_test):+.2f} | "
                     f"{r['fine_tune_s']:.0f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
