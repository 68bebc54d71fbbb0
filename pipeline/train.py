"""Stage `train`: one model, one MLflow run, the best checkpoint.

    pipeline train --dataset mnist --model lenet5
    # writes models/mnist/lenet5.pt and metrics/mnist/curves/lenet5.csv

One loop for every model of the registry (torch modules and the NumPy CNN, through
`pipeline.learners`). Early stopping watches validation accuracy; the test set is
never read here.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import time

import torch

from pipeline import paths, runtime, tracking
from pipeline.atomic import atomic_path, write_csv
from pipeline.config import Params, TrainConfig
from pipeline.data.split import stratified_subset
from pipeline.inference import loss_and_accuracy
from pipeline.learners import build_learner
from pipeline.models import get_model_spec
from pipeline.prepare import load_prepared

log = logging.getLogger(__name__)
CURVE_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]


def main(params: Params, dataset: str, model_name: str) -> dict:
    cfg = params.train_config(dataset, model_name)
    device = runtime.setup(params.runtime)
    spec = get_model_spec(model_name)
    learner = build_learner(model_name, dataset, cfg, device, params.runtime.seed, params.runtime.cuda)
    data = subset_splits(load_prepared(dataset), cfg, params.runtime.seed)
    generator = torch.Generator().manual_seed(params.runtime.seed)

    run_params = {**dataclasses.asdict(cfg), "seed": params.runtime.seed, "device": device.type,
                  "threads": torch.get_num_threads(), "params": learner.num_params,
                  "input_size": cfg.input_size or spec.input_size, "source": spec.source,
                  "framework": spec.framework, "cuda": dataclasses.asdict(params.runtime.cuda),
                  "train_size": len(data["train_y"]), "val_size": len(data["val_y"])}
    run_id = tracking.start_training_run(dataset, model_name, run_params,
                                         {"data_version": data["data_version"]})
    log.info("%s/%s: %d params on %s, MLflow run %s", dataset, model_name,
             run_params["params"], device, run_id)
    history: list[dict] = []
    best = {"val_accuracy": -1.0, "epoch": 0, "state": None}
    start = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            learner.begin_epoch(epoch)
            train_loss, train_acc = learner.train_epoch(
                data["train_x"], data["train_y"], generator, desc=f"{model_name} epoch {epoch}/{cfg.epochs}")
            val_logits = learner.logits(data["val_x"], params.runtime.eval_batch_size)
            val_loss, val_acc = loss_and_accuracy(val_logits, data["val_y"])
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
            history.append(row)
            tracking.log_epoch({k: v for k, v in row.items() if k != "epoch"}, epoch)
            log.info("%s epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
                     model_name, epoch, train_loss, train_acc, val_loss, val_acc, row["seconds"])
            if val_acc > best["val_accuracy"]:
                best = {"val_accuracy": val_acc, "epoch": epoch, "state": learner.state_dict()}
            elif cfg.patience and epoch - best["epoch"] >= cfg.patience:
                log.info("%s: early stop, no val improvement for %d epochs", model_name, cfg.patience)
                break
        train_seconds = time.perf_counter() - start
        learner.load_state_dict(best["state"])  # restore the best weights
        checkpoint = {
            "model": model_name, "dataset": dataset, "state_dict": best["state"],
            "best_epoch": best["epoch"], "epochs_run": len(history), "train_seconds": train_seconds,
            "best_val_accuracy": best["val_accuracy"], "mlflow_run_id": run_id,
            "data_version": data["data_version"],
        }
        tracking.log_epoch({"best_epoch": best["epoch"], "train_seconds": train_seconds}, len(history))
        with atomic_path(paths.checkpoint_file(dataset, model_name)) as tmp:
            torch.save(checkpoint, tmp)
        write_csv(paths.curves_file(dataset, model_name),
                  [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in history],
                  CURVE_FIELDS)
    except BaseException:
        tracking.end_run("FAILED")
        raise
    tracking.end_run()
    log.info("%s: best epoch %d (val acc %.4f), %.1fs", model_name, best["epoch"],
             best["val_accuracy"], train_seconds)
    return checkpoint


def subset_splits(data: dict, cfg: TrainConfig, seed: int) -> dict:
    """The prepared splits with train and validation cut to cfg's stratified subsets, if any."""
    data = dict(data)
    for split, size in (("train", cfg.train_subset), ("val", cfg.val_subset)):
        if size is not None and size < len(data[f"{split}_y"]):
            keep = torch.from_numpy(stratified_subset(data[f"{split}_y"].numpy(), size, seed))
            data[f"{split}_x"], data[f"{split}_y"] = data[f"{split}_x"][keep], data[f"{split}_y"][keep]
    return data


def read_curves(dataset: str, model_name: str) -> list[dict]:
    with paths.curves_file(dataset, model_name).open() as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]
