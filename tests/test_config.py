"""Bad params fail before any work starts, with the key named and the valid values listed."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline.config import ConfigError, load_params, merge_overrides, parse_params
from pipeline.models.checks import check_models
from tests.conftest import REPO, real_params_dict


def test_real_params_yaml_is_valid_and_lists_every_mnist_model():
    params = load_params(REPO / "params.yaml")
    assert params.models("mnist") == ["logreg", "mlp", "cnn1", "cnn2", "keras_cnn2", "keras_cnn3",
                                      "simple_cnn", "classic_cnn", "lenet5", "numpy_cnn",
                                      "vgg16", "resnet50", "tiny_vgg", "tiny_resnet"]
    lab_d = params.train_config("mnist", "numpy_cnn")  # lab-D: per-sample SGD at 0.01, 2 epochs
    assert (lab_d.optimizer, lab_d.lr, lab_d.batch_size, lab_d.epochs) == ("sgd", 0.01, 1, 2)
    # Our recipes add what SPEC.md's sources lack; the rows show only what differs from the defaults.
    assert params.train_config("mnist", "keras_cnn2").schedule == "onecycle"
    assert params.train_config("mnist", "keras_cnn2").patience == 0
    assert all(not params.train_config("crack", m).pretrained for m in params.models("crack"))


def _error(raw) -> str:
    """The error of reading `raw` as the CLI does: parsed, then each model checked against the registry."""
    with pytest.raises(ConfigError) as e:
        check_models(parse_params(raw))
    return str(e.value)


def test_unknown_model_name_lists_valid_names():
    raw = real_params_dict()
    raw["train"]["mnist"]["lenet6"] = raw["train"]["mnist"].pop("lenet5")
    msg = _error(raw)
    assert "train.mnist.lenet6" in msg and "Did you mean 'lenet5'" in msg and "simple_cnn" in msg


def test_mistyped_key_is_named_with_the_valid_keys():
    raw = real_params_dict()
    raw["train"]["mnist"]["cnn1"]["epoch"] = raw["train"]["mnist"]["cnn1"].pop("epochs")
    msg = _error(raw)
    assert "train.mnist.cnn1.epoch" in msg and "epochs" in msg and "batch_size" in msg


def test_missing_key_is_named():
    raw = real_params_dict()
    del raw["train"]["mnist"]["mlp"]["lr"]
    assert "missing key 'train.mnist.mlp.lr'" in _error(raw)


@pytest.mark.parametrize("bad", [-1, 0, 2.5, "ten", True])
def test_bad_epoch_counts_are_rejected(bad):
    raw = real_params_dict()
    raw["train"]["mnist"]["lenet5"]["epochs"] = bad
    msg = _error(raw)
    assert "train.mnist.lenet5.epochs" in msg and repr(bad) in msg


@pytest.mark.parametrize("key,bad", [
    ("head_epochs", -1), ("head_epochs", 6), ("unfrozen_lr", 0), ("input_size", 8), ("pretrained", "yes"),
])
def test_bad_transfer_settings_are_rejected(key, bad):
    raw = real_params_dict()
    raw["train"]["crack"]["resnet18_progressive"][key] = bad  # 6 epochs: head_epochs must be < 6
    msg = _error(raw)
    assert f"train.crack.resnet18_progressive.{key}" in msg and repr(bad) in msg


@pytest.mark.parametrize("key,bad", [("image_size", 8), ("test_fraction", 0.8), ("limit", 5)])
def test_bad_crack_prepare_settings_are_rejected(key, bad):
    raw = real_params_dict()
    raw["prepare"]["crack"][key] = bad
    msg = _error(raw)
    assert f"prepare.crack.{key}" in msg and repr(bad) in msg


def test_bad_choice_lists_the_choices():
    raw = real_params_dict()
    raw["train"]["mnist"]["mlp"]["optimizer"] = "rmsprop"
    msg = _error(raw)
    assert "train.mnist.mlp.optimizer" in msg and "sgd" in msg and "adam" in msg


def test_override_with_an_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="prepare.mnist.val_fracton"):
        merge_overrides(real_params_dict(), {"prepare": {"mnist": {"val_fracton": 0.2}}})


def test_cli_rejects_bad_params_before_any_work(tmp_path):
    raw = real_params_dict()
    raw["train"]["mnist"]["lenet5"]["epochs"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for argv in (["download"], ["train", "--dataset", "mnist", "--model", "lenet5"]):
        proc = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode == 2
        assert "train.mnist.lenet5.epochs: got -3" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_cli_unknown_model(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(real_params_dict()))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--dataset", "mnist", "--model", "vgg17"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown model 'vgg17'" in proc.stderr and "lenet5" in proc.stderr


def _apply_profile(tmp_path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "profile", name], cwd=tmp_path,
                          capture_output=True, text=True)


def _profile_workspace(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    for profile in (REPO / "profiles").glob("*.yaml"):
        (tmp_path / "profiles" / profile.name).write_text(profile.read_text())


def test_profile_keeps_comments_and_validates(tmp_path):
    _profile_workspace(tmp_path)
    (tmp_path / "profiles" / "typo.yaml").write_text("train: {mnist: {lenet5: {epochz: 1}}}\n")
    bad = _apply_profile(tmp_path, "typo")
    assert bad.returncode == 2 and "epochz" in bad.stderr
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert _apply_profile(tmp_path, "full").returncode == 0
    text = (tmp_path / "params.yaml").read_text()
    assert "# lab-C exercise 2" in text  # comments survive
    merged = load_params(tmp_path / "params.yaml")
    # The sources' sizes: lab-A's 224x224 on the whole split, ResNet-18 from ImageNet weights.
    assert merged.train_config("mnist", "vgg16").input_size == 224
    assert merged.train_config("mnist", "vgg16").train_subset is None
    assert merged.train_config("crack", "resnet18_finetune").pretrained
    # The recipe itself is the default's.
    default = load_params(REPO / "params.yaml")
    assert merged.train_config("mnist", "vgg16").lr == default.train_config("mnist", "vgg16").lr


def test_source_profile_restores_each_sources_own_settings(tmp_path):
    _profile_workspace(tmp_path)
    assert _apply_profile(tmp_path, "source").returncode == 0
    merged = load_params(tmp_path / "params.yaml")
    logreg = merged.train_config("mnist", "logreg")  # lab-C: SGD 0.01, batch 64, 3 epochs
    assert (logreg.optimizer, logreg.lr, logreg.batch_size, logreg.epochs) == ("sgd", 0.01, 64, 3)
    keras = merged.train_config("mnist", "keras_cnn2")  # lab-B: Adam, batch 32, 20 epochs, patience 5
    assert (keras.optimizer, keras.lr, keras.batch_size, keras.epochs, keras.patience) == ("adam", 0.001, 32, 20, 5)
    for model in merged.models("mnist"):
        cfg = merged.train_config("mnist", model)
        assert (cfg.schedule, cfg.augment, cfg.label_smoothing, cfg.ema_decay, cfg.grad_clip, cfg.train_subset) == \
            ("constant", False, 0.0, None, None, None), model
    assert merged.train_config("crack", "resnet18_feature").pretrained


def test_a_model_on_a_dataset_it_does_not_serve_is_refused():
    raw = real_params_dict()
    raw["train"]["mnist"]["crack_cnn"] = raw["train"]["crack"]["crack_cnn"]
    assert "train.mnist.crack_cnn: model 'crack_cnn' trains on crack and on image folders only" in _error(raw)
    # The deep models' builders serve both datasets.
    raw = real_params_dict()
    raw["train"]["crack"]["tiny_resnet"] = raw["train"]["mnist"]["tiny_resnet"]
    assert parse_params(raw).train_config("crack", "tiny_resnet").schedule == "onecycle"


@pytest.mark.parametrize("where,bad", [
    ("top", []), ("top", [12, 12]), ("top", [-1]), ("top", "12"), ("top", [1.5]),
    ("model", []), ("model", [3, 3]),
])
def test_bad_seed_lists_are_rejected(where, bad):
    raw = real_params_dict()
    if where == "top":
        raw["seeds"], key = bad, "seeds"
    else:
        raw["train"]["mnist"]["cnn1"]["seeds"], key = bad, "train.mnist.cnn1.seeds"
    msg = _error(raw)
    assert key in msg and ("list" in msg or "integer" in msg)


def test_a_models_own_seeds_replace_the_top_level_list():
    raw = real_params_dict()
    raw["seeds"] = [1, 2, 3]
    raw["train"]["mnist"]["cnn1"]["seeds"] = [7]
    params = parse_params(raw)
    assert params.seeds_for("mnist", "cnn1") == (7,)
    assert params.seeds_for("mnist", "lenet5") == (1, 2, 3)
