"""Reading back what one stage wrote for another (prepared tensors, checkpoints, resume files,
MLflow models): one way in, and one error naming the file and the command that rebuilds it.

Every such file is written atomically (pipeline.atomic), so a bad one was damaged afterwards (a
full disk, a copy cut short, an edit): torch's own error ("PytorchStreamReader failed ...")
names neither the file nor the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from pipeline.data.errors import DataError

T = TypeVar("T")


class ArtifactError(DataError):
    """A file the pipeline wrote cannot be read back; the message names it and its rebuild."""


def read_back(what: str, rebuild: str, load: Callable[[], T]) -> T:
    """`load()`, with a missing or unreadable `what` told as FileNotFoundError or ArtifactError
    saying to run `rebuild`."""
    try:
        return load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: run `{rebuild}` first") from None
    except Exception as e:  # noqa: BLE001 - whatever the reader's failure, the file is unusable
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ArtifactError(f"{what} cannot be read (damaged or incomplete: {type(e).__name__}: {first}). "
                            f"Rebuild it with `{rebuild}`") from None


def load_torch(path: Path, rebuild: str) -> dict:
    """A torch.save'd dict of tensors and plain values (weights_only: no code runs on load)."""
    path = Path(path)

    def load() -> dict:
        import torch

        if not path.is_file():
            raise FileNotFoundError(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not the dict the pipeline writes")
        return state

    return read_back(str(path), rebuild, load)
