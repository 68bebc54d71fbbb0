"""Stage `train`: one model, one MLflow run and one best checkpoint per seed.

    pipeline train --dataset mnist --model lenet5
    # writes models/mnist/lenet5/seed12.pt and metrics/mnist/curves/lenet5/seed12.csv
    # (one pair per seed of the `seeds` list)

One loop for every model of the registry (torch modules and the NumPy CNN, through
`pipeline.engine.learners`). Early stopping watches validation accuracy; the test set is
never read here. MLflow is kept by a child process (`pipeline.tracking.run_log`), which checks and
opens the store while this one loads the data and builds the model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import torch

from pipeline import artifacts
from pipeline.artifacts import atomic_path, load_prepared
from pipeline.config import Params, TrainConfig
from pipeline.data.split import stratified_subset
from pipeline.engine import distributed, resume, runtime, signals
from pipeline.engine.cost import learner_flops
from pipeline.engine.inference import loss_and_accuracy
from pipeline.engine.learners import build_learner
from pipeline.models import get_model_spec
from pipeline.models.registry import ModelSpec
from pipeline.tracking.run_log import RunLog
from pipeline.tracking.store import TrackingError

log = logging.getLogger(__name__)


def main(params: Params, dataset: str, model: ModelSpec | str, run_log: RunLog | None = None) -> list[dict]:
    """Trains the model once per seed; returns the checkpoints in seed order.

    `model`: the spec the CLI looked up, or a registered name; `run_log`: the MLflow child
    `pipeline train` started first thing; one is started here if None.
    """
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    model_name = spec.name
    seeds = params.seeds_for(dataset, model_name)
    distributed.check(params)
    with (distributed.session(params.runtime.distributed, params.runtime.device) as world,
          contextlib.ExitStack() as stack):
        if world.is_main and run_log is None:
            run_log = stack.enter_context(RunLog(dataset))
        checkpoints = [train_seed(params, dataset, spec, seed, world, run_log) for seed in seeds]
        # A stale seed's files (from a longer seeds list) must not outlive it, to be read as
        # current by someone listing the folder; removed only once every seed has its own, so a
        # run that fails leaves the earlier results as they were.
        for directory in (artifacts.checkpoint_dir(dataset, model_name), artifacts.curves_dir(dataset, model_name)):
            for stale in directory.glob("seed*.*"):
                if world.is_main and stale.stem.removeprefix("seed") not in {str(s) for s in seeds}:
                    stale.unlink()
        return checkpoints


def train_seed(params: Params, dataset: str, spec: ModelSpec, seed: int,
               world: runtime.World = runtime.World(), run_log: RunLog | None = None) -> dict:
    """One training run: seeded weights, shuffling and subsets; its own MLflow run. Goes on from
    the resume file an interrupted run left (pipeline.engine.resume), if its settings match.

    In a multi-process run (`world`) every rank trains its shard; rank 0 alone writes files
    and talks to MLflow, through `run_log` (None on the other ranks).
    """
    model_name = spec.name
    cfg = params.train_config(dataset, model_name)
    device = runtime.setup(params.runtime, seed, world)
    learner = build_learner(spec, dataset, cfg, device, seed, params.runtime, world)
    # The test split selects nothing: it never reaches the training code.
    data = subset_splits({k: v for k, v in load_prepared(dataset).items() if not k.startswith("test_")},
                         cfg, seed)
    generator = torch.Generator().manual_seed(seed)
    resume_file = resume.ResumeFile(dataset, model_name, seed, resume.fingerprint(
        cfg, seed, data["data_version"], {"device": device.type, "nproc": world.size,
                                          "channels_last": params.runtime.channels_last,
                                          "cuda": dataclasses.asdict(params.runtime.cuda)}), world)
    progress = resume_file.load(learner, generator) or {
        "epoch": 0, "history": [], "best": {"val_accuracy": -1.0, "epoch": 0, "state": None},
        "run_id": None, "seconds": 0.0}

    # The run's own seed, not the model's list of them (which every run would carry again).
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"}
    run_params = {**settings, "seed": seed, "device": device.type,
                  "threads": torch.get_num_threads(), "params": learner.num_params,
                  "input_size": cfg.input_size or spec.input_size, "source": spec.source,
                  "framework": spec.framework, "channels_last": params.runtime.channels_last,
                  "cuda": dataclasses.asdict(params.runtime.cuda),
                  "nproc": world.size, "train_size": len(data["train_y"]), "val_size": len(data["val_y"])}
    run_id = _open_run(run_log, learner, model_name, run_params, {"data_version": data["data_version"],
                       "seed": str(seed)}, progress, params.runtime.system_metrics) if run_log else None
    log.info("%s/%s seed %d: %d params on %s (%d threads), MLflow run %s", dataset, model_name, seed,
             run_params["params"], device, torch.get_num_threads(), run_id)
    history, best = progress["history"], progress["best"]
    start = time.perf_counter() - progress["seconds"]
    try:
        for epoch in range(progress["epoch"] + 1, cfg.epochs + 1):
            if cfg.patience and epoch - 1 - best["epoch"] >= cfg.patience:
                log.info("%s: early stop, no val improvement for %d epochs", model_name, cfg.patience)
                break
            t0 = time.perf_counter()
            learner.begin_epoch(epoch)
            train_loss, train_acc = learner.train_epoch(
                data["train_x"], data["train_y"], generator,
                desc=f"{model_name} seed {seed} epoch {epoch}/{cfg.epochs}")
            val_logits = learner.logits(data["val_x"], params.runtime.eval_batch_size)
            val_loss, val_acc = distributed.from_main(world, *loss_and_accuracy(val_logits, data["val_y"]))
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
            history.append(row)
            t_book = time.perf_counter()  # what the epoch costs beyond training and validation
            if val_acc > best["val_accuracy"]:
                # The best epoch's validation logits go into the checkpoint: a binary model's
                # evaluate stage chooses its threshold on them, without a second pass.
                best = {"val_accuracy": val_acc, "epoch": epoch, "state": learner.state_dict(),
                        "val_logits": val_logits}
            # Saved before MLflow hears of the epoch: a run killed in between logs it on resume.
            resume_file.save(learner, generator, {"epoch": epoch, "history": history, "best": best,
                                                  "run_id": run_id, "seconds": time.perf_counter() - start})
            if run_log:
                _log_row(run_log, row)
            log.info("%s epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs (+%.2fs bookkeeping)",
                     model_name, epoch, train_loss, train_acc, val_loss, val_acc, row["seconds"],
                     time.perf_counter() - t_book)
        train_seconds = time.perf_counter() - start
        learner.load_state_dict(best["state"])  # restore the best weights
        checkpoint = {
            "model": model_name, "dataset": dataset, "state_dict": best["state"],
            "best_epoch": best["epoch"], "epochs_run": len(history), "train_seconds": train_seconds,
            "best_val_accuracy": best["val_accuracy"], "mlflow_run_id": run_id,
            "best_val_logits": best.get("val_logits"), "val_subset": cfg.val_subset,
            "data_version": data["data_version"], "seed": seed, "flops_per_image": learner_flops(learner),
        }
        if world.is_main:
            _write_outputs(run_log, dataset, model_name, seed, checkpoint, history)
        resume_file.remove()  # only now: a run killed before its outputs were written resumes
    except BaseException as e:
        if run_log:
            status = signals.run_status(e)  # KILLED for SIGTERM, FAILED for Ctrl-C or an error
            _end_run(run_log, status)
            STOPPED_RUNS.append((run_id, status))  # what an interrupt's message may name
        raise
    if run_log:
        run_log.end()
    log.info("%s seed %d: best epoch %d (val acc %.4f), %.1fs", model_name, seed, best["epoch"],
             best["val_accuracy"], train_seconds)
    return checkpoint


# The MLflow runs this process ended on the way out of an error or a signal, with their status
# (pipeline.cli's message names them; a Ctrl-C between seeds, after a run FINISHED, ended none).
STOPPED_RUNS: list[tuple[str, str]] = []


def _open_run(run_log: RunLog, learner, model_name: str, run_params: dict, tags: dict, progress: dict,
              system_metrics: bool) -> str:
    """A new MLflow run, or the interrupted run's own when resuming (left active either way)."""
    if progress["run_id"] is None:
        # Asked for, then answered: the child opens the run while this process builds what the
        # first step needs (torch's optimizers import torch._dynamo, 0.9 s). A store that cannot
        # take the run still fails the stage before any training.
        run_log.send_start(model_name, run_params, tags, system_metrics)
        learner.prepare_training()
        return run_log.started()
    logged = resume.reopen_run(run_log, progress["run_id"], system_metrics)
    for row in progress["history"]:
        if row["epoch"] not in logged:  # saved in the resume file, killed before MLflow had it
            _log_row(run_log, row)
    return progress["run_id"]


def _log_row(run_log: RunLog, row: dict) -> None:
    run_log.log({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])


def _end_run(run_log: RunLog, status: str) -> None:
    """Ends the run as `status` on the way out of an error or a signal, which stays the one reported."""
    try:
        run_log.end(status)
    except TrackingError as e:
        log.warning("the MLflow run could not be marked %s: %s", status, e)


def _write_outputs(run_log: RunLog | None, dataset: str, model_name: str, seed: int, checkpoint: dict,
                   history: list[dict]) -> None:
    """The stage's outputs (best checkpoint, curves), and the run's summary metrics."""
    if run_log:
        run_log.log({"best_epoch": checkpoint["best_epoch"], "train_seconds": checkpoint["train_seconds"]},
                    len(history))
        run_log.flush()  # a metric MLflow could not store fails the stage before its outputs exist
    with atomic_path(artifacts.checkpoint_file(dataset, model_name, seed)) as tmp:
        torch.save(checkpoint, tmp)
    artifacts.write_curves(dataset, model_name, seed, history)


def subset_splits(data: dict, cfg: TrainConfig, seed: int) -> dict:
    """The prepared splits with train and validation cut to cfg's stratified subsets, if any."""
    data = dict(data)
    for split, size in (("train", cfg.train_subset), ("val", cfg.val_subset)):
        if size is not None and size < len(data[f"{split}_y"]):
            keep = torch.from_numpy(stratified_subset(data[f"{split}_y"].numpy(), size, seed))
            data[f"{split}_x"], data[f"{split}_y"] = data[f"{split}_x"][keep], data[f"{split}_y"][keep]
    return data
