"""Peak memory and epoch time of `train` against the number of images, and the feature cache's reuse.

    .venv/bin/python benchmarks/train_memory.py            # ~25 min on 2 cores, quiet machine
    -> benchmarks/results/train_memory.{json,md}

For each N (2,000 and 20,000), a folder of N distinct 128 px images is generated from the shared brain
MRI set (random crops, flips and brightness, so every file's hash differs), then `vgg-edge train` runs
under /usr/bin/time -v with a fresh feature cache, and once more with the cache in place. Recipe: one
fine-tuned block, 2 head epochs, 1 fine-tuning epoch, no augmentation views (the figure is memory, not
accuracy). Target: peak RSS at 20,000 images at most 1.2x the peak at 2,000.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", ROOT.parent / "shared"))


def generate(n: int, out: Path, size: int = 128, seed: int = 0) -> None:
    """N distinct images, in the shared set's class folders, each a random crop of a random source image."""
    rng = np.random.default_rng(seed)
    sources = {c.name: sorted(c.glob("*.jpg")) for c in sorted((SHARED / "data" / "brain-mri" / "train").iterdir())}
    classes = list(sources)
    for c in classes:
        (out / c).mkdir(parents=True)
    for i in range(n):
        c = classes[i % len(classes)]
        with Image.open(sources[c][rng.integers(len(sources[c]))]) as image:
            image = image.convert("RGB")
            w, h = image.size
            s = int(min(w, h) * rng.uniform(0.8, 1.0))
            x, y = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
            crop = image.crop((x, y, x + s, y + s)).resize((size, size))
            pixels = np.asarray(crop, np.float32) * rng.uniform(0.85, 1.15)
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out / c / f"{i:06d}.jpg", quality=92)


def run_train(data: Path, out: Path, cache: Path) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "vgg-edge"), "train", "--data", str(data), "--image-size", "128", "--out", str(out),
               "--epochs", "2", "--fine-tune-epochs", "1", "--fine-tune-blocks", "1", "--augment", "off", "--patience", "5"]
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env={**os.environ, "VGG_EDGE_CACHE": str(cache)})
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    report = json.loads((out / "report.json").read_text())
    t = report["timings"]
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(rss_kb / 1024), "feature_extraction_s": round(t.get("feature_extraction_s", 0), 1),
            "head_epoch_s": round(t["head_per_epoch_s"], 1), "fine_tune_epoch_s": round(t.get("fine-tune_per_epoch_s", 0), 1),
            "cache_reused": report["feature_cache"]["reused"], "cache_mb": round(report["feature_cache"]["bytes"] / 2**20),
            "test_accuracy": json.loads((out / "metrics.json").read_text())["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    args = parser.parse_args()
    doc = {"command": "benchmarks/train_memory.py --sizes " + args.sizes, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="train-memory-") as scratch:
        scratch = Path(scratch)
        for n in map(int, args.sizes.split(",")):
            data = scratch / f"data-{n}"
            generate(n, data)
            cache = scratch / f"cache-{n}"
            doc["runs"][n] = {"fresh": run_train(data, scratch / f"run-{n}-a", cache), "cache_reused": run_train(data, scratch / f"run-{n}-b", cache)}
            print(n, doc["runs"][n], flush=True)
    sizes = sorted(doc["runs"])
    ratio = doc["runs"][sizes[-1]]["fresh"]["peak_rss_mb"] / doc["runs"][sizes[0]]["fresh"]["peak_rss_mb"]
    doc["rss_ratio"] = ratio
    (ROOT / "benchmarks" / "results" / "train_memory.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["# `train` memory against the number of images (streaming input, on-disk feature cache)", "",
             f"Command: `.venv/bin/python {doc['command']}` (2 CPU cores, 24 GiB; 128 px, one fine-tuned block, 2 + 1 epochs, no augmentation views).", "",
             "| images | run | peak RSS MB | wall s | feature extraction s | head epoch s | fine-tune epoch s | cache MB | test accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for kind, r in doc["runs"][n].items():
            lines.append(f"| {n} | {kind.replace('_', ' ')} | {r['peak_rss_mb']} | {r['wall_s']} | {r['feature_extraction_s']} | {r['head_epoch_s']} | "
                         f"{r['fine_tune_epoch_s']} | {r['cache_mb']} | {r['test_accuracy']:.4f} |")
    lines += ["", f"Peak RSS at {sizes[-1]} images is {ratio:.2f}x the peak at {sizes[0]} (target: at most 1.2x).", ""]
    (ROOT / "benchmarks" / "results" / "train_memory.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
