"""What a model costs to run: FLOPs per image and inference latency, measured on this machine.

FLOPs are counted by torch's own FlopCounterMode on a real forward pass (a multiply-add counts
as 2), so they follow the model that was built, not a formula. They are counted by the train
stage and kept in the checkpoint: the counter imports torch._dynamo (1.6 s), which training has
imported anyway (torch's Adam needs it) and evaluation otherwise never would (BENCHMARKS.md,
"Stage overheads"). Latency is wall time per image of
`learner.logits` (the same batched path evaluation uses) at batch 1 and at batch 256, the median
of a few repeats after a warm-up run; at the evaluation's own batch size, the median over the full
batches of the pass that scores the test set (`timed_logits`), instead of a second pass over
images already scored.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

LATENCY_BATCHES = (1, 256)


def flops_per_image(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one image of `input_shape` (channels, height, width)."""
    first = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def latency_ms(learner, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Median milliseconds per image to classify `batch_size` of `images` (uint8, stored form)."""
    batch = images[:batch_size]
    learner.logits(batch, batch_size)  # warm-up: first-call allocations, lazy inits, cuDNN tuning
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        learner.logits(batch, batch_size)  # returns on the CPU, so the device work is done
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / len(batch)


def timed_logits(learner, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float | None]:
    """`learner.logits(images, batch_size)`, batch by batch, and the median milliseconds per image
    of its full batches (its first, which pays the first call's set-up, left out); None with
    fewer than 3 full batches to take the median of."""
    out, times = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        t0 = time.perf_counter()
        out.append(learner.logits(batch, batch_size))  # on the CPU when it returns: the device is done
        if len(batch) == batch_size and start:
            times.append(time.perf_counter() - t0)
    latency = 1000 * statistics.median(times) / batch_size if len(times) >= 3 else None
    return torch.cat(out), latency


def learner_flops(learner) -> int:
    """Forward FLOPs per image of the learner's network, at the input it was built for."""
    model = learner.evaluated
    if isinstance(model, torch.nn.Module):
        return flops_per_image(model, learner.input_shape)
    return model.flops_per_image()  # the NumPy CNN counts its own


def cost_metrics(learner, images: torch.Tensor, flops: int | None = None,
                 measured: dict[int, float | None] | None = None) -> dict:
    """flops_per_image (`flops`: the train stage's count; None counts them here) and
    latency_ms_batch{1,256} for the report; `measured`: latencies already taken (timed_logits),
    by batch size."""
    out = {"flops_per_image": flops if flops is not None else learner_flops(learner)}
    for batch in LATENCY_BATCHES:
        if (measured or {}).get(batch) is not None:
            out[f"latency_ms_batch{batch}"] = round(measured[batch], 4)
            continue
        # Enough repeats for a stable median, bounded for the slow deep models on a CPU.
        out[f"latency_ms_batch{batch}"] = round(latency_ms(learner, images, batch, 20 if batch == 1 else 3), 4)
    return out
