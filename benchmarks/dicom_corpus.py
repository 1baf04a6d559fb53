"""`read_images` on real DICOM files: every file bundled in pydicom's test_files folder (offline; our
public corpus), decoded at 64 px one file at a time and counted as decoded, refused (grouped by the
kind of reason) or crashed (an exception other than ImageReadError: must be 0), per transfer
syntax, with the lines that reached stderr meanwhile (the decoders' warnings must not).

    .venv/bin/python benchmarks/dicom_corpus.py [--before /tmp/images_old.py]   # -> benchmarks/results/dicom_corpus.{md,json}

--before runs an older images.py on the same files too, for a before/after comparison, e.g. the
last commit's: `git show HEAD:toolkit/vgg_edge/images.py > /tmp/images_old.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pydicom

from vgg_edge.fileio import write_bytes, write_json

SIZE = 64
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
PACKAGES = ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls", "pillow")
#: A refusal's kind: the first pattern its message matches.
KINDS = (
    ("no image (SR, RT plan, waveform, DICOMDIR, ...)", re.compile(r": holds no image")),
    ("multi-frame", re.compile(r": multi-frame DICOM")),
    ("over the pixel limit", re.compile(r"-pixel limit")),
    ("syntax without an installed decoder", re.compile(r": no decoder for|: pydicom cannot decode")),
    ("compressed data no installed decoder could read", re.compile(r": no installed decoder could read")),
    ("neither DICOM nor an image", re.compile(r": not an image format Pillow can decode|: not a DICOM file")),
    ("damaged or incomplete DICOM", re.compile(r": cannot read DICOM|: cannot decode image|: cannot read image|frame header")),
)


def images_module(path: Path | None) -> ModuleType:
    """vgg_edge.images, or another version of it loaded from `path` (its relative imports resolve in vgg_edge)."""
    if path is None:
        from vgg_edge import images

        return images
    spec = importlib.util.spec_from_file_location("vgg_edge._images_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def stderr_lines() -> Iterator[list[str]]:
    """The non-empty lines written to file descriptor 2 during the block (Python warnings, logging, native code)."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def kind_of(reason: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(reason)), "other")


def transfer_syntax(path: Path) -> str:
    """The file's transfer syntax name, as its file meta states it."""
    with warnings.catch_warnings():  # single-threaded here; pydicom's complaints about odd files are not the subject
        warnings.simplefilter("ignore")
        try:
            syntax = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.get("TransferSyntaxUID")
        except Exception:
            return "(unparseable)"
    return syntax.name if syntax else "(no file meta)"


def run(module: ModuleType, files: list[Path]) -> list[dict]:
    """One row per file: outcome (decoded, refused, crashed), the refusal's kind and reason, the warning reported, stderr lines."""
    rows = []
    for path in files:
        warned = reason = kind = None
        with stderr_lines() as printed:
            try:
                loaded = module.read_images([path], SIZE, workers=1)
                outcome = "decoded" if loaded.paths else "refused"
                reason = loaded.failures.get(str(path))
                warned = getattr(loaded, "warnings", {}).get(str(path))
            except Exception as exc:  # what read_images must never let out
                outcome, reason = "crashed", f"{type(exc).__name__}: {exc}"
        if outcome == "refused":
            kind = kind_of(reason)
        strip = f"{path}: "
        rows.append({
            "file": path.relative_to(CORPUS).as_posix(), "outcome": outcome, "kind": kind,
            "reason": reason.removeprefix(strip) if reason else None, "warning": warned.removeprefix(strip) if warned else None,
            "stderr_lines": printed,
        })
    return rows


def summary(rows: list[dict]) -> dict:
    outcomes = Counter(r["outcome"] for r in rows)
    return {
        "decoded": outcomes["decoded"], "refused": outcomes["refused"], "crashed": outcomes["crashed"],
        "refused_by_kind": dict(Counter(r["kind"] for r in rows if r["kind"])),
        "decoded_with_a_warning": sum(bool(r["warning"]) for r in rows),
        "stderr_lines": sum(len(r["stderr_lines"]) for r in rows),
    }


def markdown(doc: dict, command: str) -> str:
    runs = [name for name in ("before", "after") if name in doc]
    after = doc["after"]["summary"]
    kinds = [kind for kind, _ in KINDS if any(kind in doc[name]["summary"]["refused_by_kind"] for name in runs)]
    kinds += sorted({k for name in runs for k in doc[name]["summary"]["refused_by_kind"]} - set(kinds))
    lines = [
        f"# `read_images` on the DICOM files bundled with pydicom ({doc['files']} files, {SIZE} px)",
        "",
        f"Command: `{command}` ({doc['seconds']} s). Corpus: every file in pydicom {doc['versions']['pydicom']}'s "
        "`data/test_files` (offline), DICOM or not, each file passed to `read_images` by itself.",
        "Decoders installed: " + ", ".join(f"{name} {version}" for name, version in doc["versions"].items()) + "."
        + (" `before`: the images.py given to --before, run with the same decoders installed." if "before" in doc else ""),
        "",
        "| files | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
        "| decoded | " + " | ".join(str(doc[name]["summary"]["decoded"]) for name in runs) + " |",
    ]
    lines += [f"| refused: {kind} | " + " | ".join(str(doc[name]["summary"]["refused_by_kind"].get(kind, 0)) for name in runs) + " |" for kind in kinds]
    lines += [
        "| **crashed** (not an ImageReadError) | " + " | ".join(str(doc[name]["summary"]["crashed"]) for name in runs) + " |",
        "| decoded, with the decoders' warning reported per file | " + " | ".join(str(doc[name]["summary"]["decoded_with_a_warning"]) for name in runs) + " |",
        "| lines printed on stderr | " + " | ".join(str(doc[name]["summary"]["stderr_lines"]) for name in runs) + " |",
        "",
        "## Per transfer syntax",
        "",
        "| transfer syntax | files | " + " | ".join(f"decoded {name}" for name in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    syntaxes = Counter(doc["transfer_syntax"].values())
    for syntax, count in sorted(syntaxes.items(), key=lambda item: (-item[1], item[0])):
        decoded = [sum(r["outcome"] == "decoded" for r in doc[name]["files"] if doc["transfer_syntax"][r["file"]] == syntax) for name in runs]
        lines.append(f"| {syntax} | {count} | " + " | ".join(map(str, decoded)) + " |")
    lines += ["", "## Refused now, by kind (one example each)", "", "| kind | files | example |", "|---|---|---|"]
    for kind in (k for k in kinds if k in after["refused_by_kind"]):
        example = next(r for r in doc["after"]["files"] if r["kind"] == kind)
        lines.append(f"| {kind} | {after['refused_by_kind'][kind]} | `{example['file']}`: {example['reason']} |")
    warned = [r for r in doc["after"]["files"] if r["warning"]]
    if warned:
        lines += ["", "## Decoded with a warning (reported in `LoadedImages.warnings`, not printed)", ""]
        lines += [f"- `{r['file']}`: {r['warning']}" for r in warned]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an older images.py to run on the same files")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dicom_corpus"))
    args = parser.parse_args()
    command = "python benchmarks/dicom_corpus.py" + (f" --before {args.before}" if args.before else "")
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    started = time.perf_counter()
    doc: dict = {"corpus": str(CORPUS), "files": len(files), "size": SIZE,
                 "versions": {name: importlib.metadata.version(name) for name in PACKAGES},
                 "transfer_syntax": {p.relative_to(CORPUS).as_posix(): transfer_syntax(p) for p in files}}
    runs = {"before": images_module(args.before)} if args.before else {}
    runs["after"] = images_module(None)
    for name, module in runs.items():
        rows = run(module, files)
        doc[name] = {"summary": summary(rows), "files": rows}
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out.with_suffix(".json"), doc)
    text = markdown(doc, command)
    write_bytes(args.out.with_suffix(".md"), text.encode())
    print(text)
    if doc["after"]["summary"]["crashed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
