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

from pipeline import paths
from pipeline.atomic import atomic_dir
from pipeline.config import Params
from pipeline.data import crack, mnist
from pipeline.data.errors import DataError

log = logging.getLogger(__name__)

WITHOUT_CRACK = (
    "To run without the crack dataset (no Kaggle credentials needed), set `datasets: [mnist]` "
    "and, under train, `crack: {}` in params.yaml, then `dvc repro` again."
)


def main(params: Params, dataset: str = "mnist") -> None:
    if dataset == "crack":
        _download_crack(params)
    else:
        _download_mnist(params, dataset)


def _download_mnist(params: Params, dataset: str) -> None:
    mirror = params.mnist_mirror()
    target = paths.raw_dir(dataset)
    log.info("downloading %s from %s", dataset, mirror or "torchvision's mirrors")
    # Built in a temp folder and renamed: a failed check leaves no partial data/ behind.
    with atomic_dir(target) as tmp:
        mnist.fetch(tmp, mirror)
    log.info("verified %d files in %s", len(mnist.FILES), target)


def _download_crack(params: Params) -> None:
    source = params.crack_source()
    kaggle_dataset = params.download.crack.kaggle_dataset
    target = paths.raw_dir("crack")
    log.info("fetching crack images from %s", source or f"Kaggle dataset {kaggle_dataset}")
    try:
        with atomic_dir(target) as tmp:
            counts = crack.fetch(tmp, source, kaggle_dataset)
    except DataError as e:
        raise DataError(f"{e}\n{WITHOUT_CRACK}") from None
    log.info("%s -> %s", ", ".join(f"{n} {cls}" for cls, n in counts.items()), target)
