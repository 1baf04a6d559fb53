"""`manifest.json`: the only thing later commands trust about an artifact folder.

This module owns the file: its schema version, writing it (`write`: last, atomically, after every
other file in the folder is final, with each of them listed by sha256 and size) and reading it
back as a typed `ArtifactInfo` (`read`: schema, fields, then every file's size and sha256 checked
before a byte of the model is parsed). Export writes it; runtime, bench and the CLI read it only
through `read`. It never imports TensorFlow or a converter, so the edge side reads it too.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from .decision import DecisionRule
from .errors import VggEdgeError
from .fileio import read_json, sha256_file, write_json
from .formats import FORMATS, Format
from .run import MODEL_FILE, SPLIT_FILE
from .versions import installed_versions

MANIFEST = "manifest.json"
SCHEMA = "vgg-edge-artifact/1"
#: The packages whose versions every manifest records: what made the artifact.
TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "nncf", "ai-edge-litert", "vgg-edge")


@dataclass(frozen=True)
class ArtifactInfo:
    """What a manifest says about an artifact, checked against the files on disk."""

    path: Path  # the artifact folder
    format: str
    precision: str
    model_file: str
    labels: list[str]
    image_size: int
    input: dict  # name, shape, dtype, layout, range, optional quantization {scale, zero_point}
    output: dict  # name, shape, dtype, optional quantization
    status: str  # the parity gate's verdict: "accepted", "unproven" (runs, marked) or "rejected"
    manifest: dict  # the whole document, for the records that only reports show (parity, attempts, ...)

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file

    @property
    def spec(self) -> Format:
        return FORMATS[self.format]

    @property
    def files(self) -> dict[str, dict]:
        """Every file of the artifact but the manifest: name -> {sha256, bytes}."""
        return self.manifest["files"]

    @property
    def size_bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())

    @property
    def parity(self) -> dict:
        """The parity record (accuracy, drops, flips...) the gate judged; empty before the gate ran."""
        return self.manifest.get("parity") or {}

    @property
    def source_run(self) -> Path | None:
        """The run directory the artifact was exported from, as recorded (it may since have moved)."""
        run = (self.manifest.get("source") or {}).get("run")
        return Path(run) if run else None

    @property
    def decision(self) -> DecisionRule:
        """How probabilities become a label: argmax, or the operating point recorded at training."""
        try:
            return DecisionRule.from_record(self.labels, self.manifest.get("decision"))
        except VggEdgeError as exc:
            raise VggEdgeError(f"{self.path / MANIFEST}: {exc}; re-export the model") from None


def is_artifact(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def tool_versions() -> dict[str, str | None]:
    return installed_versions(TOOLS)


def write(folder: Path, doc: dict) -> dict:
    """Add the schema, the file table (every file but the manifest) and the time; write `folder/manifest.json` atomically."""
    files = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    doc = {"schema": SCHEMA, **{k: v for k, v in doc.items() if k not in ("schema", "files", "created")}, "files": files,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json(folder / MANIFEST, doc)
    return doc


def read(artifact: str | os.PathLike, verify: bool = True) -> ArtifactInfo:
    """Parse and check `manifest.json`; with `verify`, every listed file's size and sha256 too."""
    folder = Path(artifact)
    if folder.is_file():  # the manifest or the model file named instead of their folder
        folder = folder.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise VggEdgeError(f"{manifest_path}: no manifest; {_what_instead(folder)}")
    doc = read_json(manifest_path)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise VggEdgeError(f"{manifest_path}: not a {SCHEMA} manifest; re-export the model with this version of vgg-edge")
    try:
        info = ArtifactInfo(
            path=folder, format=doc["format"], precision=doc["precision"], model_file=doc["model_file"],
            labels=list(doc["labels"]), image_size=int(doc["input"]["shape"][1]), input=doc["input"],
            output=doc["output"], status=doc.get("status", "accepted"), manifest=doc,
        )
        files = dict(doc["files"])
        n_out = info.output["shape"][-1]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise VggEdgeError(f"{manifest_path}: malformed manifest (bad or missing {exc}); re-export the model") from None
    if info.format not in FORMATS:
        raise VggEdgeError(f"{manifest_path}: unknown format {info.format!r}; expected one of {', '.join(FORMATS)}")
    if n_out is not None and n_out != len(info.labels):
        raise VggEdgeError(f"{manifest_path}: {len(info.labels)} labels but the model has {n_out} outputs; re-export the model")
    if info.model_file not in files:
        raise VggEdgeError(f"{manifest_path}: model file {info.model_file} is not listed under 'files'; re-export the model")
    for name, meta in files.items():
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not isinstance(meta, dict):
            raise VggEdgeError(f"{manifest_path}: bad 'files' entry {name!r} (must be a name inside the artifact folder with its bytes and sha256); re-export the model")
        if not verify:
            continue
        if not path.is_file():
            raise VggEdgeError(f"{path}: named in the manifest but missing; copy the whole artifact folder again")
        if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
            raise VggEdgeError(f"{path}: sha256 or size differs from the manifest (tampered or truncated); copy the artifact again")
    return info


def _what_instead(folder: Path) -> str:
    """What a folder without a manifest is, and what to pass instead."""
    inside = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}")) if folder.is_dir() else []
    if inside:
        return f"it holds the artifacts {', '.join(inside)}: pass one of them, e.g. {folder / inside[0]}"
    if (folder / MODEL_FILE).is_file() and (folder / SPLIT_FILE).is_file():
        return f"it is a training run: export it first (vgg-edge export {folder} --format onnx), then pass the artifact folder"
    if not folder.exists():
        return "no such folder; pass an artifact folder written by `vgg-edge export` (e.g. exported/<run>/onnx-fp32)"
    return "only folders written by `vgg-edge export` can be loaded (e.g. exported/<run>/onnx-fp32)"
