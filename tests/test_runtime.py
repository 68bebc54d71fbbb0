"""Process-wide settings of pipeline.engine.runtime and pipeline.speedups, each checked in a fresh
Python process."""
from __future__ import annotations

import subprocess
import sys

PAGE = 4096


def _python(code: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout


def test_cpu_determinism_is_on_without_importing_inductor():
    code = ("import sys, torch; from pipeline.engine import runtime; from pipeline.config import RuntimeConfig; "
            "runtime.setup(RuntimeConfig(device='cpu'), 0); "
            "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)")
    assert _python(code).split() == ["True", "False"]


STEP_FAULTS = """
import ctypes, resource, sys, torch
from pipeline import speedups
from pipeline.engine import runtime  # what a stage has imported when runtime.setup calls it: the heap
# a bare interpreter starts from faults more pages in (3 steps' worth in some runs)
if sys.argv[1] == "keep":
    speedups.keep_freed_memory()
else:  # glibc's starting point, 128 KiB, held there: left alone, glibc moves it as buffers are
    # freed, and a fresh process faults every step or only some, from run to run
    ctypes.CDLL(None).mallopt(speedups.M_MMAP_THRESHOLD, 128 << 10)
def step():  # a training step's pattern: large buffers alive together, then all freed
    buffers = [torch.ones(11 << 20, dtype=torch.uint8) for _ in range(4)]
    del buffers
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_the_memory_a_step_frees_is_reused_without_page_faults():
    pages = 4 * (11 << 20) // PAGE  # one step's buffers
    default, kept = int(_python(STEP_FAULTS, "default")), int(_python(STEP_FAULTS, "keep"))
    # Measured: buffers mapped and unmapped each step fault every page in again (224,644 faults
    # over 20 steps; glibc left alone did so in some runs and faulted 22,509 times in others);
    # kept, at most one step's worth (11,264).
    assert default > 15 * pages
    assert kept <= 2 * pages
