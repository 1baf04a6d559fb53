"""`manifest.json`: the only thing later commands trust about an artifact folder.

It is written last, atomically, after every other file in the folder is final, and it lists
each of them with its sha256 and size (`runtime.read_manifest` checks them before loading).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from ..fileio import sha256_file, write_json
from ..model import IMAGENET_BGR_MEAN, PREPROCESS_LAYER
from ..runtime import MANIFEST, SCHEMA
from ..versions import installed_versions

TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "nncf", "ai-edge-litert", "vgg-edge")

PREPROCESSING = {
    "in_graph": True,
    "layer": PREPROCESS_LAYER,
    "what": "keras.applications.vgg16.preprocess_input (caffe mode): RGB->BGR, minus the ImageNet BGR mean",
    "bgr_mean": list(IMAGENET_BGR_MEAN),
    "device_does": "decode to RGB uint8 and resize to the input size (vgg_edge.images.read_image); no scaling, no mean",
}


def tool_versions() -> dict[str, str | None]:
    return installed_versions(TOOLS)


def write(folder: Path, doc: dict) -> dict:
    """Add the file table (every file but the manifest) and write `folder/manifest.json` atomically."""
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    doc = {"schema": SCHEMA, **{k: v for k, v in doc.items() if k not in ("schema", "files", "created")}, "files": files, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json(folder / MANIFEST, doc)
    return doc
