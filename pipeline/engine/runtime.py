"""Device, threads and seeds: the settings that make a run fast and repeatable."""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import RuntimeConfig
from pipeline.speedups import deterministic_algorithms, keep_freed_memory


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (torchrun's RANK, WORLD_SIZE, ...).

    The default is a single-process run; `pipeline.engine.distributed.start` makes the others.
    """
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine, which share its cores

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(cfg: RuntimeConfig, seed: int, world: World = World()) -> torch.device:
    """Seeds every RNG with `seed`, sets CPU threads and returns the device to train on."""
    random.seed(seed)
    np.random.seed(seed)
    keep_freed_memory()
    # Ranks get different dropout and augmentation draws (identical ones would correlate the
    # shards); initial weights still match, as DDP copies rank 0's, whose stream is `seed`.
    torch.manual_seed(seed + world.rank)
    # 0 threads = the machine's cores, shared out among the processes of a multi-process run.
    torch.set_num_threads(cfg.threads or max(1, usable_cores() // world.local_size))
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Same params, same machine -> identical metrics. CPU kernels are deterministic already;
        # this makes any nondeterministic op an error instead of a silent difference.
        deterministic_algorithms()
    else:
        torch.backends.cudnn.benchmark = cfg.cuda.cudnn_benchmark
        if world.size > 1:  # one GPU per process
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
    return device


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    os.cpu_count() counts the host's: a container limited to 2 CPUs on a 64-core host would start
    64 threads that take turns on 2 (torch's own default counts the same way)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity holds
    return cores


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


@dataclass(frozen=True)
class Accel:
    """How batches and models meet the device. The train and evaluate loops call these methods
    on every device; on a CPU each switch is off, so the CPU runs the very same code.
    """
    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: full float32
    channels_last: bool = False
    pin_memory: bool = False
    non_blocking: bool = False

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # float16 needs loss scaling against underflowing gradients; bfloat16 has float32's range.
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        if self.pin_memory:
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=self.non_blocking)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def accelerator(device: torch.device, cfg: RuntimeConfig | None = None) -> Accel:
    """The speed-ups `cfg` switches on, for `device`: channels-last on any device, the
    runtime.cuda ones on CUDA only. None: plain float32, contiguous (NCHW), synchronous."""
    if cfg is None:
        return Accel(device)
    if device.type != "cuda":
        return Accel(device, channels_last=cfg.channels_last)
    cuda = cfg.cuda
    amp = None
    if cuda.amp:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Accel(device, amp, cfg.channels_last, cuda.pin_memory, cuda.non_blocking)
