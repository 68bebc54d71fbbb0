"""One line naming the machine a benchmark ran on, printed by every script in bench/."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}")
