"""Stage `prepare`: decode the raw files once and split them.

    pipeline prepare --dataset mnist       # writes data/mnist/prepared.pt and prepare_report.json
    pipeline prepare --dataset crack       # writes data/crack/prepared.pt and prepare_report.json

Output: uint8 image tensors and int64 labels for train / val / test, so that training never
decodes an image, and the data version that identifies them; how each dataset splits is its own
kind's (pipeline.data.mnist, pipeline.data.imagefolder). The test split is held out here and selects
nothing downstream.
"""
from __future__ import annotations

import json
import logging

import torch

from pipeline import artifacts
from pipeline.config import Params
from pipeline.data.datasets import get_dataset

log = logging.getLogger(__name__)


def main(params: Params, dataset: str | None = None) -> None:
    dataset = dataset or params.datasets[0]
    splits, report = get_dataset(dataset).prepare(params, artifacts.raw_dir(dataset))
    target = artifacts.prepared_file(dataset)
    with artifacts.atomic_path(target) as tmp:
        torch.save(splits, tmp)
    artifacts.write_text(artifacts.prepare_report_file(dataset), json.dumps(report, indent=2) + "\n")
    log.info("%s: train %d, val %d, test %d images (data version %s) -> %s", dataset,
             *(len(splits[f"{part}_y"]) for part in ("train", "val", "test")), splits["data_version"], target)
