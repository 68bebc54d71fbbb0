"""Per-layer output shapes and parameter counts of a torch model, for the report's tables."""
from __future__ import annotations

import torch
from torch import nn


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per top-level child (a Sequential's layers; ResNet's conv1 .. layer4, fc).

    `input_shape` and each row's `output_shape` leave out the batch. A row's `params` counts
    the child's parameters, its submodules' included, so the rows sum to count_params(model)
    (plus any parameter the root holds itself, which gets a row of its own). A child called
    twice in forward shows its last output; one never called shows None.
    """
    children = list(model.named_children()) or [(type(model).__name__, model)]
    shapes: dict[str, tuple[int, ...] | None] = {name: None for name, _ in children}

    def record(name):
        def hook(module, inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            shapes[name] = tuple(tensor.shape[1:])
        return hook

    handles = [child.register_forward_hook(record(name)) for name, child in children]
    first = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=first.device if first is not None else None,
                    dtype=first.dtype if first is not None else None)
    was_training = model.training
    model.eval()  # BatchNorm with a batch of one, and Dropout, need eval mode
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    rows = [{"name": name, "type": type(child).__name__, "output_shape": shapes[name],
             "params": sum(p.numel() for p in child.parameters())} for name, child in children]
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own and list(model.named_children()):
        rows.append({"name": "(own)", "type": type(model).__name__, "output_shape": None,
                     "params": own})
    return rows


def format_layer_table(rows: list[dict]) -> str:
    """A Markdown table: name | type | output shape | params, with a total row."""
    lines = ["| name | type | output shape | params |", "|---|---|---|---:|"]
    for r in rows:
        shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] is not None else ""
        lines.append(f"| {r['name']} | {r['type']} | {shape} | {r['params']:,} |")
    lines.append(f"| **total** | | | **{sum(r['params'] for r in rows):,}** |")
    return "\n".join(lines)
