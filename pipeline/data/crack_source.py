"""Where the crack images come from: the Kaggle dataset through the kaggle client, or a local copy,
i.e. a folder or a .zip holding Positive/ and Negative/ at its top or one folder down (the Kaggle
archive and hand-made zips differ on that). Only the files directly in those two folders count;
hidden files (.DS_Store, ._*) are left out. Archives are extracted only after every member is
checked to stay inside the target folder.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from pipeline.data.errors import DataError
from pipeline.data.kaggle_download import download_dataset

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
        files = class_files(base / cls)
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


def class_files(folder: Path) -> list[Path]:
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
