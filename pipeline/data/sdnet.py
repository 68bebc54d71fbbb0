"""Crack photos from another source than Özgenel's METU walls: 100 cracked and 100 uncracked
256x256 bridge-deck photos of SDNET2018 (Maguire, Dorafshan & Thomas 2018, Utah State University,
CC BY 4.0): another concrete, another camera, another scale, finer cracks.

The images live outside the repository (a folder such as ../shared/data/sdnet2018, named by
`evaluate.crack.other_source` or PIPELINE_CRACK_OTHER_SOURCE); what they must be is committed:
pipeline/data/sdnet2018/SHA256SUMS lists each file's path and sha256 (PROVENANCE.md beside it
says where they come from and how they were chosen). Every file is checked before any is
decoded, so a score always means these 200 photos.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from pipeline.data.images import decode_image
from pipeline.errors import DataError

log = logging.getLogger(__name__)

# Committed with the code and read beside it, as the report's templates are: the same manifest
# whatever folder a stage or a test runs in.
MANIFEST = Path(__file__).resolve().parent / "sdnet2018" / "SHA256SUMS"
# SDNET2018's folders for decks: CD cracked, UD uncracked; as crack's labels (1: crack).
LABELS = {"UD": 0, "CD": 1}


def load(folder: str | None, side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The 200 photos as grayscale uint8 [N, side, side] (decoded as the crack photos are) and their
    labels; None when no folder of them is named."""
    if folder is None:
        return None
    files = verified_files(Path(folder))
    images = np.stack([decode_image(data, side) for _, data in files])
    labels = np.array([LABELS[name.split("/")[0]] for name, _ in files], dtype=np.int64)
    return images, labels


def manifest() -> dict[str, str]:
    """path (e.g. "CD/7001-2.jpg") -> sha256, from the committed SHA256SUMS."""
    if not MANIFEST.is_file():
        raise DataError(f"{MANIFEST} is missing: it is part of the repository (git checkout it)")
    listed = {}
    for number, line in enumerate(MANIFEST.read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or name.split("/")[0] not in LABELS:
            raise DataError(f"{MANIFEST}, line {number}: expected '<sha256>  CD|UD/<file>', got {line!r}")
        listed[name] = digest
    return listed


def verified_files(folder: Path) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file the manifest lists, in its order, each checked against its sha256;
    a missing, changed or extra image fails naming it."""
    listed = manifest()
    where = ("evaluate.crack.other_source in params.yaml (or PIPELINE_CRACK_OTHER_SOURCE): a folder "
             "holding SDNET2018's CD/ and UD/ images listed in " + str(MANIFEST))
    if not all((folder / cls).is_dir() for cls in LABELS):
        raise DataError(f"{folder}: no CD/ and UD/ folders; point {where}")
    extra = sorted(f"{p.parent.name}/{p.name}" for cls in LABELS for p in (folder / cls).iterdir()
                   if f"{cls}/{p.name}" not in listed)
    if extra:
        raise DataError(f"{folder}: {len(extra)} file(s) not listed in {MANIFEST}, e.g. {extra[0]}; "
                        "the other-source set is exactly the listed files")
    files = []
    for name, digest in listed.items():
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror or e}); point {where}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not {digest} listed in "
                            f"{MANIFEST}: a damaged or different file; copy it again from the source "
                            "named in PROVENANCE.md")
        files.append((name, data))
    return files
