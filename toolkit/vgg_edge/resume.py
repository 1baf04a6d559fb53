"""Resumable training: what a killed `train` needs to go on where it stopped, in `<runs>/.<name>.resume/`.

Per phase, while it runs: Keras' own `BackupAndRestore` (the phase model's weights, the optimizer
with its learning rate, the epoch reached), plus the state Keras does not keep (`PhaseState`): the
early-stopping and plateau counters, the best weights so far, the history. When a phase ends, its
record and the full model's weights are kept (`save_phase`), so a resumed run skips it. The data
order is a function of (seed, phase, epoch) (`training._batches`), so resumed epochs see the same
batches. With the same settings and seed, a resumed run ends with the same weights as one that
was never interrupted (tested). The folder is deleted when the run directory has been written.

The settings are fingerprinted: `--resume` with other settings is refused in one line; a run
without `--resume` starts over and discards what an earlier one left.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from .errors import VggEdgeError
from .fileio import read_json, write_json
from .ui import console


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, *arrays)
    tmp.replace(path)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


class TrainingCheckpoint:
    """The resume folder of one run directory."""

    def __init__(self, out: Path, settings: dict, resume: bool):
        out = Path(out)
        self.folder = out.parent / f".{out.name}.resume"
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
        """Where phase `index` keeps its state; a state that a kill left unreadable is cleared, so the phase starts over."""
        folder = self.folder / f"phase{index}"
        backup = folder / "backup"
        latest = (backup / "latest.weights.h5", backup / "training_metadata.json")
        previous = tuple(path.with_name(path.name + ".bkp") for path in latest)  # BackupAndRestore's double checkpoint
        if backup.is_dir() and not _complete(*latest):
            if _complete(*previous):  # the kill cut the latest save short: go on from the one before
                for old, new in zip(previous, latest):
                    shutil.copyfile(old, new)
            else:
                console.print(f"[yellow]{folder.name}[/]: its only backup was cut short by the interruption; the phase starts over", soft_wrap=True)
                shutil.rmtree(folder)
        return folder

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def seed_states(model) -> list[list[int]]:
    """The random-number states of `model`'s layers (dropout, augmentation): not weights, so neither
    get_weights nor BackupAndRestore keep them, yet a resumed run needs them to draw the same masks."""
    return [np.asarray(v).tolist() for v in model.variables if "seed_generator_state" in v.path]


def set_seed_states(model, states: list[list[int]]) -> None:
    variables = [v for v in model.variables if "seed_generator_state" in v.path]
    for variable, state in zip(variables, states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def _complete(weights: Path, metadata: Path) -> bool:
    """Whether a BackupAndRestore save is whole: BackupAndRestore writes its files in place, so a kill in the
    middle leaves a truncated weights file or an empty metadata file."""
    import h5py

    try:
        with h5py.File(weights, "r"):
            pass
        return isinstance(json.loads(metadata.read_text()).get("epoch"), int)
    except (OSError, ValueError, AttributeError):
        return False


def phase_callbacks(folder: Path, early_stopping, plateau, batches) -> tuple[list, object]:
    """The callbacks that make a phase resumable, in the order they must run, and the PhaseState (its `.history`).
    `batches` is the phase's training data: told the epoch it is in, it draws that epoch's order."""
    import keras

    class PhaseState(keras.callbacks.Callback):
        """Early stopping's and the plateau's counters, the best weights and the history, written after every epoch
        (before BackupAndRestore marks the epoch done) and put back at the first epoch, once BackupAndRestore has
        chosen it (its latest save, or the one before when the kill truncated the latest)."""

        def on_train_begin(self, logs=None):
            self.history: dict[str, list[float]] = {}
            self.restored = False

        def on_epoch_begin(self, epoch, logs=None):
            batches.sync(epoch)
            if not self.restored:
                self.restored = True
                self._restore(epoch)

        def _restore(self, epoch: int) -> None:
            docs = [read_json(p) for p in (folder / "state.json", folder / "state.prev.json") if p.is_file()]
            doc = next((d for d in docs if d["epoch"] == epoch), None)
            if doc is None:
                return
            self.history = doc["history"]
            set_seed_states(self.model, doc["seeds"])
            for callback, values in ((early_stopping, doc["early_stopping"]), (plateau, doc["plateau"])):
                for name, value in values.items():
                    setattr(callback, name, value)
            best = folder / f"best{doc['early_stopping']['best_epoch']}.npz"
            if best.is_file():
                early_stopping.best_weights = _load_arrays(best)

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            if early_stopping.best_epoch == epoch and early_stopping.best_weights is not None:
                _save_arrays(folder / f"best{epoch}.npz", early_stopping.best_weights)
            if (folder / "state.json").is_file():
                (folder / "state.json").replace(folder / "state.prev.json")
            write_json(folder / "state.json", {
                "epoch": epoch + 1, "history": self.history, "seeds": seed_states(self.model),
                "early_stopping": {"wait": early_stopping.wait, "best": early_stopping.best, "best_epoch": early_stopping.best_epoch},
                "plateau": {"wait": plateau.wait, "best": plateau.best, "cooldown_counter": plateau.cooldown_counter},
            })

    folder.mkdir(parents=True, exist_ok=True)
    state = PhaseState()
    backup = keras.callbacks.BackupAndRestore(str(folder / "backup"), save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
    return [early_stopping, plateau, state, backup], state
