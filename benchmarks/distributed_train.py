"""Streaming against in-memory features, and two workers against one, on the shared brain-MRI set.

    .venv/bin/python benchmarks/distributed_train.py        # ~25 min on 2 cores, quiet machine
    -> benchmarks/results/distributed_train.{json,md}

1. Streaming: the default recipe at 128 px (two fine-tuned blocks, 4 cached views), 2 head and 2
   fine-tuning epochs, three times on one feature cache: once making it, then with the cached
   features read row by row from disk (what `train` does) and with the same features loaded into
   memory first (what `train` did before the cache; a FeatureStore subclass here). Same seed, same
   batches; the seconds per epoch are compared (target: streaming at least 90% of in-memory throughput).
2. Workers: 64 px, one fine-tuned block, no views, 3 + 2 epochs: `vgg-edge train --strategy one`,
   then two `--strategy multi-worker` processes on 127.0.0.1 sharing this machine's 2 cores. Expect
   no speed-up: the figure is correctness (both workers end with the same weights) and overhead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", ROOT.parent / "shared"))
BRAIN = SHARED / "data" / "brain-mri"
VGG_EDGE = ROOT / ".venv" / "bin" / "vgg-edge"
RESULTS = ROOT / "benchmarks" / "results"


def streaming(scratch: Path) -> dict:
    """Seconds per epoch with the features on disk (streamed) and in memory, same cache, same batches."""
    from vgg_edge import training
    from vgg_edge.features import FeatureStore
    from vgg_edge.training import TrainConfig, train

    class InMemory(FeatureStore):
        """A FeatureStore whose every view is loaded into memory first: the in-memory path it replaced."""

        def __init__(self, store: FeatureStore):
            super().__init__(store.folder, store.name, store.views, store.n, store.shape, store.dtype)
            self.arrays = [np.load(store.path(v)) for v in range(store.views)]

        def read(self, views: np.ndarray, rows: np.ndarray) -> np.ndarray:
            out = np.empty((len(rows), *self.shape), self.dtype)
            for k, (view, row) in enumerate(zip(views, rows)):
                out[k] = self.arrays[view][row]
            return out.astype(np.float32)

    os.environ["VGG_EDGE_CACHE"] = str(scratch / "cache")
    config = dict(data=BRAIN, image_size=128, epochs=2, fine_tune_epochs=2, patience=5)
    runs = {}
    original = training.FeatureCache.stores
    for name in ("making the cache", "streamed from disk", "in memory"):
        if name == "in memory":
            training.FeatureCache.stores = lambda self: {k: InMemory(s) for k, s in original(self).items()}
        started = time.perf_counter()
        result = train(TrainConfig(out=scratch / name.replace(" ", "-"), **config))
        t = result.report["timings"]
        runs[name] = {"wall_s": round(time.perf_counter() - started, 1), "head_epoch_s": round(t["head_per_epoch_s"], 2),
                      "fine_tune_epoch_s": round(t["fine-tune_per_epoch_s"], 2), "cache_reused": result.report["feature_cache"]["reused"],
                      "cache_mb": round(result.report["feature_cache"]["bytes"] / 2**20), "test_accuracy": result.metrics["accuracy"]}
        print(name, runs[name], flush=True)
    training.FeatureCache.stores = original
    disk, memory = runs["streamed from disk"], runs["in memory"]
    return {"config": {k: str(v) for k, v in config.items()}, "runs": runs,
            "throughput_ratio_fine_tune": memory["fine_tune_epoch_s"] / disk["fine_tune_epoch_s"],
            "throughput_ratio_head": memory["head_epoch_s"] / disk["head_epoch_s"]}


WORKER_ARGS = ["--data", str(BRAIN), "--image-size", "64", "--epochs", "3", "--fine-tune-epochs", "2", "--fine-tune-blocks", "1",
               "--augment", "off", "--patience", "5"]


def _summary(out: Path, wall: float) -> dict:
    report = json.loads((out / "report.json").read_text())
    t = report["timings"]
    return {"wall_s": round(wall, 1), "feature_extraction_s": round(t["feature_extraction_s"], 1), "head_epoch_s": round(t["head_per_epoch_s"], 2),
            "fine_tune_epoch_s": round(t["fine-tune_per_epoch_s"], 2), "test_accuracy": json.loads((out / "metrics.json").read_text())["accuracy"],
            "weights_sha256": report["strategy"]["trained_weights_sha256"], "replicas": report["strategy"]["replicas"]}


def workers(scratch: Path) -> dict:
    """One process against two workers on loopback, each with its own cache (as on two machines)."""
    env = {**os.environ, "VGG_EDGE_CACHE": str(scratch / "cache-one")}
    env.pop("TF_CONFIG", None)
    started = time.perf_counter()
    subprocess.run([str(VGG_EDGE), "train", *WORKER_ARGS, "--out", str(scratch / "one"), "--strategy", "one"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    one = _summary(scratch / "one", time.perf_counter() - started)
    print("one", one, flush=True)

    from vgg_edge.distribute import loopback_tf_configs

    started = time.perf_counter()
    procs = []
    for index, tf_config in enumerate(loopback_tf_configs(2)):
        procs.append(subprocess.Popen([str(VGG_EDGE), "train", *WORKER_ARGS, "--out", str(scratch / "two"), "--strategy", "multi-worker"],
                                      env={**env, "TF_CONFIG": tf_config, "VGG_EDGE_CACHE": str(scratch / f"cache-w{index}")},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate()[1] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("\n".join(e[-2000:] for e in errs))
    two = _summary(scratch / "two", time.perf_counter() - started)
    two["worker1_weights_sha256"] = re.search(r"weights sha256 ([0-9a-f]{64})", errs[1]).group(1)
    print("two", two, flush=True)
    return {"args": WORKER_ARGS, "one": one, "two": two, "same_weights_on_both_workers": two["weights_sha256"] == two["worker1_weights_sha256"]}


def main() -> None:
    from vgg_edge.machine import environment

    with tempfile.TemporaryDirectory(prefix="distributed-train-") as scratch:
        scratch = Path(scratch)
        cpu = environment()["cpu"]
        doc = {"command": "benchmarks/distributed_train.py", "cpu": cpu["model"], "cpu_flags": cpu["flags"], "cores": os.cpu_count(),
               "workers": workers(scratch / "workers"), "streaming": streaming(scratch / "streaming")}
    (RESULTS / "distributed_train.json").write_text(json.dumps(doc, indent=2) + "\n")
    s, w = doc["streaming"], doc["workers"]
    lines = ["# Streaming against in-memory features; two workers against one", "",
             f"Command: `.venv/bin/python {doc['command']}` ({doc['cpu']}, {doc['cores']} cores, no GPU; shared brain-MRI set).", "",
             "## Streamed features against the same features in memory", "",
             "Default recipe at 128 px (two fine-tuned blocks, 4 cached views), 2 head + 2 fine-tuning epochs, one feature cache.", "",
             "| run | wall s | head epoch s | fine-tune epoch s | cache MB | test accuracy |", "|---|---|---|---|---|---|"]
    for name, r in s["runs"].items():
        lines.append(f"| {name} | {r['wall_s']} | {r['head_epoch_s']} | {r['fine_tune_epoch_s']} | {r['cache_mb']} | {r['test_accuracy']:.4f} |")
    lines += ["", f"Streaming throughput against in-memory: {s['throughput_ratio_fine_tune']:.2f} in fine-tuning epochs, "
              f"{s['throughput_ratio_head']:.2f} in head epochs (target: at least 0.90).", "",
              "## Two workers against one (both on this machine)", "",
              f"`vgg-edge train {' '.join(w['args'])}` with `--strategy one`, then as two `--strategy multi-worker` processes on 127.0.0.1.", "",
              "| run | replicas | wall s | feature extraction s | head epoch s | fine-tune epoch s | test accuracy |", "|---|---|---|---|---|---|---|"]
    for name in ("one", "two"):
        r = w[name]
        lines.append(f"| {name} | {r['replicas']} | {r['wall_s']} | {r['feature_extraction_s']} | {r['head_epoch_s']} | {r['fine_tune_epoch_s']} | {r['test_accuracy']:.4f} |")
    lines += ["", f"Both workers ended with the same weights: {w['same_weights_on_both_workers']}. Two workers share the same 2 cores here, "
              "and each extracts the frozen features itself, so no speed-up is expected: the figures are for correctness and overhead.", ""]
    (RESULTS / "distributed_train.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
