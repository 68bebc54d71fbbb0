"""Resumable training: the state after every epoch, so a killed run goes on where it stopped.

After each epoch the train stage writes models/.resume/<dataset>/<model>/seed<k>.pt: the learner's
weights, optimiser, lr schedule and grad scaler (or the NumPy CNN's weights and generator), the
shuffling generator, torch's global (and CUDA) RNG of every rank, early stopping's best epoch and
weights, the curve rows and the MLflow run id. Running the stage again (`dvc repro` does) loads it
and continues the same MLflow run, so on a CPU the final checkpoint, curves and metrics equal an
uninterrupted run's. The file is deleted once the run's checkpoint is written.

It lives outside the stage's output folder models/<dataset>/<model>/ because DVC deletes a stage's
outputs before running it, and the train stage deletes unknown files there. DVC neither tracks
nor deletes models/.resume/ (it is no stage's output); git ignores it with /models/.
A file made with other settings (training config, data version, seed, device, process count) is
ignored with a log line, so a changed config never continues a stale run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from pipeline.artifacts import ArtifactError, atomic_path, load_torch, train_command
from pipeline.config import TrainConfig
from pipeline.engine import distributed
from pipeline.engine.runtime import World
from pipeline.tracking.store import TrackingError

log = logging.getLogger(__name__)
RESUME_DIR = Path("models") / ".resume"


def resume_file(dataset: str, model: str, seed: int) -> Path:
    return RESUME_DIR / dataset / model / f"seed{seed}.pt"


def fingerprint(cfg: TrainConfig, seed: int, data_version: str, run_settings: dict) -> str:
    """A hash of everything a resumed run must share with the run that wrote the file."""
    # The model's seeds list is left out: adding a seed must not restart the seeds already running.
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"}
    payload = {"train": train, "seed": seed, "data_version": data_version, **run_settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResumeFile:
    """One training run's resume file. save() is collective in a multi-process run (every rank
    calls it; rank 0 writes), as is load()."""

    def __init__(self, dataset: str, model: str, seed: int, fingerprint: str, world: World = World()):
        self.path = resume_file(dataset, model, seed)
        self.rebuild = train_command(dataset, model)
        self.fingerprint = fingerprint
        self.world = world

    def load(self, learner, generator: torch.Generator) -> dict | None:
        """Restores the learner and the RNGs from the file; returns the run's progress (see
        save), or None when there is no usable file."""
        if not self.path.exists():
            return None
        try:
            state = load_torch(self.path, self.rebuild)
        except (ArtifactError, FileNotFoundError) as e:  # unreadable: starting over is the safe answer
            log.warning("ignoring the resume file: %s; training from epoch 1", e)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("ignoring resume file %s: made with other settings (training config, data, "
                     "seed, device or process count); training from epoch 1", self.path)
            return None
        learner.load_training_state(state["learner"])
        _restore_rng(state["rng"], generator, self.world)
        log.info("resuming from %s after epoch %d", self.path, state["progress"]["epoch"])
        return state["progress"]

    def save(self, learner, generator: torch.Generator, progress: dict) -> None:
        """Writes the state after an epoch, atomically. progress: epoch (the last one done),
        history (curve rows), best (early stopping's val_accuracy, epoch, state), run_id,
        seconds (training time so far)."""
        rng = _rng_state(generator, self.world)
        if not self.world.is_main:
            return
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, "learner": learner.training_state(),
                        "rng": rng, "progress": progress}, tmp)

    def remove(self) -> None:
        if not self.world.is_main:
            return
        self.path.unlink(missing_ok=True)
        # The model's, dataset's and .resume folders too once empty: nothing is left to resume.
        for folder in (self.path.parent, self.path.parent.parent, RESUME_DIR):
            try:
                folder.rmdir()
            except OSError:  # not empty (another seed's or model's file), or gone already
                break


def _rng_state(generator: torch.Generator, world: World) -> dict:
    """The shuffling generator (the same on every rank) and each rank's global torch RNGs, which
    draw dropout and augmentation. NumPy's and Python's global RNGs are not used in training."""
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None}
    return {"shuffle": generator.get_state(), "ranks": distributed.gather(mine, world)}


def _restore_rng(state: dict, generator: torch.Generator, world: World) -> None:
    generator.set_state(state["shuffle"])
    mine = state["ranks"][world.rank]
    torch.set_rng_state(mine["torch"])
    if mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"])


def reopen_run(run_log, run_id: str, system_metrics: bool = False) -> set[int]:
    """Continues the interrupted run's MLflow run (through `run_log`, a pipeline.tracking.run_log.RunLog);
    returns the epochs it logged."""
    try:
        return run_log.reopen(run_id, system_metrics)
    except TrackingError as e:
        raise TrackingError(
            f"the resume file's MLflow run {run_id} cannot be continued: {e}; set MLFLOW_TRACKING_URI "
            f"to the store it was started in, or delete {RESUME_DIR} to train from epoch 1") from e
