"""What to bench: the targets found in the paths given, one per model, runtime and device.

A target is an exported artifact on one of the devices its manifest lists, or a run's Keras model
(the baseline). It is also the identity `compare` matches across bench files (`Target.key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import manifest
from ..errors import VggEdgeError
from ..formats import KERAS, RUNTIMES
from ..run import RunDir


@dataclass(frozen=True)
class Target:
    """One model on one runtime and device: the run's Keras baseline or an exported artifact."""

    name: str  # "keras", or the artifact folder's name ("onnx-int8")
    format: str  # keras | onnx | tflite | openvino
    precision: str
    device: str  # CPU | CUDA | TensorRT | GPU
    path: str  # run directory (keras) or artifact folder
    run: str  # run directory whose test split feeds it and whose Keras model is its baseline
    image_size: int

    @property
    def runtime(self) -> str:
        """The package that runs it (formats.RUNTIMES)."""
        return RUNTIMES[self.format].package

    @property
    def key(self) -> str:
        """Identity across bench files: what `compare` matches on."""
        return f"{Path(self.run).name}/{self.name}@{self.runtime}:{self.device}"


def discover(paths: list[Path], baseline: bool = True) -> list[Target]:
    """Targets for the given paths: artifact folders, folders of them (`exported/<run>`), run directories.

    Each artifact's source run (named in its manifest) supplies the test images and, with
    `baseline`, the Keras model every ratio is taken against.
    """
    artifacts: list[Path] = []
    runs: list[Path] = []
    for path in paths:
        if manifest.is_artifact(path):
            artifacts.append(path)
        elif RunDir.looks_like(path):
            runs.append(path.resolve())  # manifests record resolved paths: one run, one baseline
        elif path.is_dir() and (found := sorted(p for p in path.iterdir() if manifest.is_artifact(p))):
            artifacts.extend(found)
        else:
            raise VggEdgeError(f"{path}: not an artifact folder, a folder of artifacts or a run directory; pass exported/<run> or runs/<run>")
    targets: list[Target] = []
    for folder in artifacts:
        info = manifest.read(folder, verify=False)
        run = _source_run(info, runs)
        for device in info.spec.devices:
            targets.append(Target(folder.name, info.format, info.precision, device, str(folder), str(run), info.image_size))
    for run in dict.fromkeys([*runs, *(Path(t.run) for t in targets)]) if baseline else runs:
        opened = RunDir.open(run)
        targets.insert(0, Target(KERAS.name, KERAS.name, "fp32", "CPU", str(run), str(run), opened.image_size))
    if not targets:
        raise VggEdgeError(f"{', '.join(map(str, paths))}: no artifacts found; run `vgg-edge export RUN` first")
    return targets


def _source_run(info: manifest.ArtifactInfo, runs: list[Path]) -> Path:
    """The run an artifact was exported from, as its manifest records it (given on the command line or not);
    where that run is not here (the artifact was copied from another machine), the one run given."""
    recorded = info.source_run
    if recorded and RunDir.looks_like(recorded):
        return recorded.resolve()
    if len(runs) == 1:
        return runs[0]
    raise VggEdgeError(f"{info.path / manifest.MANIFEST}: its source run {recorded or '(none recorded)'} is not here; pass the run directory as well (vgg-edge bench RUN {info.path})")
