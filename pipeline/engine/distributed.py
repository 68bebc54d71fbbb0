"""Data-parallel training in several processes: torchrun + DistributedDataParallel.

`runtime.distributed.nproc: N` (N > 1) makes `pipeline train` re-run itself as

    torchrun --standalone --nproc_per_node N -m pipeline --params params.yaml train ...

so `pipeline train` stays the DVC command whatever N is. Our loop has no DataLoader: every rank
draws the same epoch permutation from the run's seeded generator and keeps every N-th index of it
(`shard`, DistributedSampler's rule), and takes batch_size / N images per step. Batch k of all
ranks together is then batch k of a one-process run, and DDP's gradient average is that batch's
mean-loss gradient: the same optimisation up to float rounding (tests/test_distributed.py). Two
exceptions: a training set that does not divide by N is padded with its first few indices, as
DistributedSampler pads; BatchNorm layers normalise over each rank's share of the batch.
Every rank validates on the whole validation split, and all take rank 0's figures, so they stop
early together; rank 0 alone writes files and logs to MLflow.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from pipeline.config import ConfigError, DistributedConfig, Params
from pipeline.engine.runtime import World, resolve_device

log = logging.getLogger(__name__)
NPROC_KEY = "runtime.distributed.nproc"


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def needs_launch(cfg: DistributedConfig) -> bool:
    """True in the `pipeline train` that must start the torchrun processes itself."""
    return cfg.nproc > 1 and not under_torchrun()


def check(params: Params) -> None:
    """ConfigError, before any process starts, for a multi-process run this machine cannot hold.
    (What the model's settings must be for it, pipeline.models.checks says when params are read.)"""
    cfg = params.runtime.distributed
    if cfg.nproc == 1:
        return
    device = resolve_device(params.runtime.device)
    if backend(cfg, device) == "nccl" and device.type != "cuda":
        raise ConfigError("runtime.distributed.backend: nccl needs CUDA GPUs and runtime.device "
                          "resolved to cpu; set backend: auto or gloo")
    if device.type == "cuda" and cfg.nproc > torch.cuda.device_count():
        raise ConfigError(f"{NPROC_KEY}: {cfg.nproc} processes but {torch.cuda.device_count()} CUDA "
                          f"devices (one process per GPU); set it to at most {torch.cuda.device_count()}")
    if under_torchrun() and int(os.environ["WORLD_SIZE"]) != cfg.nproc:
        raise ConfigError(f"{NPROC_KEY} is {cfg.nproc} but torchrun started {os.environ['WORLD_SIZE']} "
                          f"processes; set {NPROC_KEY}: {os.environ['WORLD_SIZE']} (it is recorded "
                          f"with the run) or let `pipeline train` start torchrun")


def backend(cfg: DistributedConfig, device: torch.device) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if device.type == "cuda" else "gloo"


def launch(params: Params, params_file: Path, dataset: str, model_name: str) -> int:
    """Runs this train stage under torchrun in runtime.distributed.nproc processes (checked
    first); returns torchrun's exit code."""
    check(params)
    nproc = params.runtime.distributed.nproc
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline", "--params", str(params_file), "train", "--dataset", dataset,
           "--model", model_name]
    log.info("%d processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


@contextlib.contextmanager
def session(cfg: DistributedConfig, device_name: str) -> Iterator[World]:
    """The process group of a torchrun worker for the block; a one-process World otherwise."""
    if not under_torchrun():
        if cfg.nproc > 1:
            raise ConfigError(f"{NPROC_KEY}: {cfg.nproc} processes are started by `pipeline train` "
                              f"(through torchrun) or by torchrun itself; set {NPROC_KEY}: 1 to "
                              f"train in this process")
        yield World()
        return
    env = {k: int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    world = World(env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"])
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)  # before NCCL binds this process to a GPU
    dist.init_process_group(backend(cfg, device))
    if not world.is_main:
        # One copy of the run's log, from rank 0; other ranks still report warnings and errors.
        logging.getLogger("pipeline").setLevel(logging.WARNING)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of an epoch's permutation, as DistributedSampler deals it: padded with
    its first indices to a multiple of the world size, then every world.size-th index."""
    if world.size == 1:
        return order
    pad = -len(order) % world.size
    return torch.cat([order, order[:pad]])[world.rank::world.size]


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP around `model` in a multi-process run, `model` itself otherwise.

    DDP registers the parameters that require gradients when it is built, so a transfer-learning
    model is wrapped again whenever its trainable part changes.
    """
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(world: World, *values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (unchanged in a one-process run)."""
    if world.size == 1:
        return list(values)
    stacked = torch.stack([v.to(torch.float64) for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def gather(obj, world: World) -> list:
    """`obj` of every rank, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def from_main(world: World, *values):
    """Rank 0's values on every rank, so every rank takes the same decisions (early stopping)."""
    return list(values) if world.size == 1 else gather(values, world)[0]
