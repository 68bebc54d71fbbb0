"""Crack data on real image slices: Kaggle credential errors, folder and zip sources, unsafe zips,
corrupt files skipped and reported, the stratified 60/20/20 split, end-to-end download + prepare."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import artifacts, download, prepare
from pipeline.data import folder_source, images
from pipeline.data.kaggle_download import credentials_found
from pipeline.errors import DataError
from tests.conftest import REPO, shrunk_params, shrunk_params_dict

PER_CLASS = 40
CLASSES = ("Negative", "Positive")  # the crack record's class folders, in label order
KAGGLE_ENV = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME",
              "KAGGLE_API_ENVIRONMENT", "PIPELINE_CRACK_SOURCE")


@pytest.fixture
def crack_slice(tmp_path, shared_crack) -> Path:
    """The first PER_CLASS real images of each class, copied (tests may damage them)."""
    root = tmp_path / "slice"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((shared_crack / cls).glob("*.jpg"))[:PER_CLASS]:
            shutil.copyfile(src, root / cls / src.name)
    return root


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty workspace as cwd, with no Kaggle credential or source override from the caller."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in KAGGLE_ENV:
        monkeypatch.delenv(name, raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    return ws


def crack_params(source, **prepare_overrides):
    return shrunk_params(download={"crack": {"source": None if source is None else str(source)}},
                         prepare={"crack": {"image_size": 32, **prepare_overrides}})


def files_of(folder: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(folder.glob("*/*")) if p.is_file()}


def assert_no_raw_left(ws: Path) -> None:
    assert not (ws / "data").exists()  # no temp folder, nor the empty folders made for it


# --- Kaggle ------------------------------------------------------------------------------------

def test_missing_credentials_say_how_to_set_them_and_how_to_work_offline(work, capsys):
    with pytest.raises(DataError) as e:
        download.main(crack_params(None), "crack")
    message = str(e.value)
    for needed in ("no Kaggle credentials", "arunrk7/surface-crack-detection", "KAGGLE_USERNAME",
                   "KAGGLE_KEY", "~/.kaggle/kaggle.json", "chmod 600", "https://www.kaggle.com/settings",
                   "download.crack.source", "PIPELINE_CRACK_SOURCE", "Negative/ and Positive/"):
        assert needed in message
    assert "Authentication required" not in capsys.readouterr().out  # the client was never asked
    assert_no_raw_left(work)


def test_credentials_are_found_where_the_client_looks(work, tmp_path, monkeypatch):
    assert not credentials_found()
    config = tmp_path / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "someone"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert not credentials_found()  # a key is needed too
    monkeypatch.setenv("KAGGLE_KEY", "0123abcd")  # the environment completes the file
    assert credentials_found()
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.delenv("KAGGLE_CONFIG_DIR")
    (Path(os.environ["HOME"]) / ".kaggle").mkdir()
    (Path(os.environ["HOME"]) / ".kaggle" / "kaggle.json").write_text(
        json.dumps({"username": "someone", "key": "0123abcd"}))
    assert credentials_found()


class _Rejects(http.server.BaseHTTPRequestHandler):
    """Answers every request 401 as Kaggle's API does for a wrong key, and remembers what it got."""

    seen: list[str] = []

    def _reject(self):
        self.seen.append(f"{self.command} {self.path}")
        body = json.dumps({"code": 401, "message": "Unauthenticated"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reject

    def log_message(self, *args):
        pass


def test_rejected_credentials_are_a_data_error_without_traceback(work, tmp_path):
    """The real kaggle client against a local server that answers 401.

    The client has no endpoint URL override: KAGGLE_API_ENVIRONMENT=LOCALHOST sends it to
    http://localhost (port 80), so a standard HTTP_PROXY routes that to a free port on 127.0.0.1.
    Both are read when the client is imported, hence a fresh process: the CLI, as a user runs it.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rejects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(shrunk_params_dict(download={"crack": {"source": None}})))
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k not in KAGGLE_ENV}
    env.update(KAGGLE_USERNAME="someone", KAGGLE_KEY="not-a-valid-key", KAGGLE_API_ENVIRONMENT="LOCALHOST",
               HTTP_PROXY=proxy, http_proxy=proxy, PYTHONPATH=str(REPO))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "--params", str(params_file), "download", "--dataset", "crack"],
            cwd=work, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert any("datasets" in line.lower() for line in _Rejects.seen), _Rejects.seen  # the client got there
    assert result.returncode == 2, result.stderr
    assert "HTTP 401" in result.stderr and "credentials were rejected" in result.stderr
    assert "KAGGLE_USERNAME" in result.stderr and "PIPELINE_CRACK_SOURCE" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_raw_left(work)


# --- local sources -----------------------------------------------------------------------------

def test_local_folder_source_copies_every_image_by_name(work, crack_slice):
    download.main(crack_params(crack_slice), "crack")
    raw = artifacts.raw_dir("crack")
    assert files_of(raw) == files_of(crack_slice)
    assert len(list((raw / "Positive").iterdir())) == PER_CLASS


def test_folder_one_level_down_and_file_url(work, crack_slice, tmp_path, monkeypatch):
    outer = tmp_path / "outer"
    shutil.copytree(crack_slice, outer / "surface-crack-detection")
    monkeypatch.setenv("PIPELINE_CRACK_SOURCE", outer.as_uri())  # the env var wins over params.yaml
    download.main(crack_params(tmp_path / "not-used"), "crack")
    assert files_of(artifacts.raw_dir("crack")) == files_of(crack_slice)


def make_zip(path: Path, folder: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(folder.glob("*/*")):
            zf.write(p, f"{prefix}{p.parent.name}/{p.name}")
    return path


@pytest.mark.parametrize("prefix", ["", "surface-crack-detection/"])
def test_zip_source(work, crack_slice, tmp_path, prefix):
    archive = make_zip(tmp_path / "cracks.zip", crack_slice, prefix)
    counts = folder_source.fetch(_empty(tmp_path / "dest"), str(archive), "unused/dataset", CLASSES,
                                  "download.crack.source", "PIPELINE_CRACK_SOURCE")
    assert counts == {"Negative": PER_CLASS, "Positive": PER_CLASS}
    assert files_of(tmp_path / "dest") == files_of(crack_slice)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["Negative", "Positive"]  # no leftovers


def _empty(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _add_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


@pytest.mark.parametrize("member, problem", [
    ("../evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute path"),
    ("Positive/link.jpg", "symbolic link"),
])
def test_unsafe_zip_member_is_refused_before_anything_is_written(work, crack_slice, tmp_path, member, problem):
    archive = make_zip(tmp_path / "evil.zip", crack_slice)
    with zipfile.ZipFile(archive, "a") as zf:  # last, so a member-by-member check would write first
        if "link" in member:
            _add_symlink(zf, member, "../../../etc/passwd")
        else:
            zf.writestr(member, "pwned")
    target = _empty(tmp_path / "target")
    with pytest.raises(DataError) as e:
        folder_source.safe_extract(archive, target)
    assert member in str(e.value) and str(archive) in str(e.value) and problem in str(e.value)
    assert list(target.iterdir()) == [] and not (tmp_path / "evil.txt").exists()
    # Through the stage: nothing in data/crack either.
    with pytest.raises(DataError):
        download.main(crack_params(archive), "crack")
    assert_no_raw_left(work)


@pytest.mark.parametrize("make_source, expected", [
    (lambda tmp: tmp / "no-such-folder", "no such folder or file"),
    (lambda tmp: _empty(tmp / "empty-folder"), "no Negative/ and Positive/ folders"),
    (lambda tmp: (tmp / "notes.txt", (tmp / "notes.txt").write_text("hi"))[0], "neither a folder nor a .zip"),
])
def test_bad_source_names_itself_and_the_setting(work, tmp_path, make_source, expected):
    source = make_source(tmp_path)
    with pytest.raises(DataError) as e:
        download.main(crack_params(source), "crack")
    message = str(e.value)
    assert str(source) in message and expected in message
    assert "download.crack.source" in message and "PIPELINE_CRACK_SOURCE" in message
    assert_no_raw_left(work)


# --- decode and split --------------------------------------------------------------------------

def test_bad_files_are_skipped_and_reported_while_the_run_goes_on(work, crack_slice):
    positives = sorted((crack_slice / "Positive").glob("*.jpg"))
    truncated = positives[0]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # a cut-off download
    (crack_slice / "Negative" / "readme.jpg").write_text("not an image, whatever its name says\n")
    shutil.copyfile(positives[1], crack_slice / "Positive" / "zz_copy.jpg")  # an exact duplicate

    download.main(crack_params(crack_slice), "crack")
    prepare.main(crack_params(crack_slice), "crack")

    data = artifacts.load_prepared("crack")
    reasons = {s["file"]: s["reason"] for s in data["skipped"]}
    assert set(reasons) == {f"Positive/{truncated.name}", "Negative/readme.jpg", "Positive/zz_copy.jpg"}
    assert "truncated" in reasons[f"Positive/{truncated.name}"]
    assert "not an image" in reasons["Negative/readme.jpg"]
    assert reasons["Positive/zz_copy.jpg"] == f"duplicate of Positive/{positives[1].name} (identical bytes)"
    report = json.loads(artifacts.prepare_report_file("crack").read_text())
    assert report["skipped"] == data["skipped"]
    assert report["files"] == 2 * PER_CLASS + 2 and report["decoded"] == 2 * PER_CLASS - 1
    kept = [n for part in ("train", "val", "test") for n in data[f"{part}_names"]]
    assert len(kept) == 2 * PER_CLASS - 1 and not set(reasons) & set(kept)


def test_split_is_stratified_disjoint_and_reproducible(work, crack_slice):
    params = crack_params(crack_slice)
    download.main(params, "crack")
    prepare.main(params, "crack")
    data = artifacts.load_prepared("crack")  # weights_only=True: only tensors, str, int, lists, dicts

    names = {part: data[f"{part}_names"] for part in ("train", "val", "test")}
    all_names = [n for part in names.values() for n in part]
    assert len(all_names) == len(set(all_names)) == 2 * PER_CLASS  # every image once, none twice
    for part, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        x, y = data[f"{part}_x"], data[f"{part}_y"]
        assert x.dtype == torch.uint8 and x.shape == (len(y), 32, 32) and y.dtype == torch.int64
        assert len(names[part]) == len(y)
        assert [n.split("/")[0] for n in names[part]] == [CLASSES[k] for k in y.tolist()]
        for label in (0, 1):
            assert abs(int((y == label).sum()) - fraction * PER_CLASS) <= 1
    assert data["image_size"] == 32 and data["classes"] == ["Negative", "Positive"]
    assert len(data["data_version"]) == 12 and data["skipped"] == []

    report = json.loads(artifacts.prepare_report_file("crack").read_text())
    assert sum(sum(c.values()) for c in report["splits"].values()) == 2 * PER_CLASS
    assert report["data_version"] == data["data_version"] and report["decode_seconds"] >= 0

    prepare.main(params, "crack")  # same files, same settings: same split and version
    again = artifacts.load_prepared("crack")
    assert again["data_version"] == data["data_version"]
    assert all(again[f"{p}_names"] == names[p] for p in names)
    assert torch.equal(again["train_x"], data["train_x"])


def test_limit_keeps_a_stratified_subset_and_changes_the_version(work, crack_slice):
    download.main(crack_params(crack_slice), "crack")
    prepare.main(crack_params(crack_slice), "crack")
    full_version = artifacts.load_prepared("crack")["data_version"]
    prepare.main(crack_params(crack_slice, limit=20), "crack")
    data = artifacts.load_prepared("crack")
    labels = torch.cat([data["train_y"], data["val_y"], data["test_y"]])
    assert labels.bincount().tolist() == [10, 10]
    assert data["data_version"] != full_version


def test_decoded_images_are_grayscale_resized_real_pixels(shared_crack):
    path = sorted((shared_crack / "Positive").glob("*.jpg"))[0]
    pixels = images.decode_image(path.read_bytes(), 64)
    assert pixels.shape == (64, 64) and pixels.dtype.name == "uint8"
    assert 20 < pixels.mean() < 240 and pixels.std() > 2  # a photo, not a constant or an empty image
