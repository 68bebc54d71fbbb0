"""Surface cracks: fetch the Positive/ and Negative/ JPEGs, decode them into grayscale uint8 tensors.

Sources (download.crack in params.yaml): the Kaggle dataset through the kaggle client, or a local
copy, i.e. a folder or a .zip holding Positive/ and Negative/ at its top or one folder down (the
Kaggle archive and hand-made zips differ on that). Only the files directly in those two folders
count; hidden files (.DS_Store, ._*) are left out.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.data.errors import DataError
from pipeline.data.kaggle_download import download_dataset

# Label = index: 0 no crack, 1 crack (lab-C: label 1 = Positive).
CLASSES = ("Negative", "Positive")

SOURCE_HELP = (
    "Expected a folder, or a .zip of one, holding Positive/ (cracks) and Negative/ (no cracks) "
    "with the images directly inside, at its top or one folder down, e.g. ../shared/data/crack. "
    "Fix download.crack.source in params.yaml or PIPELINE_CRACK_SOURCE (a path or file:// URL), "
    "or set it to null to download from Kaggle."
)
OFFLINE_HELP = (
    "To use a local copy instead (offline), set download.crack.source in params.yaml or the "
    "PIPELINE_CRACK_SOURCE environment variable to a folder holding Positive/ and Negative/ "
    "(e.g. ../shared/data/crack) or to a .zip of that layout."
)

log = logging.getLogger(__name__)


def fetch(dest: Path, source: str | None, kaggle_dataset: str) -> dict[str, int]:
    """Puts the images in dest/Positive and dest/Negative (names kept); returns the count per class."""
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch.") as work:
        work = Path(work)
        if source is None:
            archive = download_dataset(kaggle_dataset, work, offline_help=OFFLINE_HELP)
            base = _extract_and_locate(archive, work / "unzipped", f"Kaggle dataset {kaggle_dataset}")
            return _collect(base, dest, move=True)
        path = _source_path(source)
        if path.is_dir():
            return _collect(_locate(path, f"crack source {source}"), dest, move=False)
        if path.is_file():
            return _collect(_extract_and_locate(path, work / "unzipped", f"crack source {source}"), dest, move=True)
        raise DataError(f"crack source {source}: no such folder or file. {SOURCE_HELP}")


def safe_extract(zip_path: Path, target: Path) -> None:
    """Extracts `zip_path` into `target`, refusing the whole archive if any member would land
    outside `target` (absolute path, `..`, symbolic link); every member is checked before writing."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: not a readable .zip archive ({e}). {SOURCE_HELP}") from None
    with archive:
        root = Path(target).resolve()
        for member in archive.infolist():
            problem = _unsafe_member(member, root)
            if problem:
                raise DataError(
                    f"{zip_path}: member {member.filename!r} {problem}; refusing to extract this "
                    "archive. Its entries must be relative paths such as Positive/00001.jpg."
                )
        try:
            archive.extractall(root)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC mismatch, truncated member
            raise DataError(f"{zip_path}: corrupt archive ({e}); download it again.") from None


def load_images(raw: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """Decodes raw/Negative (label 0) and raw/Positive (label 1), sorted by name, into grayscale
    size x size: (images uint8 [N,size,size], labels int64 [N], names, skipped).

    A file that does not decode, or repeats the bytes of an earlier one, is skipped and reported as
    {"file": "Positive/x.jpg", "reason": ...}; the dataset holds exact duplicates (PROVENANCE.md),
    which would otherwise leak between train and test.
    """
    files = []
    for label, cls in enumerate(CLASSES):
        folder = Path(raw) / cls
        if not folder.is_dir():
            raise DataError(f"{folder} not found: run `pipeline download --dataset crack` first")
        files += [(f"{cls}/{p.name}", p, label) for p in _class_files(folder)]

    # Pillow pads a truncated JPEG with grey instead of failing when this global is True (some
    # libraries set it): a truncated download must be reported, never trained on.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        # Threads: libjpeg, the resize and sha256 release the GIL; map() keeps the sorted order.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(lambda f: _read_and_decode(f[1], size), files))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous

    images, labels, names, skipped, first_of = [], [], [], [], {}
    duplicates = 0
    for (name, _, label), (digest, pixels, reason) in zip(files, decoded):
        if reason is not None:
            log.warning("skipped %s: %s", name, reason)
            skipped.append({"file": name, "reason": reason})
        elif digest in first_of:
            duplicates += 1
            skipped.append({"file": name, "reason": f"duplicate of {first_of[digest]} (identical bytes)"})
        else:
            first_of[digest] = name
            images.append(pixels)
            labels.append(label)
            names.append(name)
    if duplicates:  # one line: the full Kaggle set has 1,598 of them
        log.info("skipped %d exact duplicates of other files (listed in `skipped`)", duplicates)
    if not images:
        raise DataError(f"{raw}: no readable image among {len(files)} files; run "
                        "`pipeline download --dataset crack` again")
    return (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64), names, skipped)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """One image file's bytes -> grayscale uint8 [size, size]: the decoding every crack model sees."""
    with Image.open(io.BytesIO(data)) as image:
        # draft() lets libjpeg decode only the luma at 1/2, 1/4 or 1/8 scale (never below `size`):
        # twice as fast at 64 px, and DCT-domain scaling is itself a clean low-pass. Lanczos then
        # does the final antialiased downscale, keeping thin cracks sharpest. Both are
        # deterministic for a given Pillow/libjpeg build.
        image.draft("L", (size, size))
        image.load()  # decodes everything now, so a truncated file raises here
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8)


def content_digest(raw: Path, names: list[str]) -> str:
    """sha256 over the names and contents of these files, in this order (the data version)."""
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\0{hashlib.sha256((Path(raw) / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _read_and_decode(path: Path, size: int) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256 of the bytes, pixels, None) or (digest or None, None, why it was skipped)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, None, "empty file"
    try:
        return digest, decode_image(data, size), None
    except UnidentifiedImageError:
        return digest, None, "not an image Pillow can read (unknown format)"
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes means "skip this file"
        return digest, None, f"cannot decode: {e}"


def _source_path(source: str) -> Path:
    if source.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", source):
        raise DataError(f"crack source {source}: only a local path or a file:// URL is supported. "
                        f"{SOURCE_HELP}")
    return Path(source).expanduser()


def _extract_and_locate(archive: Path, target: Path, described: str) -> Path:
    if not zipfile.is_zipfile(archive):
        raise DataError(f"{described}: {archive} is neither a folder nor a .zip archive. {SOURCE_HELP}")
    safe_extract(archive, target)
    return _locate(target, described)


def _locate(root: Path, described: str) -> Path:
    """The folder holding Positive/ and Negative/: `root` itself or exactly one of its subfolders."""
    def has_classes(folder: Path) -> bool:
        return all((folder / cls).is_dir() for cls in CLASSES)

    if has_classes(root):
        return root
    found = sorted(p for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith((".", "__MACOSX")) and has_classes(p))
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(f"{described}: several folders hold Positive/ and Negative/ "
                        f"({', '.join(p.name for p in found)}); point the source at one of them.")
    raise DataError(f"{described}: no Positive/ and Negative/ folders in it. {SOURCE_HELP}")


def _collect(base: Path, dest: Path, move: bool) -> dict[str, int]:
    counts = {}
    for cls in CLASSES:
        files = _class_files(base / cls)
        if not files:
            raise DataError(f"{base / cls}: no image files. {SOURCE_HELP}")
        (dest / cls).mkdir()
        for src in files:
            if move:  # extracted into a temp folder on the same disk: a rename, not a copy
                os.replace(src, dest / cls / src.name)
            else:
                shutil.copyfile(src, dest / cls / src.name)
        counts[cls] = len(files)
    return counts


def _class_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _unsafe_member(member: zipfile.ZipInfo, root: Path) -> str | None:
    name = member.filename
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "climbs out of the extraction folder with '..'"
    if not (root / name).resolve().is_relative_to(root):
        return "resolves outside the extraction folder"
    return None
