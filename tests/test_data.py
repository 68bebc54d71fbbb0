"""Download from the real offline mirror, checksum failures, IDX decoding, stratified split."""
from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest
import torch

from pipeline import artifacts, download
from pipeline.data import mnist
from pipeline.data.split import stratified_split
from tests.conftest import shrunk_params


def test_download_from_mirror_folder_verifies_every_file(tmp_path, monkeypatch, shared_mnist):
    monkeypatch.chdir(tmp_path)
    download.main(shrunk_params())
    raw = artifacts.raw_dir("mnist")
    assert sorted(p.name for p in raw.iterdir()) == sorted(mnist.FILES)
    # The shared train-images .gz differs from the official .gz in its header only: accepted.
    for name in mnist.FILES:
        mnist.verify(raw / name)


@pytest.fixture
def http_mirror(shared_mnist):
    """The shared files served over real HTTP on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_mnist))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_from_mirror_url(tmp_path, monkeypatch, http_mirror):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_MNIST_MIRROR", http_mirror)  # the env var wins over params.yaml
    download.main(shrunk_params())
    assert sorted(p.name for p in artifacts.raw_dir("mnist").iterdir()) == sorted(mnist.FILES)


def test_download_from_file_url(tmp_path, monkeypatch, shared_mnist):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_MNIST_MIRROR", shared_mnist.as_uri())
    download.main(shrunk_params())
    assert len(list(artifacts.raw_dir("mnist").iterdir())) == 4


def test_unreachable_url_mirror_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_MNIST_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(mnist.DataError) as e:
        download.main(shrunk_params())
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "PIPELINE_MNIST_MIRROR" in str(e.value)
    assert not (tmp_path / "data" / "mnist" / "raw").exists()


def _broken_mirror(tmp_path, shared_mnist, name, mutate):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_mnist, mirror)
    data = (mirror / name).read_bytes()
    (mirror / name).write_bytes(mutate(data))
    return mirror


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[: len(b) // 2], "not a readable gzip file"),  # truncated download
    (lambda b: gzip.compress(gzip.decompress(b)[:-100]), "decompressed md5"),  # valid gzip, wrong content
])
def test_corrupt_file_is_named_and_leaves_no_partial_output(tmp_path, monkeypatch, shared_mnist,
                                                            mutate, message):
    name = "t10k-labels-idx1-ubyte.gz"
    mirror = _broken_mirror(tmp_path, shared_mnist, name, mutate)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PIPELINE_MNIST_MIRROR", str(mirror))
    with pytest.raises(mnist.DataError) as e:
        download.main(shrunk_params())
    assert name in str(e.value) and message in str(e.value)
    assert not (work / "data").exists()  # no temp folder, nor the empty folders made for it


def test_mirror_folder_missing_a_file(tmp_path, monkeypatch, shared_mnist):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_mnist, mirror)
    (mirror / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_MNIST_MIRROR", str(mirror))
    with pytest.raises(mnist.DataError, match="train-labels-idx1-ubyte.gz not found"):
        download.main(shrunk_params())


def test_truncated_idx_is_named(tmp_path, shared_mnist):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress((shared_mnist / path.name).read_bytes())
    path.write_bytes(gzip.compress(content[:5000]))
    with pytest.raises(mnist.DataError) as e:
        mnist.read_idx(path)
    assert str(path) in str(e.value) and "truncated" in str(e.value)


def test_official_files_decode(shared_mnist):
    train_x, train_y = mnist.load_split(shared_mnist, "train")
    test_x, test_y = mnist.load_split(shared_mnist, "t10k")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    # First labels of the official files: 5 0 4 1 9 (train) and 7 2 1 0 4 (test).
    assert train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert test_y[:5].tolist() == [7, 2, 1, 0, 4]


def test_stratified_split_keeps_class_proportions(shared_mnist):
    _, labels = mnist.load_split(shared_mnist, "train")
    labels = labels.numpy()
    keep, held = stratified_split(labels, 0.1, seed=12)
    assert len(held) == 6000 and len(keep) == 54000
    assert len(np.intersect1d(keep, held)) == 0
    full = np.bincount(labels, minlength=10) / len(labels)
    for part in (keep, held):
        share = np.bincount(labels[part], minlength=10) / len(part)
        assert np.abs(share - full).max() < 0.005  # within half a percentage point
    again, _ = stratified_split(labels, 0.1, seed=12)
    assert np.array_equal(keep, again)


def test_prepared_file_keeps_the_official_test_set(workspace, shared_mnist):
    from pipeline.artifacts import load_prepared

    data = load_prepared("mnist")
    test_x, test_y = mnist.load_split(shared_mnist, "t10k")
    assert torch.equal(data["test_x"], test_x) and torch.equal(data["test_y"], test_y)
    assert data["train_x"].dtype == torch.uint8
    assert len(data["train_y"]) + len(data["val_y"]) == 2000  # the test slice's train_limit
    assert len(data["val_y"]) == 200
