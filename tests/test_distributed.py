"""Data-parallel training: `pipeline train` with runtime.distributed.nproc 2 runs two real gloo
processes under torchrun and matches one-process training with the same global batch."""
from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts, cli, train
from pipeline.artifacts import read_curves
from pipeline.config import ConfigError
from pipeline.engine import distributed
from tests.conftest import shrunk_params, shrunk_params_dict

MODEL, SEED = "cnn1", 12


def _settings(nproc: int) -> dict:
    # One thread per process: the two processes share the two cores without oversubscribing.
    return dict(models=[MODEL], epochs=2, runtime={"threads": 1, "distributed": {"nproc": nproc}})


def test_two_processes_match_one_process(workspace, mlflow_uri, tmp_path):
    (single,) = train.main(shrunk_params(**_settings(1)), "mnist", MODEL)
    single_curves = read_curves("mnist", MODEL, SEED)

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(shrunk_params_dict(**_settings(2)), sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--params", str(params_file), "train",
                           "--dataset", "mnist", "--model", MODEL], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--nproc_per_node=2" in proc.stderr  # it did run under torchrun
    multi = torch.load(artifacts.checkpoint_file("mnist", MODEL, SEED), weights_only=True)

    # Each step's batch is the same 64 images split 32 + 32 over the ranks, so only the order of
    # float sums differs (DDP averages two half-batch gradients). Measured on CPU: max |dw| 3.7e-7
    # after 2 epochs, validation accuracy and the curves equal to 6 decimals; bounds just above.
    weight_gap = max((multi["state_dict"][k] - w).abs().max().item() for k, w in single["state_dict"].items())
    assert weight_gap <= 1e-6
    assert abs(multi["best_val_accuracy"] - single["best_val_accuracy"]) <= 1e-6
    assert multi["best_epoch"] == single["best_epoch"]
    for one, two in zip(single_curves, read_curves("mnist", MODEL, SEED), strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert two[key] == pytest.approx(one[key], abs=1e-5), key

    # Rank 0 alone talks to MLflow: one more run, the two-process one.
    client = mlflow.MlflowClient(mlflow_uri)
    assert len(client.search_runs([client.get_experiment_by_name("mnist").experiment_id])) == 2
    run = client.get_run(multi["mlflow_run_id"])
    assert run.data.params["nproc"] == "2" and run.info.status == "FINISHED"


@pytest.mark.parametrize(("settings", "key"), [
    (dict(models=["numpy_cnn"]), "train.mnist.numpy_cnn: numpy_cnn is a NumPy model and trains in one process "
                                 "only; set runtime.distributed.nproc: 1"),
    (dict(models=[MODEL], train={"mnist": {MODEL: {"batch_size": 63}}}),
     f"train.mnist.{MODEL}.batch_size: 63 does not split evenly"),
])
def test_unsupported_multi_process_settings_fail_before_training(settings, key, tmp_path, capsys):
    raw = shrunk_params_dict(**settings)
    raw["runtime"]["distributed"] = {"nproc": 2, "backend": "auto"}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    model = settings["models"][0]
    assert cli.main(["--params", str(params_file), "train", "--dataset", "mnist", "--model", model]) == 2
    assert key in capsys.readouterr().err


def test_multi_process_settings_need_torchrun(workspace, mlflow_uri):
    params = shrunk_params(**_settings(2))
    distributed.check(params)  # valid settings...
    with pytest.raises(ConfigError, match="runtime.distributed.nproc: 2 processes are started by"):
        train.main(params, "mnist", MODEL)  # ...but this process is not one of torchrun's
    with pytest.raises(ConfigError, match="runtime.distributed.backend"):
        shrunk_params(runtime={"device": "cpu", "distributed": {"nproc": 2, "backend": "nccl"}})
