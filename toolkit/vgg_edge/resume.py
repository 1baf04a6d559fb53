"""Resumable training: what a killed `train` needs to go on where it stopped, in `<runs>/.<name>.resume/`.

Per phase, after every epoch: `EpochCheckpoint` (TensorFlow's CheckpointManager: the phase model's
weights, its optimizer with moments and learning rate, the epoch reached; its index file is replaced
atomically, so a kill during a save leaves the save before), and `PhaseState`, what Keras' callbacks
and layers hold in memory and a checkpoint does not: the early-stopping and plateau counters, the best
weights so far, the history, the dropout seeds. When a phase ends, its record and the full model's
weights are kept (`save_phase`), so a resumed run skips it. The data order is a function of (seed,
phase, epoch) (`loop.Batches`), so resumed epochs see the same batches. With the same settings and
seed, a resumed run ends with the same weights as one that was never interrupted (tested). The folder
is deleted when the run directory has been written.

The settings are fingerprinted: `--resume` with other settings is refused in one line; a run
without `--resume` starts over and discards what an earlier one left. Under multi-worker training
only the chief keeps its folder beside the run directory; every other worker keeps its own under the
cache (`resume_folder`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import VggEdgeError
from .fileio import cache_dir, read_json, write_json
from .ui import console


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, *arrays)
    tmp.replace(path)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def resume_folder(out: Path, worker: str | None = None) -> Path:
    """Where a run keeps its resume state: beside the run directory, or for a worker other than the chief
    (`worker`, e.g. "worker 1"), under the cache, so that it writes nothing beside the chief's run."""
    out = Path(out)
    if worker is None:
        return out.parent / f".{out.name}.resume"
    tag = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "resume" / f"{out.name}-{tag}-{worker.replace(' ', '')}"


class TrainingCheckpoint:
    """The resume folder of one run (or of one worker's part in it)."""

    def __init__(self, folder: Path, settings: dict, resume: bool):
        self.folder = Path(folder)
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        self.resumed = False
        if resume and (self.folder / "settings.json").is_file():
            if read_json(self.folder / "settings.json").get("fingerprint") != fingerprint:
                raise VggEdgeError(f"--resume: {self.folder} was left by a run with other settings; run without --resume to start over")
            self.resumed = True
            console.print(f"resuming from {self.folder}", soft_wrap=True)
        else:
            if resume:
                console.print(f"--resume: nothing to resume in {self.folder}; starting from the beginning", soft_wrap=True)
            elif self.folder.exists():
                console.print(f"[yellow]starting over[/]: {self.folder} from an interrupted run is discarded (use --resume to continue it)", soft_wrap=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            write_json(self.folder / "settings.json", {"fingerprint": fingerprint, "settings": settings})

    def completed_phase(self, index: int) -> tuple[dict, float, list[np.ndarray], list] | None:
        """A phase a previous process finished: its history record, best monitored value, the full model's
        weights and the phase model's random states."""
        record, weights = self.folder / f"phase{index}.json", self.folder / f"phase{index}.npz"
        if not (record.is_file() and weights.is_file()):
            return None
        doc = read_json(record)
        return doc["record"], doc["best"], _load_arrays(weights), doc["seeds"]

    def save_phase(self, index: int, record: dict, best: float, weights: list[np.ndarray], seeds: list) -> None:
        _save_arrays(self.folder / f"phase{index}.npz", weights)
        write_json(self.folder / f"phase{index}.json", {"record": record, "best": best, "seeds": seeds})  # last: the phase counts as done

    def phase_folder(self, index: int) -> Path:
        folder = self.folder / f"phase{index}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class EpochCheckpoint:
    """A phase model's weights, its optimizer and the epoch reached, saved after every epoch (CheckpointManager)."""

    def __init__(self, folder: Path):
        self.folder = folder / "checkpoint"

    def restore(self, model, optimizer, agree: Callable[[int], int]) -> int:
        """Put back the save that every worker holds (`agree`: the smallest of their latest epochs); returns
        the epoch to go on from (0: the phase starts)."""
        import tensorflow as tf

        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=self.epoch), str(self.folder), max_to_keep=2)
        latest = self.manager.latest_checkpoint
        epoch = agree(int(latest.rsplit("-", 1)[1]) if latest else 0)
        if epoch:
            path = f"{self.folder / 'ckpt'}-{epoch}"
            if path not in self.manager.checkpoints:
                raise VggEdgeError(f"--resume: {self.folder} has no save of epoch {epoch}, where the other workers are; run every worker without --resume")
            self.manager.checkpoint.restore(path).assert_existing_objects_matched()
        return epoch

    def save(self, epoch: int) -> None:
        self.epoch.assign(epoch)
        self.manager.save(checkpoint_number=epoch)


class PhaseState:
    """What a checkpoint does not hold, written after every epoch (before the checkpoint) and put back for the
    epoch the checkpoint restores: early stopping's and the plateau's counters, the best weights, the history,
    the layers' random states, and whether early stopping had ended the phase."""

    def __init__(self, folder: Path, early_stopping, plateau):
        self.folder, self.early_stopping, self.plateau = folder, early_stopping, plateau
        self.history: dict[str, list[float]] = {}

    def save(self, epoch: int, logs: dict, model) -> None:
        """The state after `epoch` epochs (`logs`: the last one's figures)."""
        stopping = self.early_stopping
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if stopping.best_epoch == epoch - 1 and stopping.best_weights is not None:
            _save_arrays(self.folder / f"best{epoch - 1}.npz", stopping.best_weights)
        if (self.folder / "state.json").is_file():
            (self.folder / "state.json").replace(self.folder / "state.prev.json")
        write_json(self.folder / "state.json", {
            "epoch": epoch, "history": self.history, "seeds": seed_states(model), "stopped": bool(model.stop_training),
            "early_stopping": {"wait": stopping.wait, "best": stopping.best, "best_epoch": stopping.best_epoch, "stopped_epoch": stopping.stopped_epoch},
            "plateau": {"wait": self.plateau.wait, "best": self.plateau.best, "cooldown_counter": self.plateau.cooldown_counter},
        })

    def restore(self, epoch: int, model) -> None:
        """The state saved with `epoch` (state.json, or state.prev.json when a kill came between the two saves)."""
        docs = [read_json(p) for p in (self.folder / "state.json", self.folder / "state.prev.json") if p.is_file()]
        doc = next((d for d in docs if d["epoch"] == epoch), None)
        if doc is None:
            raise VggEdgeError(f"--resume: {self.folder} holds a checkpoint of epoch {epoch} without its state; run without --resume to start over")
        self.history = doc["history"]
        set_seed_states(model, doc["seeds"])
        for callback, values in ((self.early_stopping, doc["early_stopping"]), (self.plateau, doc["plateau"])):
            for name, value in values.items():
                setattr(callback, name, value)
        best = self.folder / f"best{doc['early_stopping']['best_epoch']}.npz"
        if best.is_file():
            self.early_stopping.best_weights = _load_arrays(best)
        model.stop_training = doc["stopped"]


def seed_states(model) -> list[list[int]]:
    """The random-number states of `model`'s layers (dropout, augmentation): not weights, so neither
    get_weights nor a checkpoint of the model keep them, yet a resumed run needs them to draw the same masks."""
    return [np.asarray(v).tolist() for v in model.variables if "seed_generator_state" in v.path]


def set_seed_states(model, states: list[list[int]]) -> None:
    variables = [v for v in model.variables if "seed_generator_state" in v.path]
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))
