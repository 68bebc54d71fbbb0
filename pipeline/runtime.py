"""Device, threads and seeds: the settings that make a run fast and repeatable."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from pipeline.config import RuntimeConfig


def setup(cfg: RuntimeConfig) -> torch.device:
    """Seeds every RNG, sets CPU threads and returns the device to train on."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Same params, same machine -> identical metrics. CPU kernels are deterministic already;
        # this makes any nondeterministic op an error instead of a silent difference.
        torch.use_deterministic_algorithms(True)
    return device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)
