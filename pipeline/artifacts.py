"""The file contract between stages: where each one writes, how it writes (atomically), and how
the next one reads it back (prepared tensors, checkpoints, curves) with one error naming the file
and the command that rebuilds it.

Paths are relative to the repository root (DVC runs stages there). Every output is written to a
temp file and renamed, so a bad file was damaged afterwards (a full disk, a copy cut short, an
edit): torch's own error ("PytorchStreamReader failed ...") names neither the file nor the fix.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from pipeline.errors import DataError

T = TypeVar("T")
CURVE_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]


# --- where ------------------------------------------------------------------------------------

def raw_dir(dataset: str) -> Path:
    return Path("data") / dataset / "raw"


def prepared_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepared.pt"


def prepare_report_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepare_report.json"


def checkpoint_dir(dataset: str, model: str) -> Path:
    """One best checkpoint per seed of the model (the train stage's output)."""
    return Path("models") / dataset / model


def checkpoint_file(dataset: str, model: str, seed: int) -> Path:
    return checkpoint_dir(dataset, model) / f"seed{seed}.pt"


def curves_dir(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "curves" / model


def curves_file(dataset: str, model: str, seed: int) -> Path:
    return curves_dir(dataset, model) / f"seed{seed}.csv"


def metrics_file(dataset: str, model: str) -> Path:
    """Test metrics of the model: the mean over its seeds (and their spread)."""
    return Path("metrics") / dataset / f"{model}.json"


def seed_metrics_file(dataset: str, model: str) -> Path:
    """Test metrics of each seed's run, with its MLflow run id."""
    return Path("metrics") / dataset / "seeds" / f"{model}.json"


def predictions_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "predictions" / f"{model}.csv"


def reports_dir() -> Path:
    return Path("reports")


def per_class_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "per_class" / f"{model}.json"


def curve_points_file(dataset: str, kind: str, model: str) -> Path:
    """Points of a test-set curve (kind: roc or pr) for DVC plots."""
    return Path("metrics") / dataset / kind / f"{model}.csv"


def registry_file(dataset: str) -> Path:
    """What `pipeline register` registered for `dataset` (the register stage's output)."""
    return Path("metrics") / "registry" / f"{dataset}.json"


def train_command(dataset: str, model: str) -> str:
    return f"pipeline train --dataset {dataset} --model {model}"


def evaluate_command(dataset: str, model: str) -> str:
    return f"pipeline evaluate --dataset {dataset} --model {model}"


def load_prepared(dataset: str) -> dict:
    return load_torch(prepared_file(dataset), f"pipeline prepare --dataset {dataset}")


def load_checkpoint(dataset: str, model_name: str, seed: int) -> dict:
    return load_torch(checkpoint_file(dataset, model_name, seed), train_command(dataset, model_name))


def write_curves(dataset: str, model_name: str, seed: int, history: list[dict]) -> None:
    """One row per epoch (CURVE_FIELDS), rounded so that the file reads the same every run."""
    write_csv(curves_file(dataset, model_name, seed),
              [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in history],
              CURVE_FIELDS)


def read_curves(dataset: str, model_name: str, seed: int) -> list[dict]:
    path = curves_file(dataset, model_name, seed)

    def read() -> list[dict]:
        with path.open() as f:
            return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
                    for row in csv.DictReader(f)]

    return read_back(str(path), train_command(dataset, model_name), read)


# --- how: atomic writes ------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yields a temp path beside `target`; renamed onto it only if the block succeeds.

    The temp file has the target's own name inside a temp folder: torch.save records the file
    name in its archive, so the same content then gives the same bytes (and DVC hash) every run.
    """
    target = Path(target)
    made = _make_parents(target)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    tmp = folder / target.name
    try:
        yield tmp
        tmp.chmod(_default_mode(0o666))
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(made)
        _raise_if_disk_full(e, target)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yields an empty temp folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    made = _make_parents(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        tmp.chmod(_default_mode(0o777))  # mkdtemp makes it owner-only
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(made)
        _raise_if_disk_full(e, target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DiskFullError(DataError):
    """A write ran out of space: the message names the file and the filesystem; nothing partial is left."""


# Below this many free bytes after a failed write, the failure is taken to be the full disk: torch's
# writer reports ENOSPC as "basic_ios::clear: iostream error", without the errno.
DISK_FULL_MARGIN = 1 << 20


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a write that ran out of space."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "database or disk is full" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _raise_if_disk_full(error: BaseException, target: Path) -> None:
    if not isinstance(error, Exception):
        return
    try:
        free = shutil.disk_usage(_existing(target)).free
    except OSError:
        free = None
    if disk_full(error) or (free is not None and free < DISK_FULL_MARGIN and not isinstance(error, DataError)):
        raise DiskFullError(f"{target}: the disk is full (no space left on {_existing(target)}'s filesystem"
                            f"{'' if free is None else f', {free // 1024} KiB free'}); nothing was written. "
                            "Free some space, or move the workspace to a larger disk, and run it again") from None


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder that exists."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path(".")


def _make_parents(target: Path) -> list[Path]:
    """Creates target's missing parent folders; returns them, deepest first."""
    missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Undoes _make_parents after a failed write (an empty data/mnist/ would look like a
    download that half happened), keeping any folder something else has written to since."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _default_mode(mode: int) -> int:
    """`mode` under the process umask: what open() or mkdir() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_csv(target: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Rows as CSV with a header (`fields`, or the first row's keys), written atomically."""
    with atomic_path(target) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# --- reading back --------------------------------------------------------------------------------

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


def read_json(path: Path, rebuild: str, required: tuple[str, ...] = ()):
    """A JSON file a stage wrote (metrics, registry records); `required`: keys its record (each
    record of a list) must hold, so that a file an older stage wrote fails saying to rebuild it."""
    def load():
        data = json.loads(Path(path).read_text())
        for record in data if isinstance(data, list) else [data]:
            missing = [key for key in required if key not in record]
            if missing:
                raise ValueError(f"no {', '.join(missing)}: written by an older version of the pipeline")
        return data

    return read_back(str(path), rebuild, load)


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
