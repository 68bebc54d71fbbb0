"""`pipeline <stage>`: parses arguments, loads the typed config, calls the stage's main().

    pipeline download --dataset mnist
    pipeline prepare  --dataset mnist
    pipeline train    --dataset mnist --model lenet5
    pipeline evaluate --dataset mnist --model lenet5
    pipeline report
    pipeline register --dataset mnist   # its best model -> models:/mnist-classifier@champion
    pipeline predict --dataset mnist [--model lenet5] [--json] digit.png ...
    pipeline serve --dataset mnist [-p 5001]  # the champion, bounded (pipeline/tracking/bounded_server.py)
    pipeline models [--json]
    pipeline stages [--check]  # dvc.yaml's stages from params.yaml `datasets` and models
    pipeline profile full      # merge profiles/full.yaml into params.yaml
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path

from pipeline import download, stages
from pipeline.config import ConfigError, load_params
from pipeline.config.profiles import apply_profile
from pipeline.data.datasets import get_dataset
from pipeline.engine import signals
from pipeline.errors import PipelineError
from pipeline.speedups import exit_now
from pipeline.tracking.run_log import RunLog

# Imported inside the functions below, and only there: what pulls in torch, the model zoo or
# mlflow (the models, prepare, train, evaluate, report, register, predict, serve), which
# `pipeline download` must not pay for (tests/test_stage_imports.py).

DATASET_HELP = "a name of params.yaml `datasets` (default: its first)"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in ("download", "prepare"):
        p = sub.add_parser(stage)
        p.add_argument("--dataset", help=DATASET_HELP)
    for stage in ("train", "evaluate"):
        p = sub.add_parser(stage)
        p.add_argument("--dataset", required=True, help="a name of params.yaml `datasets`")
        p.add_argument("--model", required=True, help="a name from `pipeline models`")
    sub.add_parser("report")
    p = sub.add_parser("register", help="register a dataset's best model as <dataset>-classifier@champion")
    p.add_argument("--dataset", help="default: each dataset of params.yaml `datasets`")
    p = sub.add_parser("predict", help="classify image files (PNG, JPEG)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--model", help="a model of params.yaml (default: the registry's champion)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--allow-small", action="store_true",
                   help="classify images under half the training images' side with a warning, "
                        "instead of refusing them")
    p = sub.add_parser("serve", help="serve a logged model (default: the dataset's champion) with bounded "
                                     "requests, as `mlflow models serve` answers")
    p.add_argument("--dataset", help=DATASET_HELP)
    p.add_argument("--model-uri", help="runs:/<run_id>/model or models:/<name>@<alias> (default: "
                                       "models:/<dataset>-classifier@champion)")
    p.add_argument("-H", "--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("-p", "--port", type=int, default=5001)
    p.add_argument("-w", "--workers", type=int, default=1, choices=range(1, 17), metavar="1..16",
                   help="processes, each with its own copy of the model")
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true", help="a JSON list of {name, dataset, params}")
    p = sub.add_parser("stages", help="write dvc.yaml's stages for params.yaml `datasets` and models")
    p.add_argument("--check", action="store_true", help="fail if dvc.yaml is not what would be written")
    p = sub.add_parser("profile", help="merge profiles/<name>.yaml into the params file")
    p.add_argument("name", help="e.g. full or source")
    return parser


def run(args: argparse.Namespace) -> int | None:
    """Runs the stage; an exit code where the stage ran in child processes."""
    if args.stage == "models":
        from pipeline.models.listing import print_models

        print_models(as_json=args.json)
        return
    if args.stage == "profile":
        from pipeline.models.checks import check_models

        apply_profile(args.name, args.params, validate=check_models)
        return

    if args.stage == "train":
        return _train(args)
    if args.stage == "evaluate":
        return _evaluate(args)
    params = _load_params(args)
    if args.stage == "stages":
        stages.main(params, check=args.check)
        return
    if args.stage == "download":
        download.main(params, args.dataset)
    elif args.stage == "prepare":
        from pipeline import prepare

        prepare.main(params, args.dataset)
    elif args.stage == "report":
        from pipeline import report

        _check_stages(params)
        report.main(params)
    elif args.stage == "register":
        from pipeline import register

        register.main(params, args.dataset)
    elif args.stage == "predict":
        from pipeline import predict

        predict.main(params, args.dataset, args.images, args.model, args.json, args.allow_small)
    elif args.stage == "serve":
        from pipeline.tracking.bounded_server import serve
        from pipeline.tracking.registry import champion_uri

        serve(args.model_uri or champion_uri(args.dataset or params.datasets[0]), args.host, args.port,
              args.workers)


def _train(args: argparse.Namespace) -> int | None:
    loaded = _check_schema(args)
    # The MLflow child first: it checks and opens the store (2 s of one core) while this process
    # imports torch (validating the params does), loads the data and builds the model. Under
    # torchrun, rank 0 alone tracks; a launching process's child is stopped unused.
    tracks = os.environ.get("RANK", "0") == "0"
    with RunLog(args.dataset) if tracks else contextlib.nullcontext() as run_log:
        params = _load_params(args, loaded)
        spec = _model_spec(params, args)
        from pipeline import train
        from pipeline.engine import distributed

        if distributed.needs_launch(params.runtime.distributed):
            if run_log:
                run_log.close()  # torchrun's rank 0 starts its own
            return distributed.launch(params, args.params, args.dataset, args.model)
        train.main(params, args.dataset, spec, run_log)
    return None


def _evaluate(args: argparse.Namespace) -> None:
    loaded = _check_schema(args)
    # The MLflow child first, as for train: it opens the store and imports what logging a model
    # takes while this process imports torch and scores the test set.
    with RunLog(args.dataset, evaluate=True) as run_log:
        params = _load_params(args, loaded)
        spec = _model_spec(params, args)
        from pipeline import evaluate

        evaluate.main(params, args.dataset, spec, run_log)


def _check_schema(args: argparse.Namespace):
    """params.yaml's own checks (no torch: 0.3 s cold), before the MLflow child starts: the child
    opens, and on a new store creates, mlflow.db faster than a bad value is found, which
    left a store behind a stage that wrote nothing else. The models' checks, which import torch,
    still run beside the child (_model_spec)."""
    return load_params(args.params)


# Stages that read no model's settings, and so import no model (nor torch, for download).
MODEL_FREE = ("download", "prepare")


def _load_params(args: argparse.Namespace, loaded=None):
    """The typed params, before any stage work. Stages that read the whole zoo (the report, the
    registration, ...) check every model's settings against its registry entry; train and evaluate
    check their own model's (_model_spec); download and prepare none."""
    params = loaded or load_params(args.params)  # loaded: _check_schema's, read once
    _check_listed(params, args)
    if args.stage not in (*MODEL_FREE, "train", "evaluate"):
        from pipeline.models.checks import check_models

        check_models(params, str(args.params))
        if getattr(args, "model", None):  # predict's: a name no model has gets the registry's list
            from pipeline.models import get_model_spec

            get_model_spec(args.model)
    return params


def _model_spec(params, args: argparse.Namespace):
    """The stage's model, looked up in the registry once (an unknown name fails with the list and
    the closest match) and its settings checked; the stage receives the spec."""
    from pipeline.models import get_model_spec
    from pipeline.models.checks import check_model

    spec = get_model_spec(args.model)
    check_model(params, args.dataset, spec, str(args.params))
    return spec


def _check_listed(params, args: argparse.Namespace) -> None:
    """A dataset's stages run only while params.yaml lists it (predict reads a registry instead)."""
    if hasattr(args, "dataset") and args.dataset is None and args.stage != "register":
        args.dataset = params.datasets[0]
    dataset = getattr(args, "dataset", None)
    if dataset is not None:
        try:
            get_dataset(dataset)
        except ValueError as e:
            raise ConfigError(f"--dataset: {e}") from None
    if args.stage != "predict" and dataset is not None and dataset not in params.datasets:
        raise ConfigError(f"{args.params}: datasets is {list(params.datasets)}, without {dataset}: "
                          f"add {dataset} to it to run its stages")


def _check_stages(params) -> None:
    """A dataset added to params.yaml without `pipeline stages` has no stages in dvc.yaml: say so
    rather than report on data that was never made."""
    dvc_file = Path("dvc.yaml")
    if not dvc_file.is_file():
        return
    import yaml

    stages = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {})
    missing = [d for d in params.datasets if f"train_{d}" not in stages]
    if missing:
        raise ConfigError(f"{dvc_file} has no stages for {', '.join(missing)} of params.yaml `datasets`: run "
                          "`pipeline stages` (it writes dvc.yaml from params.yaml), then `dvc repro`")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = get_args_parser().parse_args(argv)
    start = time.perf_counter()
    received: list[int] = []  # the signal that stopped the stage (pipeline/engine/signals.py)
    with signals.stopping(received):
        try:
            code = run(args)
        except KeyboardInterrupt as e:  # Terminated (SIGTERM) too
            return _interrupted(args, received, e)
        except Exception as e:
            if received:  # a library turned the KeyboardInterrupt into an error of its own
                return _interrupted(args, received, e)
            if not isinstance(e, (PipelineError, FileNotFoundError)):
                from pipeline.artifacts import disk_full

                if not disk_full(e):
                    raise
                # A write outside the pipeline's own atomic files (the tracking store, a library's cache).
                where = getattr(e, "filename", None) or "a file"
                e = f"{where}: the disk is full ({str(e).splitlines()[0][:200]}). Free some space and run it again"
            print(f"pipeline {args.stage}: error: {e}", file=sys.stderr)
            return 2
    _log_usage(args, time.perf_counter() - start)
    return code or 0


def _interrupted(args: argparse.Namespace, received: list[int], error: BaseException) -> int:
    """One line saying what the signal left behind; 130 for Ctrl-C, 143 for SIGTERM."""
    signum = received[0] if received else (signal.SIGTERM if isinstance(error, signals.Terminated)
                                           else signal.SIGINT)
    train = sys.modules.get("pipeline.train")
    stopped = getattr(train, "STOPPED_RUNS", [])  # (run id, status) of each run it ended on the way out
    if args.stage == "train" and stopped:
        run_id, status = stopped[-1]
        what = (f"the seed in training wrote no checkpoint and its MLflow run {run_id} is marked {status}; "
                "run the stage again to go on from its last finished epoch")
    elif args.stage == "train":
        what = ("no MLflow run was open (every finished seed kept its checkpoint and FINISHED run); run the "
                "stage again to train the seeds left")
    else:
        what = "no output was written (each is written whole or not at all); run it again"
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    print(f"pipeline {args.stage}: {how}: {what}", file=sys.stderr)
    return signals.EXIT_CODES[signum]


def _log_usage(args: argparse.Namespace, seconds: float) -> None:
    """One line per stage run, so a `dvc repro` log shows what each stage cost."""
    if args.stage in ("models", "profile", "predict", "serve", "stages"):
        return
    # ru_maxrss is in KiB on Linux; children: the torchrun workers of a multi-process run.
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    what = " ".join(filter(None, [args.stage, getattr(args, "dataset", None), getattr(args, "model", None)]))
    logging.getLogger("pipeline").info("usage: %s: %.1f s wall, peak memory %.0f MiB", what, seconds, peak / 1024)


def entry() -> None:
    """The `pipeline` command."""
    exit_now(main())


if __name__ == "__main__":
    entry()
