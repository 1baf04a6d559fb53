"""A seed notebook's model, end to end through `vgg-edge import` and `export`: what a notebook user gets.

Step 1 trains the brain-MRI tutorial's model as the notebook does it (and nothing like `train`):
`image_dataset_from_directory` at 128 px with an 80/20 train/validation subset, pixels / 255,
`Sequential([VGG16 base (ImageNet, frozen), Flatten, Dense(256, relu), Dropout(0.5),
Dense(4, softmax)])`, Adam, a few epochs, `model.evaluate` on test/, `model.save('....h5')`.
Step 2 is the product: `vgg-edge import` then `vgg-edge export --format all` at fp32 and int8.
The notebook's own test accuracy (TensorFlow's decoder and resize) is set beside import's (the
edge decoder, `images.read_image`) on the same test/ folder, and each export's parity beside them.

    .venv/bin/python benchmarks/import_seed_notebook.py            # ~30 min on 2 cores
    -> benchmarks/results/import_seed_notebook.{json,md}, runs/notebook-brain-mri-128, exported/notebook-brain-mri-128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VGG_EDGE_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"


def notebook(data: Path, size: int, epochs: int, out: Path) -> dict:
    """The tutorial's training, as written in the notebook; returns its own figures."""
    import keras

    keras.utils.set_random_seed(1)
    load = dict(image_size=(size, size), batch_size=32, label_mode="int", seed=1)
    train = keras.utils.image_dataset_from_directory(data / "train", validation_split=0.2, subset="training", **load)
    val = keras.utils.image_dataset_from_directory(data / "train", validation_split=0.2, subset="validation", **load)
    test = keras.utils.image_dataset_from_directory(data / "test", shuffle=False, **load)
    scale = lambda x, y: (x / 255.0, y)  # noqa: E731  (the notebook's rescale=1./255)
    base = keras.applications.VGG16(include_top=False, weights=str(SHARED / "weights" / "vgg16_imagenet_notop.h5"), input_shape=(size, size, 3))
    base.trainable = False
    model = keras.Sequential([keras.Input((size, size, 3)), base, keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(len(train.class_names), activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(train.map(scale), validation_data=val.map(scale), epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(test.map(scale), verbose=0)
    model.save(out)
    return {"classes": train.class_names, "epochs": epochs, "fit_s": round(seconds, 1), "val_accuracy": history.history["val_accuracy"][-1],
            "test_accuracy_notebook_pipeline": float(accuracy), "model_file": str(out), "bytes": out.stat().st_size}


def vgg_edge(*args: str) -> float:
    """Run the CLI as a user would; returns its wall time (fails loudly)."""
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "vgg-edge"), *args], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "brain-mri")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--name", default="notebook-brain-mri-128")
    args = parser.parse_args()
    os.chdir(ROOT)
    h5 = Path("runs") / f"{args.name}.h5"
    h5.parent.mkdir(exist_ok=True)
    seed = notebook(args.data, args.size, args.epochs, h5)
    run, exported = Path("runs") / args.name, Path("exported") / args.name
    timings = {"import_s": vgg_edge("import", str(h5), "--data", str(args.data), "--preprocess", "scale", "--out", str(run))}
    for precision in ("fp32", "int8"):
        try:
            timings[f"export_{precision}_s"] = vgg_edge("export", str(run), "--format", "all", "--precision", precision)
        except subprocess.CalledProcessError:  # a rejected export is a result too: its manifest says why
            timings[f"export_{precision}_s"] = None
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "report.json").read_text())
    artifacts = {}
    for folder in sorted(exported.glob("*-*")):
        m = json.loads((folder / "manifest.json").read_text())
        p = m["parity"]
        artifacts[folder.name] = {"status": m["status"], "accuracy": p["accuracy"], "drop_pp": p["accuracy_drop_pp"], "flips": p["flips"], "n": p["n"],
                                  "max_abs_prob_diff": p["max_abs_prob_diff"], "mb": round(sum(f["bytes"] for f in m["files"].values()) / 1e6, 1),
                                  "attempt": m["conversion"]["attempt"]}
    doc = {"seed": seed, "import": {"test_accuracy": metrics["accuracy"], "n": metrics["n"], "preprocess_check": report["preprocess_check"],
                                    "inlined": report["inlined"]}, "artifacts": artifacts, "timings": timings,
           "command": "benchmarks/import_seed_notebook.py " + " ".join(sys.argv[1:])}
    (RESULTS / "import_seed_notebook.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# A seed notebook's model through `vgg-edge import` and `export`", "",
        f"Command: `.venv/bin/python {doc['command']}` (2 CPU cores). The notebook: brain MRI at {args.size} px, "
        f"frozen VGG16 + Flatten + Dense(256) + Dropout + softmax, pixels / 255, {args.epochs} epochs ({seed['fit_s']:.0f} s), saved as `.h5`.", "",
        f"- the notebook's own test accuracy (TensorFlow decoder and resize): **{seed['test_accuracy_notebook_pipeline']:.4f}**",
        f"- after `vgg-edge import --preprocess scale`, the same test/ folder through the edge decoder: **{metrics['accuracy']:.4f}** on {metrics['n']} images",
        f"- import's preprocessing check on {report['preprocess_check']['images']} val images: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report["preprocess_check"]["accuracy"].items()), "",
        "| artifact | gate | accuracy | drop pp | flips | max abs dp | MB | attempt |", "|---|---|---|---|---|---|---|---|",
        *(f"| {k} | {a['status']} | {a['accuracy']:.4f} | {a['drop_pp']:+.2f} | {a['flips']}/{a['n']} | {a['max_abs_prob_diff']:.1e} | {a['mb']} | {a['attempt']} |"
          for k, a in artifacts.items()), "",
        "Wall times (s): " + ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} failed" for k, v in timings.items()) + ".", "",
    ]
    (RESULTS / "import_seed_notebook.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
