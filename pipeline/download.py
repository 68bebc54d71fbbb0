"""Stage `download`: fetch and verify the raw dataset files.

    pipeline download --dataset mnist      # writes data/mnist/raw/*.gz
    pipeline download --dataset crack      # writes data/crack/raw/{Positive,Negative}/*.jpg

MNIST source: torchvision's mirrors, or the local mirror in params.yaml `download.mnist.mirror`
(or $PIPELINE_MNIST_MIRROR). Every file is checked against the official md5 of its content.
Crack source: the Kaggle dataset `download.crack.kaggle_dataset` through the kaggle client (needs
Kaggle credentials), or the local folder or .zip in `download.crack.source` (or
$PIPELINE_CRACK_SOURCE). Images are checked when `prepare` decodes them. Without either, the
error says how to run MNIST alone (`datasets: [mnist]`).
"""
from __future__ import annotations

import logging

from pipeline import artifacts
from pipeline.config import Params
from pipeline.data.datasets import get_dataset

log = logging.getLogger(__name__)


def main(params: Params, dataset: str | None = None) -> None:
    dataset = dataset or params.datasets[0]
    target = artifacts.raw_dir(dataset)
    # Built in a temp folder and renamed: a failed check leaves no partial data/ behind.
    with artifacts.atomic_dir(target) as tmp:
        fetched = get_dataset(dataset).download(params, tmp)
    log.info("%s: %s -> %s", dataset, fetched, target)
