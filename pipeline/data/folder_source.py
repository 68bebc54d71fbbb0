"""Where an image folder's files come from: a folder, a .zip of one, an http(s):// URL of a .zip,
or a Kaggle dataset through the kaggle client. The folder holds one sub-folder per class (or
train/, val/ and test/ holding one each), at its top or one folder down (the Kaggle archive and
hand-made zips differ on that). Only the files directly in the class folders count; hidden files
(.DS_Store, ._*) are left out. Archives are extracted only after every member is checked to stay
inside the target folder.
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

from pipeline.data.kaggle_download import download_dataset
from pipeline.errors import DataError

SPLITS = ("train", "val", "test")
# A folder the user made beside the class folders by a tool, never a class.
IGNORED = ("__MACOSX",)


def layout_help(setting: str, env: str, folders: tuple[str, ...] | None) -> str:
    classes = (" and ".join(f"{f}/" for f in folders) if folders
               else "one sub-folder per class (at least two), or train/, val/ and test/ holding one each,")
    return (f"Expected a folder, a .zip of one, or an http(s):// URL of such a .zip, holding {classes} "
            f"with the images directly inside, at its top or one folder down. Fix {setting} in "
            f"params.yaml or {env} (a path, file:// or http(s):// URL)")


def fetch(dest: Path, source: str | None, kaggle_dataset: str | None, folders: tuple[str, ...] | None,
          setting: str, env: str) -> dict[str, int]:
    """Puts the images in dest/<class>/ (or dest/<split>/<class>/), names kept; returns the count
    per class folder (its path under dest). `folders`: the class folders to take (the others are
    left out), or None for every sub-folder."""
    helptext = layout_help(setting, env, folders)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch.") as work:
        work = Path(work)
        if source is None:
            if kaggle_dataset is None:
                raise DataError(f"{setting}: no source and no kaggle_dataset. {helptext}")
            holding = " and ".join(f"{f}/" for f in folders) if folders else "one sub-folder per class"
            offline = (f"To use a local copy instead (offline), set {setting} in params.yaml or the {env} "
                       f"environment variable to a folder holding {holding} (e.g. a copy of the Kaggle "
                       "dataset) or to a .zip of that layout.")
            archive = download_dataset(kaggle_dataset, work, offline_help=offline)
            described = f"Kaggle dataset {kaggle_dataset}"
            base = _extract_andlocate(archive, work / "unzipped", described, folders, helptext)
            return _collect(base, dest, folders, move=True, helptext=helptext)
        described = f"source {source} ({setting})"
        if re.match(r"^https?://", source):
            archive = _download_url(source, work / "download.zip", described)
            base = _extract_andlocate(archive, work / "unzipped", described, folders, helptext)
            return _collect(base, dest, folders, move=True, helptext=helptext)
        path = _source_path(source, described, helptext)
        if path.is_dir():
            return _collect(locate(path, described, folders, helptext), dest, folders, move=False,
                            helptext=helptext)
        if path.is_file():
            base = _extract_andlocate(path, work / "unzipped", described, folders, helptext)
            return _collect(base, dest, folders, move=True, helptext=helptext)
        raise DataError(f"{described}: no such folder or file. {helptext}")


def safe_extract(zip_path: Path, target: Path, helptext: str = "") -> None:
    """Extracts `zip_path` into `target`, refusing the whole archive if any member would land
    outside `target` (absolute path, `..`, symbolic link); every member is checked before writing."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: not a readable .zip archive ({e}). {helptext}") from None
    with archive:
        root = Path(target).resolve()
        for member in archive.infolist():
            problem = _unsafe_member(member, root)
            if problem:
                raise DataError(
                    f"{zip_path}: member {member.filename!r} {problem}; refusing to extract this "
                    "archive. Its entries must be relative paths such as cats/00001.jpg."
                )
        try:
            archive.extractall(root)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC mismatch, truncated member
            raise DataError(f"{zip_path}: corrupt archive ({e}); download it again.") from None


def _source_path(source: str, described: str, helptext: str) -> Path:
    if source.startswith("file:"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", source):
        raise DataError(f"{described}: only a local path, a file:// or an http(s):// URL is supported. "
                        f"{helptext}")
    return Path(source).expanduser()


def _download_url(url: str, target: Path, described: str) -> Path:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as e:  # URLError, HTTPError, timeouts
        raise DataError(f"{described}: download failed ({e}); check the URL, or download the .zip "
                        "yourself and point the source at the file") from None
    return target


def _extract_andlocate(archive: Path, target: Path, described: str, folders, helptext: str) -> Path:
    if not zipfile.is_zipfile(archive):
        raise DataError(f"{described}: {archive} is neither a folder nor a .zip archive. {helptext}")
    safe_extract(archive, target, helptext)
    return locate(target, described, folders, helptext)


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED)


def _has_folders(folder: Path, folders: tuple[str, ...]) -> bool:
    return all((folder / cls).is_dir() for cls in folders)


def _wrapper(folder: Path) -> bool:
    """A folder holding exactly one folder and no images: the top of a zip, one level above."""
    (only,) = subfolders(folder)
    return not class_files(folder) and bool(subfolders(only))


def locate(root: Path, described: str, folders: tuple[str, ...] | None, helptext: str) -> Path:
    """The folder holding the class folders: `root` itself or exactly one of its subfolders."""
    if folders is None:
        inner = subfolders(root)
        if len(inner) == 1 and _wrapper(root):
            return inner[0]
        if not inner:
            raise DataError(f"{described}: no class folders in {root} (images directly in it cannot be "
                            f"labelled). {helptext}")
        return root
    if _has_folders(root, folders):
        return root
    found = [p for p in subfolders(root) if _has_folders(p, folders)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(f"{described}: several folders hold {' and '.join(folders)} "
                        f"({', '.join(p.name for p in found)}); point the source at one of them.")
    raise DataError(f"{described}: no {' and '.join(f'{f}/' for f in folders)} folders in it. {helptext}")


def class_folders(base: Path, folders: tuple[str, ...] | None) -> list[str]:
    """The class folders under base, as relative paths: <class> or <split>/<class>."""
    if folders is not None:
        return list(folders)
    split_names = {p.name for p in subfolders(base)}
    if "train" in split_names and "test" in split_names and split_names <= set(SPLITS):
        classes = {split: [p.name for p in subfolders(base / split)] for split in split_names}
        train = classes["train"]
        for split, names in classes.items():
            if names != train:
                raise DataError(f"{base / split}: class folders {names} differ from {base / 'train'}'s "
                                f"{train}; each split needs the same class folders")
        return [f"{split}/{cls}" for split in SPLITS if split in split_names for cls in train]
    return [p.name for p in subfolders(base)]


def _collect(base: Path, dest: Path, folders, move: bool, helptext: str) -> dict[str, int]:
    counts = {}
    found = class_folders(base, folders)
    if len({name.rsplit("/", 1)[-1] for name in found}) < 2:
        raise DataError(f"{base}: one class folder ({', '.join(found) or 'none'}); a classifier needs at "
                        f"least two. {helptext}")
    for name in found:
        folder = base / name
        nested = subfolders(folder)
        if nested and folders is None:
            raise DataError(f"{folder}: holds folder(s) {', '.join(p.name for p in nested)}; nested folders "
                            "are not classes. Put every image directly in its class folder. " + helptext)
        files = class_files(folder)
        if not files:
            raise DataError(f"{folder}: no image files (an empty class). {helptext}")
        (dest / name).mkdir(parents=True)
        for src in files:
            if move:  # extracted into a temp folder on the same disk: a rename, not a copy
                os.replace(src, dest / name / src.name)
            else:
                shutil.copyfile(src, dest / name / src.name)
        counts[name] = len(files)
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
