"""Stage `download`: fetch and verify the raw dataset files.

    pipeline download --dataset mnist      # writes data/mnist/raw/*.gz

Source: torchvision's MNIST mirrors, or the local mirror in params.yaml `download.mnist.mirror`
(or $PIPELINE_MNIST_MIRROR). Every file is checked against the official md5 of its content.
"""
from __future__ import annotations

import logging

from pipeline import paths
from pipeline.atomic import atomic_dir
from pipeline.config import Params
from pipeline.data import mnist

log = logging.getLogger(__name__)


def main(params: Params, dataset: str = "mnist") -> None:
    mirror = params.mnist_mirror()
    target = paths.raw_dir(dataset)
    log.info("downloading %s from %s", dataset, mirror or "torchvision's mirrors")
    # Built in a temp folder and renamed: a failed check leaves no partial data/ behind.
    with atomic_dir(target) as tmp:
        mnist.fetch(tmp, mirror)
    log.info("verified %d files in %s", len(mnist.FILES), target)
