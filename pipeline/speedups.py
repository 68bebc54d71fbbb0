"""The pipeline's speed tricks, each with what it saved when measured (BENCHMARKS.md, "Pipeline
overhead" and "The report stage"; a 2-core AMD EPYC). Call sites stay one plain call; a trick
that stops paying for itself is removed here and nowhere else.

- `exit_now`: a stage ends with os._exit once its outputs are written, skipping the
  interpreter's teardown of torch's, matplotlib's and mlflow's modules: 0.2-0.6 s per train
  stage, 0.6-1.4 s per evaluate stage, 0.75 s for the MLflow child the stage waits for
  (bench/pipeline_overhead.py startup).
- `keep_freed_memory`: glibc's mallopt keeps freed buffers up to 32 MiB in the heap: a 3-epoch
  keras_cnn2 run fell from 10-14.7 million page faults and 12.5-14 s per epoch to 1.1 million
  and 6.5-7.9 s; peak memory +3% there, up to +19% for a two-seed stage.
- `deterministic_algorithms`: ATen's deterministic flag set without importing torch._inductor:
  1.5-1.7 s less start-up per stage, and 150-400 MiB lower peaks.
- `fork_map`: the report draws its model sections in forked workers, one per core: 41.2 s
  against 23.7 s for 18 models on 2 cores (bench/report_sections.py), the same bytes written.

torch is imported inside deterministic_algorithms only: `pipeline download` exits through
exit_now and imports no torch.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor


def exit_now(code: int) -> None:
    """Exits without the interpreter's teardown; every output must be written and closed by then
    (atomic renames; each MLflow call has committed)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# glibc's mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> None:
    """Makes glibc's malloc keep the memory a training step frees, for the next step to reuse.

    By default each buffer over 128 KiB (a CNN's activations and gradients, e.g. 11 MB for
    keras_cnn2 at batch 128) is a fresh mmap, returned to the kernel when freed, so every step
    zero-fills new pages; glibc raises that threshold by itself only as large buffers get freed,
    so how much a run paid depended on its history. Not glibc (macOS, musl): nothing to do.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True) without its import of torch._inductor.

    The public call also sets the flag of torch.compile's inductor; the pipeline never compiles,
    so ATen's flag is all it needs. Where torch lacks the private setter, or inductor is imported
    anyway, the public call does the job.
    """
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True)
    else:
        setter(True)


def fork_map(fn: Callable, items: Sequence, workers: int, initializer: Callable[[], None] | None = None) -> list:
    """[fn(item) for item in items] in `workers` forked processes, in order. `fn` and the items
    reach the workers by the fork itself (nothing large is pickled on the way in); only results
    come back pickled. Ctrl-C or a failure lets the calls under way finish and starts no other."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(fn, items, initializer))
    try:
        return list(pool.map(_call, range(len(items))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# A worker's own copy of fork_map's arguments; set in the worker only, never in the caller.
_WORK: tuple[Callable, Sequence] | None = None


def _start_worker(fn: Callable, items: Sequence, initializer: Callable[[], None] | None) -> None:
    global _WORK
    _WORK = fn, items
    if initializer is not None:
        initializer()


def _call(k: int):
    fn, items = _WORK
    return fn(items[k])
