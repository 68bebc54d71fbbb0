"""`pipeline stages`: writes dvc.yaml, the pipeline DAG, from params.yaml's `datasets` and models.

    pipeline stages            # after adding or removing a dataset in params.yaml
    pipeline stages --check    # fails when dvc.yaml is not what params.yaml makes (CI, tests)

DVC has no conditionals, and a `foreach` over `train.<dataset>` fails when that section is
missing; so the stages are written from the params instead: a dataset listed in `datasets` gets
its download, prepare, train_<dataset>, evaluate_<dataset> and register stages, a dataset left
out gets none. Each stage keeps its DVC name (download@mnist, train_crack@crack_cnn, ...) and
`foreach` over the params, so `dvc repro`, `dvc exp run -S train.mnist.cnn1.lr=...` (a new model
under train.<dataset> too) and dvc.lock work as before; only adding or removing a dataset needs
this command first, and the report stage refuses to run while a listed dataset has no stages.

Code deps: every project module the stage's command imports, as the packages that hold them;
tests/test_dag_deps.py computes the imports and fails when a dep is missing or unused. The
downloads and splits import no model: a change to a model's code re-runs that model's stages,
the report and the registration, never the data stages.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError, Params
from pipeline.data.datasets import get_dataset

log = logging.getLogger(__name__)
DVC_FILE = Path("dvc.yaml")
HEADER = ("# Written by `pipeline stages` from params.yaml (`datasets` and `train`): edit params.yaml and\n"
          "# run it, never this file. What each stage does: pipeline/stages.py and pipeline/<stage>.py.\n")

# pipeline/data whole: the dataset registry imports the modules it finds there, not named in any import.
DATA_DEPS = ["pipeline/artifacts.py", "pipeline/errors.py", "pipeline/config", "pipeline/data"]
MODEL_DEPS = [*DATA_DEPS, "pipeline/engine", "pipeline/models", "pipeline/speedups.py"]


def dataset_stages(params: Params) -> dict[str, Any]:
    """download, prepare: one per listed dataset (foreach over `datasets`)."""
    download_foreach, download_param, name = _each_dataset(params, "download")
    prepare_foreach, prepare_param, prepared = _each_dataset(params, "prepare")
    return {
        "download": {"foreach": download_foreach, "do": {
            "cmd": f"pipeline download --dataset {name}",
            "deps": ["pipeline/download.py", *DATA_DEPS],
            "params": [download_param],
            "outs": [f"data/{name}/raw"],
        }},
        "prepare": {"foreach": prepare_foreach, "do": {
            "cmd": f"pipeline prepare --dataset {prepared}",
            "deps": [f"data/{prepared}/raw", "pipeline/prepare.py", *DATA_DEPS],
            "params": [prepare_param],
            # prepare_report.json: what the split kept and skipped, a report of the data rather than
            # of a model, so it stays out of `dvc metrics show`'s model tables.
            "outs": [f"data/{prepared}/prepared.pt", f"data/{prepared}/prepare_report.json"],
        }},
    }


def _each_dataset(params: Params, section: str) -> tuple[Any, str, str]:
    """(foreach, the stage's param, how the stage names its dataset) for a data stage.

    DVC fails at once on a param params.yaml lacks, and a dataset may leave its section out (a
    declared folder's prepare settings all default): then the foreach maps each dataset to the
    param it has (its section, else its download entry, else the `datasets` list), and the stage
    names its dataset by the key. The names of the stages (download@<name>) are the same.
    """
    defaulted = getattr(params, section).defaulted
    if not defaulted & set(params.datasets):
        return "${datasets}", f"{section}.${{item}}", "${item}"
    chosen = {}
    for dataset in params.datasets:
        given = [f"{s}.{dataset}" for s in (section, "download")
                 if dataset in getattr(params, s) and dataset not in getattr(params, s).defaulted]
        chosen[dataset] = {"param": (given or ["datasets"])[0]}
    return chosen, "${item.param}", "${key}"


def model_stages(params: Params, dataset: str) -> dict[str, Any]:
    """train_<dataset>, evaluate_<dataset>: one per model of train.<dataset> (foreach)."""
    record = get_dataset(dataset)
    # serve: the request limits the logged model carries (its model.json).
    evaluate_params = ["runtime.eval_batch_size", "runtime.cuda", "seeds", f"train.{dataset}.${{key}}", "serve"]
    if "evaluate" in record.sections and params.evaluate.get(dataset) is not None:
        evaluate_params.append(f"evaluate.{dataset}")
    plots: list[Any] = [{f"metrics/{dataset}/predictions/${{key}}.csv": {
        "cache": False, "template": "confusion", "x": "predicted", "y": "actual"}}]
    if _binary(params, dataset):
        plots += [{f"metrics/{dataset}/roc/${{key}}.csv": {"cache": False, "template": "simple", "x": "fpr",
                                                         "y": "tpr"}},
                  {f"metrics/{dataset}/pr/${{key}}.csv": {"cache": False, "template": "simple", "x": "recall",
                                                        "y": "precision"}}]
    return {
        f"train_{dataset}": {"foreach": f"${{train.{dataset}}}", "do": {
            "cmd": f"pipeline train --dataset {dataset} --model ${{key}}",
            "deps": [f"data/{dataset}/prepared.pt", "pipeline/train.py", *MODEL_DEPS, "pipeline/tracking"],
            "params": ["runtime", "seeds", f"train.{dataset}.${{key}}"],
            "outs": [f"models/{dataset}/${{key}}"],  # seed<k>.pt per seed
            "plots": [{f"metrics/{dataset}/curves/${{key}}": {"cache": False, "x": "epoch", "y": "val_accuracy"}}],
        }},
        f"evaluate_{dataset}": {"foreach": f"${{train.{dataset}}}", "do": {
            "cmd": f"pipeline evaluate --dataset {dataset} --model ${{key}}",
            "deps": [f"data/{dataset}/prepared.pt", f"models/{dataset}/${{key}}", "pipeline/evaluate.py", *MODEL_DEPS,
                     "pipeline/reporting/figures.py", "pipeline/reporting/stats.py", "pipeline/tracking"],
            "params": evaluate_params,
            # The mean over the seeds; each seed's run; the first seed's per-class scores and plots.
            "metrics": [{f"metrics/{dataset}/${{key}}.json": {"cache": False}}],
            "outs": [{f"metrics/{dataset}/seeds/${{key}}.json": {"cache": False}},
                     {f"metrics/{dataset}/per_class/${{key}}.json": {"cache": False}}],
            "plots": plots,
        }},
    }


def final_stages() -> dict[str, Any]:
    return {
        # Reads every listed dataset's metrics, checkpoints and test images; logs each model's
        # figures to its MLflow run. Whole folders: DVC cannot list a path per dataset outside a
        # foreach (so metrics/registry/ makes it run after register).
        "report": {
            "cmd": "pipeline report",
            "deps": ["metrics", "models", "data", "pipeline/report.py", *MODEL_DEPS, "pipeline/reporting",
                     "pipeline/selection.py", "pipeline/tracking"],
            "params": ["datasets", "train", "seeds"],
            "outs": ["reports"],
        },
        # The dataset's best model on validation becomes models:/<dataset>-classifier@champion;
        # metrics/registry/<dataset>.json records it (a side effect DVC cannot see).
        "register": {"foreach": "${datasets}", "do": {
            "cmd": "pipeline register --dataset ${item}",
            "deps": ["metrics/${item}", "pipeline/register.py", "pipeline/selection.py", *DATA_DEPS,
                     "pipeline/tracking"],
            "params": ["train.${item}"],  # the candidates: removing a model re-registers
            "outs": [{"metrics/registry/${item}.json": {"cache": False}}],
        }},
    }


def pipeline_yaml(params: Params) -> dict[str, Any]:
    stages = dataset_stages(params)
    for dataset in params.datasets:
        stages.update(model_stages(params, dataset))
    stages.update(final_stages())
    plots = []
    for dataset in params.datasets:  # comparisons a dataset's sources draw, of models it trains
        for title, files in get_dataset(dataset).options.get("plots", {}).items():
            models = set(params.models(dataset))
            if all(model in models for model in files):
                plots.append({title: {"template": "linear", "x": "epoch", "y": {
                    f"metrics/{dataset}/curves/{model}/seed{params.seeds[0]}.csv": column
                    for model, column in files.items()}}})
    return {"stages": stages, **({"plots": plots} if plots else {})}


def render(params: Params) -> str:
    return HEADER + yaml.safe_dump(pipeline_yaml(params), sort_keys=False, width=120)


def main(params: Params, check: bool = False, path: Path = DVC_FILE) -> None:
    text = render(params)
    if check:
        current = path.read_text() if path.is_file() else ""
        if current != text:
            raise ConfigError(f"{path} does not match params.yaml's datasets and models: run `pipeline stages` "
                              "to write it (it is generated; edit params.yaml instead)")
        return
    path.write_text(text)
    log.info("wrote %s: stages of %s", path, ", ".join(params.datasets))


def _binary(params: Params, dataset: str) -> bool:
    """Whether the evaluate stage writes ROC and precision-recall curves: a binary dataset's.
    A declared folder is binary with two class folders, counted in its local source or prepared data."""
    record = get_dataset(dataset)
    if record.fixed_binary is not None or record.fixed_class_names is not None:
        return record.binary
    from pipeline.data import imagefolder

    return imagefolder.class_count(record, params) == 2
