"""The learner of a NumPy model (lab-D's CNN): the same interface as TorchLearner, no torch in the maths."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.config import TrainConfig
from pipeline.models.registry import ModelSpec


class NumpyLearner:
    """lab-D's NumPy CNN: plain SGD on raw uint8 images scaled to [0, 1], no torch in the maths."""

    def __init__(self, spec: ModelSpec, dataset: str, cfg: TrainConfig, seed: int) -> None:
        self.cfg = cfg
        self.model = spec.build(seed=seed)
        self.recipe = {"architecture": spec.name, "build": {"dataset": dataset}}  # the served model's
        self.num_params = self.model.num_params()
        # One stream for the whole run, so each epoch gets its own permutation.
        self.rng = np.random.default_rng(seed)

    @property
    def evaluated(self):
        return self.model

    def begin_epoch(self, epoch: int) -> None:
        pass

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    desc: str) -> tuple[float, float]:
        return self.model.train_epoch(images.numpy(), labels.numpy(), self.cfg.lr,
                                      self.cfg.batch_size, self.rng)

    def prepare_training(self) -> None:
        """Nothing to build ahead of the first step (TorchLearner builds its optimizer)."""

    def logits(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        x = images.numpy()
        return torch.from_numpy(np.concatenate([
            self.model.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)
        ]).astype(np.float32))

    def state_dict(self) -> dict[str, torch.Tensor]:
        # As tensors, so the checkpoint loads with torch.load(weights_only=True) like the others.
        return {k: torch.from_numpy(v) for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k: v.numpy() for k, v in state.items()})

    def training_state(self) -> dict:
        # The bit generator's state is a dict of str and int: it loads with weights_only=True.
        return {"model": self.state_dict(), "rng": self.rng.bit_generator.state}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.rng.bit_generator.state = state["rng"]

    def example_input(self, images: torch.Tensor) -> np.ndarray:
        return images.numpy()

    def served_model(self):
        return self.model
