"""Edge install size and cold start, measured on this machine.

    .venv/bin/python benchmarks/edge_install_and_coldstart.py \\
        --artifact onnx-int8=/tmp/edge224-onnx-int8 --artifact openvino-int8=/tmp/edge224-openvino-int8 \\
        --image ../shared/data/mnist-digits/test/7/t10k_00000.png

Install size: two fresh virtual environments under --venvs, made with `python -m venv` and
`pip install "<checkout>[edge]"` and `pip install "<checkout>[onnx]"`, against the project's full
environment (`.venv`: `.[full]` plus pytest), each measured with `du -sb` (pip's own files included).
Each edge environment is checked to hold no tensorflow, keras, scikit-learn or matplotlib.

Cold start: from the moment the parent launches a fresh process to the first prediction of one
image, `--repeats` times for each artifact and each edge environment that has its runtime:
  * cli: `VENV/bin/vgg-edge predict ARTIFACT IMAGE --json`, timed to process exit (an upper bound:
    printing and interpreter shutdown are included);
  * api: `VENV/bin/python -c` with `load_artifact(ARTIFACT).classify([IMAGE])`; the child reports,
    from the parent's launch time, when its imports were done, when the artifact was verified and
    opened, and when the first prediction was out.
The artifacts are int8 exports of a brief 224-px run; their weights do not matter to a cold start,
only their graph and size. They were made with (a subset of 20 train and 8 test images per digit,
as symlinks into ../shared/data/mnist-digits, in /tmp/edge224data/{train,test}/<digit>/):
    vgg-edge train --data /tmp/edge224data --image-size 224 --epochs 2 --fine-tune-blocks 0 --batch-size 16 --out /tmp/edge224
    python -c "from pathlib import Path; from vgg_edge.export import export_run
    for f in ('openvino', 'onnx'): export_run('/tmp/edge224', f, 'int8', out=Path(f'/tmp/edge224-{f}-int8'), max_drop=100.0)"
(max_drop=100 keeps the first quantization settings instead of searching for ones that pass the
gate on 80 test images.) The first repeat of each case is kept in the results: the files are then
in the page cache for every later one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib")
RUNTIME_MODULE = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "ai_edge_litert"}

API_SNIPPET = """
import json, os, sys, time
t0 = float(os.environ["COLD_START_T0"])
from vgg_edge.runtime import load_artifact
imported = time.time()
predictor = load_artifact(sys.argv[1], allow_rejected=True)
loaded = time.time()
results, failures = predictor.classify([sys.argv[2]])
done = time.time()
assert results and not failures, failures
heavy = sorted(m for m in %r if m in sys.modules)
print(json.dumps({"import_s": imported - t0, "load_s": loaded - t0, "first_prediction_s": done - t0, "label": results[0].label, "heavy_modules": heavy}))
""" % (HEAVY,)


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def make_venv(venv: Path, extra: str, reuse: bool) -> float | None:
    """A fresh venv with `<checkout>[extra]` installed; returns the install wall time (None if reused)."""
    if reuse and (venv / "bin" / "vgg-edge").exists():
        return None
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", f"{ROOT}[{extra}]"], check=True)
    return time.perf_counter() - started


def installed(venv: Path, modules: tuple[str, ...]) -> list[str]:
    code = f"import importlib.util as u; print(' '.join(m for m in {modules!r} if u.find_spec(m)))"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True).stdout.split()


def biggest_packages(venv: Path, n: int = 6) -> list[tuple[str, int]]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes = [(p.name, du_bytes(p)) for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def cold_start(venv: Path, artifact: Path, image: Path, mode: str) -> dict:
    """One fresh process: wall time from launch to exit, and (api) the child's own stage times."""
    if mode == "cli":
        cmd = [str(venv / "bin" / "vgg-edge"), "predict", str(artifact), str(image), "--json", "--allow-rejected"]
    else:
        cmd = [str(venv / "bin" / "python"), "-c", API_SNIPPET, str(artifact), str(image)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"COLD_START_T0": repr(t0)})
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    row = {"wall_s": wall}
    if mode == "api":
        row |= json.loads(proc.stdout.splitlines()[-1])
    else:
        row["label"] = json.loads(proc.stdout)["predictions"][0]["label"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", action="append", required=True, help="NAME=FOLDER of an exported artifact")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/vgg-edge-venvs"))
    parser.add_argument("--full-venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reuse-venvs", action="store_true", help="keep edge venvs that already exist (install time then not measured)")
    args = parser.parse_args()
    artifacts = {name: Path(folder) for name, folder in (a.split("=", 1) for a in args.artifact)}

    installs = {}
    for extra in ("edge", "onnx"):
        venv = args.venvs / extra
        seconds = make_venv(venv, extra, args.reuse_venvs)
        runtimes = installed(venv, tuple(RUNTIME_MODULE.values()) + ("pydicom",))
        heavy = installed(venv, HEAVY)
        assert not heavy, f"{venv} has {heavy}"
        installs[extra] = {"venv": str(venv), "pip_install": f'pip install "<checkout>[{extra}]"', "bytes": du_bytes(venv),
                           "install_s": seconds, "runtimes": runtimes, "heavy_modules": heavy, "biggest": biggest_packages(venv)}
    installs["full"] = {"venv": str(args.full_venv), "pip_install": 'pip install -e ".[dev]" (full + pytest)', "bytes": du_bytes(args.full_venv),
                        "runtimes": installed(args.full_venv, tuple(RUNTIME_MODULE.values())), "heavy_modules": installed(args.full_venv, HEAVY),
                        "biggest": biggest_packages(args.full_venv)}

    cold = []
    for name, artifact in artifacts.items():
        manifest = json.loads((artifact / "manifest.json").read_text())
        size = sum(f["bytes"] for f in manifest["files"].values())
        for extra in ("edge", "onnx"):
            if RUNTIME_MODULE[manifest["format"]] not in installs[extra]["runtimes"]:
                continue
            for mode in ("cli", "api"):
                runs = [cold_start(args.venvs / extra, artifact, args.image, mode) for _ in range(args.repeats)]
                assert all(not r.get("heavy_modules") for r in runs)
                cold.append({
                    "artifact": name, "format": manifest["format"], "precision": manifest["precision"], "image_size": manifest["input"]["shape"][1],
                    "model_bytes": size, "install": extra, "mode": mode, "runs": runs,
                    "median_s": statistics.median(r["wall_s"] for r in runs), "min_s": min(r["wall_s"] for r in runs),
                })
                print(f"{name:16} {extra:5} {mode}: median {cold[-1]['median_s']:.3f} s, min {cold[-1]['min_s']:.3f} s", flush=True)

    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "load_avg_at_end": os.getloadavg()},
        "installs": installs, "cold_start": cold, "image": str(args.image),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "edge.md").write_text(markdown(doc))
    print(markdown(doc))


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def markdown(doc: dict) -> str:
    lines = ["# Edge install size and cold start", "", f"Command: `{doc['command']}`  ", f"Machine: {doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}, load average at the end {doc['machine']['load_avg_at_end'][0]:.2f} (shared machine).", "",
             "## Install size (`du -sb` of the whole virtual environment)", "", "| environment | install | size | runtimes | TF/keras/sklearn/matplotlib | biggest packages |", "|---|---|---:|---|---|---|"]
    for name, i in doc["installs"].items():
        biggest = ", ".join(f"{p} {mb(b)}" for p, b in i["biggest"][:4])
        lines.append(f"| {name} | `{i['pip_install']}` | {mb(i['bytes'])} | {', '.join(i['runtimes'])} | {', '.join(i['heavy_modules']) or 'none'} | {biggest} |")
    full = doc["installs"]["full"]["bytes"]
    lines += ["", *(f"- `[{k}]` is {doc['installs'][k]['bytes'] / full:.1%} of the full environment." for k in ("edge", "onnx")), "",
              "## Cold start: process launch to first prediction of one image", "",
              "| artifact | px | model | install | how | median | min | runs |", "|---|---:|---:|---|---|---:|---:|---|"]
    for c in doc["cold_start"]:
        runs = ", ".join(f"{r['wall_s']:.2f}" for r in c["runs"])
        lines.append(f"| {c['artifact']} | {c['image_size']} | {mb(c['model_bytes'])} | {c['install']} | {c['mode']} | {c['median_s']:.3f} s | {c['min_s']:.3f} s | {runs} |")
    lines += ["", "API runs, median stage times from launch (imports done / artifact verified and opened / first prediction):", ""]
    for c in doc["cold_start"]:
        if c["mode"] == "api":
            stages = [statistics.median(r[k] for r in c["runs"]) for k in ("import_s", "load_s", "first_prediction_s")]
            lines.append(f"- {c['artifact']} ({c['install']}): " + " / ".join(f"{s:.3f} s" for s in stages))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
