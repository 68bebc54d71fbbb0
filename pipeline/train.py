"""Stage `train`: one model, one MLflow run, the best checkpoint.

    pipeline train --dataset mnist --model lenet5
    # writes models/mnist/lenet5.pt and metrics/mnist/curves/lenet5.csv

One loop for every torch model. Early stopping watches validation accuracy; the test set is
never read here.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

from pipeline import paths, runtime, tracking
from pipeline.atomic import atomic_path
from pipeline.config import Params, TrainConfig
from pipeline.data.presets import InputPreset
from pipeline.inference import loss_and_accuracy, predict_logits
from pipeline.models import count_params, get_model_spec
from pipeline.prepare import load_prepared

log = logging.getLogger(__name__)
CURVE_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_one_epoch(model, optimizer, loss_fn, images, labels, preset, cfg, device, generator, desc):
    """One pass over the shuffled training tensors; returns (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    batches = range(0, len(order), cfg.batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", leave=False, file=sys.stderr,
                      mininterval=1.0 if sys.stderr.isatty() else 30.0):
        idx = order[start:start + cfg.batch_size]
        x = preset(images[idx]).to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulated on the device: no per-batch sync with .item().
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    n = len(order)
    return total_loss.item() / n, correct.item() / n


def main(params: Params, dataset: str, model_name: str) -> dict:
    cfg = params.train_config(dataset, model_name)
    device = runtime.setup(params.runtime)
    data = load_prepared(dataset)
    spec = get_model_spec(model_name)
    model = spec.build().to(device)
    preset = InputPreset(dataset, spec.input_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(params.runtime.seed)

    run_params = {**dataclasses.asdict(cfg), "seed": params.runtime.seed, "device": device.type,
                  "threads": torch.get_num_threads(), "params": count_params(model),
                  "input_size": spec.input_size, "source": spec.source,
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
            train_loss, train_acc = train_one_epoch(
                model, optimizer, loss_fn, data["train_x"], data["train_y"], preset, cfg, device,
                generator, desc=f"{model_name} epoch {epoch}/{cfg.epochs}")
            val_logits = predict_logits(model, data["val_x"], preset, params.runtime.eval_batch_size, device)
            val_loss, val_acc = loss_and_accuracy(val_logits, data["val_y"])
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
            history.append(row)
            tracking.log_epoch({k: v for k, v in row.items() if k != "epoch"}, epoch)
            log.info("%s epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
                     model_name, epoch, train_loss, train_acc, val_loss, val_acc, row["seconds"])
            if val_acc > best["val_accuracy"]:
                best = {"val_accuracy": val_acc, "epoch": epoch,
                        "state": copy.deepcopy(model.state_dict())}
            elif cfg.patience and epoch - best["epoch"] >= cfg.patience:
                log.info("%s: early stop, no val improvement for %d epochs", model_name, cfg.patience)
                break
        train_seconds = time.perf_counter() - start
        model.load_state_dict(best["state"])  # restore the best weights
        checkpoint = {
            "model": model_name, "dataset": dataset, "state_dict": model.state_dict(),
            "best_epoch": best["epoch"], "epochs_run": len(history), "train_seconds": train_seconds,
            "best_val_accuracy": best["val_accuracy"], "mlflow_run_id": run_id,
            "data_version": data["data_version"],
        }
        tracking.log_epoch({"best_epoch": best["epoch"], "train_seconds": train_seconds}, len(history))
        with atomic_path(paths.checkpoint_file(dataset, model_name)) as tmp:
            torch.save(checkpoint, tmp)
        with atomic_path(paths.curves_file(dataset, model_name)) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, CURVE_FIELDS)
            writer.writeheader()
            writer.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}
                             for r in history)
    except BaseException:
        tracking.end_run("FAILED")
        raise
    tracking.end_run()
    log.info("%s: best epoch %d (val acc %.4f), %.1fs", model_name, best["epoch"],
             best["val_accuracy"], train_seconds)
    return checkpoint


def read_curves(dataset: str, model_name: str) -> list[dict]:
    with paths.curves_file(dataset, model_name).open() as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]
