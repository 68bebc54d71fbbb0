"""`pipeline <stage>`: parses arguments, loads the typed config, calls the stage's main().

    pipeline download --dataset mnist
    pipeline prepare  --dataset mnist
    pipeline train    --dataset mnist --model lenet5
    pipeline evaluate --dataset mnist --model lenet5
    pipeline report
    pipeline models [--json]
    pipeline profile ci        # merge profiles/ci.yaml into params.yaml
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.config import DATASETS, ConfigError


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in ("download", "prepare"):
        p = sub.add_parser(stage)
        p.add_argument("--dataset", choices=DATASETS, default="mnist")
    for stage in ("train", "evaluate"):
        p = sub.add_parser(stage)
        p.add_argument("--dataset", choices=DATASETS, default="mnist")
        p.add_argument("--model", required=True, help="a name from `pipeline models`")
    sub.add_parser("report")
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true", help="a JSON list of {name, dataset, params}")
    p = sub.add_parser("profile", help="merge profiles/<name>.yaml into the params file")
    p.add_argument("name", help="e.g. ci")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.stage == "models":
        from pipeline.models.listing import print_models

        print_models(as_json=args.json)
        return
    if args.stage == "profile":
        from pipeline.profiles import apply_profile

        apply_profile(args.name, args.params)
        return

    from pipeline.config import load_params

    params = load_params(args.params)
    if args.stage == "download":
        from pipeline import download

        download.main(params, args.dataset)
    elif args.stage == "prepare":
        from pipeline import prepare

        prepare.main(params, args.dataset)
    elif args.stage == "train":
        from pipeline import train

        train.main(params, args.dataset, args.model)
    elif args.stage == "evaluate":
        from pipeline import evaluate

        evaluate.main(params, args.dataset, args.model)
    elif args.stage == "report":
        from pipeline import report

        report.main(params)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = get_args_parser().parse_args(argv)
    from pipeline.data.mnist import DataError
    from pipeline.models import UnknownModelError
    from pipeline.tracking import TrackingError

    try:
        run(args)
    except (ConfigError, DataError, FileNotFoundError, UnknownModelError, TrackingError) as e:
        # Expected user-facing failures: one clear line, no traceback.
        print(f"pipeline {args.stage}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
