"""Any labelled image folder is a dataset (`download.<name>: {kind: imagefolder, source: ...}`):
real SDNET2018 deck photos (../shared/data/sdnet2018, CD cracked and UD uncracked) as a user's
folder; bad folders fail naming the folder, before any training; mixed sizes and modes are
converted; the user's own train/val/test folders are kept, with byte duplicates removed."""
from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline import artifacts, download, prepare
from pipeline.config import ConfigError, parse_params
from pipeline.data.datasets import get_dataset
from pipeline.errors import DataError
from tests.conftest import REPO, shrunk_params_dict

SHARED_SDNET = REPO.parent / "shared" / "data" / "sdnet2018"


def deck_photos(cls: str) -> list[Path]:
    files = sorted((SHARED_SDNET / cls).glob("*.jpg"))
    if len(files) < 100:
        pytest.fail(f"the 200 real SDNET2018 deck photos are expected in {SHARED_SDNET}/CD and /UD")
    return files


def make_folder(root: Path, per_class: dict[str, int]) -> Path:
    """root/<class>/ with n real deck photos (CD for the first class, UD for the next, CD again
    from its 50th for a third)."""
    for k, (cls, n) in enumerate(per_class.items()):
        (root / cls).mkdir(parents=True)
        start = 50 * (k // 2)
        for src in deck_photos(("CD", "UD")[k % 2])[start:start + n]:
            shutil.copyfile(src, root / cls / src.name)
    return root


def folder_params_dict(source, name: str = "decks", **prepare) -> dict:
    raw = shrunk_params_dict(models=["cnn1"], crack_models=["crack_cnn"])
    raw["datasets"] = [name]
    raw["download"][name] = {"kind": "imagefolder", "source": str(source)}
    raw["prepare"][name] = {"image_size": 32, **prepare}
    raw["train"][name] = {"crack_cnn": {**raw["train"]["crack"]["crack_cnn"]},
                          "cnn1": {**raw["train"]["mnist"]["cnn1"]}}
    return raw


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    return ws


def fetch_and_prepare(source, **prepare_settings) -> dict:
    params = parse_params(folder_params_dict(source, **prepare_settings))
    download.main(params, "decks")
    prepare.main(params, "decks")
    return json.loads(artifacts.prepare_report_file("decks").read_text())


def test_a_declared_folder_is_a_dataset_with_its_folders_as_classes(work, tmp_path):
    report = fetch_and_prepare(make_folder(tmp_path / "decks", {"cracked": 30, "sound": 30}))
    record = get_dataset("decks")
    assert record.class_names == ("cracked", "sound") and record.binary and record.num_classes == 1
    assert sum(report["splits"]["test"].values()) == 12 and report["splits"]["train"] == {"cracked": 18, "sound": 18}
    data = artifacts.load_prepared("decks") if hasattr(artifacts, "load_prepared") else torch.load(
        artifacts.prepared_file("decks"), weights_only=True)
    assert data["train_x"].shape[1:] == (32, 32) and data["train_x"].dtype == torch.uint8
    mean, std = record.normalisation  # measured on its training split, not assumed
    assert 0.2 < mean < 0.8 and 0.02 < std < 0.4


def test_three_classes_are_not_binary_and_rgb_is_cached_with_three_channels(work, tmp_path):
    source = make_folder(tmp_path / "decks", {"a": 20, "b": 20, "c": 20})
    report = fetch_and_prepare(source, channels=3)
    record = get_dataset("decks")
    assert not record.binary and record.num_classes == 3 and record.in_channels == 3
    data = torch.load(artifacts.prepared_file("decks"), weights_only=True)
    assert data["val_x"].shape[1:] == (3, 32, 32) and report["channels"] == 3


def test_mixed_sizes_and_modes_are_converted_and_unreadable_files_counted(work, tmp_path):
    source = make_folder(tmp_path / "decks", {"cracked": 20, "sound": 20})
    for k, path in enumerate(sorted((source / "cracked").iterdir())[:6]):
        image = Image.open(path)
        mode = ("RGBA", "P", "L", "RGB", "I;16", "1")[k]
        converted = image.convert("RGB" if mode == "I;16" else mode).resize((100 + 17 * k, 80 + 9 * k))
        converted.save(path.with_suffix(".png"))
        path.unlink()
    (source / "sound" / "notes.txt").write_text("not an image")
    (source / "sound" / "cut.jpg").write_bytes(deck_photos("UD")[50].read_bytes()[:2000])
    report = fetch_and_prepare(source)
    assert report["decoded"] == 40 and report["files"] == 42
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"sound/notes.txt", "sound/cut.jpg"}


def test_the_users_own_splits_are_kept_and_duplicates_across_them_removed(work, tmp_path):
    root = tmp_path / "decks"
    for split, (start, n) in {"train": (0, 20), "val": (20, 6), "test": (26, 6)}.items():
        for cls, folder in (("cracked", "CD"), ("sound", "UD")):
            (root / split / cls).mkdir(parents=True)
            for src in deck_photos(folder)[start:start + n]:
                shutil.copyfile(src, root / split / cls / src.name)
    # The same photo in train and test, under another name: test loses it.
    shutil.copyfile(root / "train" / "cracked" / deck_photos("CD")[0].name, root / "test" / "cracked" / "copy.jpg")
    report = fetch_and_prepare(root)
    assert report["splits"] == {"train": {"cracked": 20, "sound": 20}, "val": {"cracked": 6, "sound": 6},
                                "test": {"cracked": 6, "sound": 6}}
    assert [s["file"] for s in report["skipped"]] == ["test/cracked/copy.jpg"]
    assert "duplicate of train/cracked/" in report["skipped"][0]["reason"]
    data = torch.load(artifacts.prepared_file("decks"), weights_only=True)
    assert all(name.startswith("test/") for name in data["test_names"])


@pytest.mark.parametrize("layout, expected", [
    ({"cracked": 10}, "one class folder (cracked)"),
    ({"cracked": 10, "sound": 0}, "no image files (an empty class)"),
    ({}, "no class folders"),
])
def test_bad_folders_fail_at_download_naming_the_folder(work, tmp_path, layout, expected):
    source = tmp_path / "decks"
    source.mkdir()
    for cls, n in layout.items():
        (source / cls).mkdir()
        for src in deck_photos("CD")[:n]:
            shutil.copyfile(src, source / cls / src.name)
    with pytest.raises(DataError) as e:
        download.main(parse_params(folder_params_dict(source)), "decks")
    assert expected in str(e.value) and str(source) in str(e.value) and "download.decks.source" in str(e.value)
    assert not (work / "data" / "decks" / "raw").exists()


def test_nested_folders_are_refused_naming_the_folder(work, tmp_path):
    source = make_folder(tmp_path / "decks", {"cracked": 5, "sound": 5})
    (source / "sound" / "more").mkdir()
    with pytest.raises(DataError) as e:
        download.main(parse_params(folder_params_dict(source)), "decks")
    assert f"{source / 'sound'}: holds folder(s) more; nested folders are not classes" in str(e.value)


def test_no_readable_image_and_too_few_for_the_splits_fail_at_prepare(work, tmp_path):
    source = tmp_path / "decks"
    for cls in ("a", "b"):
        (source / cls).mkdir(parents=True)
        (source / cls / "x.txt").write_text("text")
    params = parse_params(folder_params_dict(source))
    download.main(params, "decks")
    with pytest.raises(DataError, match="no readable image among 2 files"):
        prepare.main(params, "decks")

    shutil.rmtree(work / "data")
    few = make_folder(tmp_path / "few", {"cracked": 20, "sound": 4})
    params = parse_params(folder_params_dict(few))
    download.main(params, "decks")
    with pytest.raises(DataError) as e:
        prepare.main(params, "decks")
    assert "class sound has 1 image(s) in the val split" in str(e.value) and "Add readable images" in str(e.value)
    assert not artifacts.prepared_file("decks").exists()


def test_a_zip_of_the_folder_is_a_source(work, tmp_path):
    source = make_folder(tmp_path / "zipped" / "my-photos", {"cracked": 10, "sound": 10})
    archive = shutil.make_archive(str(tmp_path / "decks"), "zip", tmp_path / "zipped")
    params = parse_params(folder_params_dict(archive))
    download.main(params, "decks")
    assert sorted(p.name for p in (work / "data" / "decks" / "raw").iterdir()) == ["cracked", "sound"]
    assert len(list((source / "cracked").iterdir())) == 10


def test_an_http_url_of_a_zip_is_a_source_and_a_missing_one_is_named(work, tmp_path, monkeypatch):
    make_folder(tmp_path / "site" / "photos", {"cracked": 8, "sound": 8})
    shutil.make_archive(str(tmp_path / "site" / "decks"), "zip", tmp_path / "site" / "photos")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        download.main(parse_params(folder_params_dict(f"{base}/decks.zip")), "decks")
        assert [len(list(p.iterdir())) for p in sorted((work / "data" / "decks" / "raw").iterdir())] == [8, 8]
        shutil.rmtree(work / "data")
        with pytest.raises(DataError, match=f"source {base}/gone.zip .*download failed .*404"):
            download.main(parse_params(folder_params_dict(f"{base}/gone.zip")), "decks")
        assert not (work / "data" / "decks" / "raw").exists()
    finally:
        server.shutdown()


def test_declaring_a_folder_is_checked_with_the_fix_named():
    raw = folder_params_dict("/nowhere")
    raw["download"]["decks"]["kind"] = "folder"
    with pytest.raises(ConfigError, match="download.decks.kind: got 'folder', expected imagefolder"):
        parse_params(raw)
    raw = folder_params_dict("/nowhere")
    del raw["download"]["decks"]
    with pytest.raises(ConfigError, match="unknown dataset 'decks'.*download.decks: {kind: imagefolder"):
        parse_params(raw)
    raw = folder_params_dict("/nowhere", channels=2)
    with pytest.raises(ConfigError, match="prepare.decks.channels: got 2"):
        parse_params(raw)


def test_decoding_for_predict_is_the_prepare_stages(work, tmp_path):
    params = parse_params(folder_params_dict(tmp_path, channels=3))
    data = deck_photos("CD")[0].read_bytes()
    pixels = get_dataset("decks").decode(data, params)
    assert pixels.shape == (3, 32, 32)
    gray = Image.open(io.BytesIO(data)).convert("L")
    assert gray.size == (256, 256)


def test_several_folders_are_declared_under_their_own_names_and_each_gets_its_stages(tmp_path):
    from pipeline import stages

    make_folder(tmp_path / "decks", {"cracked": 4, "sound": 4, "stained": 4})
    raw = folder_params_dict(tmp_path / "decks")
    raw["download"]["walls"] = {"kind": "imagefolder", "source": str(tmp_path / "walls")}
    raw["train"]["walls"] = {"crack_cnn": raw["train"]["decks"]["crack_cnn"]}
    raw["datasets"] = ["decks", "walls", "mnist"]
    params = parse_params(raw)
    assert get_dataset("walls").declared and get_dataset("decks").declared
    dag = stages.pipeline_yaml(params)["stages"]
    assert {"train_decks", "evaluate_decks", "train_walls", "evaluate_walls", "train_mnist"} <= set(dag)
    # Three class folders: not binary, so no ROC or precision-recall plots are declared for it.
    assert not any("roc" in str(p) for p in dag["evaluate_decks"]["do"]["plots"])


def test_a_folder_without_a_prepare_section_gets_stages_dvc_can_run(tmp_path):
    """README's own-images example: `prepare.<name>` left out (all defaults). DVC fails at once on a
    param params.yaml lacks, so prepare@<name> names the declaration it has instead; a dataset
    with its own section keeps it."""
    from pipeline import stages

    make_folder(tmp_path / "decks", {"cracked": 4, "sound": 4})
    raw = folder_params_dict(tmp_path / "decks")
    del raw["prepare"]["decks"]
    raw["datasets"] = ["decks", "mnist"]
    params = parse_params(raw)
    assert params.prepare.decks.image_size == 64 and params.prepare.defaulted == {"decks"}
    dag = stages.pipeline_yaml(params)["stages"]
    assert dag["prepare"]["foreach"] == {"decks": {"param": "download.decks"}, "mnist": {"param": "prepare.mnist"}}
    assert dag["prepare"]["do"]["params"] == ["${item.param}"]
    assert dag["prepare"]["do"]["cmd"] == "pipeline prepare --dataset ${key}"
    # Every section given: the foreach over `datasets` that dvc.yaml has always had.
    assert stages.pipeline_yaml(parse_params(folder_params_dict(tmp_path / "decks")))["stages"]["prepare"][
        "foreach"] == "${datasets}"


def test_the_served_models_png_and_decoding_keep_rgb(tmp_path):
    """What a client sends (serving.encode_png) decodes back to the same pixels, gray or RGB."""
    import base64

    import numpy as np

    from pipeline.data.images import decode_image
    from pipeline.tracking.serving import encode_png

    pixels = decode_image(deck_photos("CD")[0].read_bytes(), 32, 3)
    assert pixels.shape == (3, 32, 32) and np.ptp(pixels) > 0
    assert np.array_equal(decode_image(base64.b64decode(encode_png(pixels)), 32, 3), pixels)
    gray = decode_image(deck_photos("CD")[0].read_bytes(), 32)
    assert np.array_equal(decode_image(base64.b64decode(encode_png(gray)), 32), gray)
