"""Writes that never leave a file looking complete when it is not: temp file, then rename."""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


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
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(made)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(made)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
