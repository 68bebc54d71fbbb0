"""One registry of every model, found by name (timm's register_model / create_model habit)."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from pipeline.data.datasets import get_dataset, registered
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Reported:
    """The figure a source reports for a model (SPEC.md, "Reported results")."""
    accuracy: float
    source: str
    dataset: str = "mnist"  # every figure the sources give is on MNIST's test set
    loss: float | None = None
    qualifier: str = ""  # "about" or "above" when the source gives no exact figure
    note: str = ""  # how the source got it, in a few words

    def text(self) -> str:
        """E.g. "98.90%, loss 0.0409 (lab-A)" or "about 99% (course)"."""
        figure = f"{self.qualifier} {100 * self.accuracy:.0f}%" if self.qualifier else f"{100 * self.accuracy:.2f}%"
        parts = [figure] + ([f"loss {self.loss:.4f}"] if self.loss is not None else []) + [self.note] * bool(self.note)
        return ", ".join(parts) + f" ({self.source})"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # The datasets it is made for (the first is its home, whose input the defaults follow); it
    # trains on any image folder too (`accepts`).
    datasets: tuple[str, ...]
    builder: Callable[..., nn.Module]
    input_size: int  # side of the square image the builder's layers expect (its default)
    source: str  # SPEC.md source: lab-A..lab-D or course
    # "torch": the builder returns an nn.Module; "numpy": a model with its own NumPy maths and
    # SGD (pipeline.engine.learners picks how to train it).
    framework: str = "torch"
    # Channels the model reads when not the dataset's (ImageNet models: 3, gray replicated).
    in_channels: int | None = None
    # MNIST reaches a larger side by zero padding (LeNet-5, as LeCun et al.) unless this is set:
    # then it is resized (bilinear), as the deep models read MNIST at 32 or 224.
    resize: bool = False
    # What the sources' comparisons group it with: linear, mlp, small (CNNs of a few layers),
    # deep (VGG/ResNet-sized), transfer (an ImageNet backbone), numpy.
    family: str = "small"
    reported: Reported | None = None
    # Transfer learning (course): which part trains when. feature: the new head only; finetune:
    # everything from the start; progressive: the head for `head_epochs`, then everything at
    # `unfrozen_lr`. None: a model trained whole from scratch.
    strategy: str | None = None

    @property
    def dataset(self) -> str:
        return self.datasets[0]

    def accepts(self, dataset: str) -> bool:
        """Whether it can train on `dataset`: one it names, or any dataset whose images are
        resized to the model's side (an image folder: every torch model reads it)."""
        return dataset in self.datasets or (self.framework == "torch" and not get_dataset(dataset).pads)

    @property
    def accepts_pretrained(self) -> bool:
        """Whether the builder can load pretrained (ImageNet) weights."""
        return "pretrained" in inspect.signature(self.builder).parameters

    @property
    def flexible_input(self) -> bool:
        """Whether the builder takes `input_size` (its layers adapt to the side)."""
        return "input_size" in inspect.signature(self.builder).parameters

    def build(self, in_channels: int | None = None, num_classes: int | None = None,
              dataset: str | None = None, **kwargs):
        record = get_dataset(dataset or self.dataset)
        return self.builder(
            in_channels=in_channels or self.in_channels or record.in_channels,
            num_classes=num_classes or record.num_classes,
            **kwargs,
        )


_REGISTRY: dict[str, ModelSpec] = {}


STRATEGIES = (None, "feature", "finetune", "progressive")


def register_model(*, dataset: str | tuple[str, ...], input_size: int, source: str,
                   framework: str = "torch", in_channels: int | None = None, resize: bool = False,
                   family: str = "small", reported: Reported | None = None, strategy: str | None = None,
                   name: str | None = None):
    """Decorator: registers a builder `fn(in_channels, num_classes) -> model` under its name (or
    `name`, so that one builder can serve several entries, e.g. three ways to train ResNet-18).

    `dataset`: one dataset or several (the first is the home whose input the defaults follow).
    """
    datasets = (dataset,) if isinstance(dataset, str) else tuple(dataset)
    for d in datasets:
        if d not in registered():
            raise ValueError(f"unknown dataset {d!r}; known: {sorted(registered())}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown transfer strategy {strategy!r}; known: {STRATEGIES}")

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelSpec(key, datasets, fn, input_size, source, framework, in_channels,
                                   resize, family, reported, strategy)
        return fn

    return wrap


class UnknownModelError(PipelineError, ValueError):
    pass


# The family modules, in the listing's order (whichever a caller imported first).
FAMILIES = ("classic", "transfer", "deep", "lenet", "numpy_cnn")


def list_models(dataset: str | None = None) -> list[str]:
    _load_families()
    ordered = sorted(_REGISTRY.values(), key=lambda s: FAMILIES.index(s.builder.__module__.rpartition(".")[2]))
    return [s.name for s in ordered if dataset is None or dataset in s.datasets]


def get_model_spec(name: str) -> ModelSpec:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Valid models: {', '.join(_REGISTRY)}"
        ) from None


def create_model(name: str, **kwargs):
    return get_model_spec(name).build(**kwargs)


def count_params(model) -> int:
    if isinstance(model, nn.Module):
        return sum(p.numel() for p in model.parameters())
    return model.num_params()  # a NumPy model counts its own arrays


def _load_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from pipeline.models import classic, deep, lenet, numpy_cnn, transfer  # noqa: F401
