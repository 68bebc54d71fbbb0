"""Stage `download`: fetch and verify the raw dataset files.

    pipeline download --dataset mnist      # writes data/mnist/raw/*.gz
    pipeline download --dataset crack      # writes data/crack/raw/{Negative,Positive}/*.jpg
    pipeline download --dataset decks      # a declared image folder: data/decks/raw/<class>/

Where the files come from and how they are checked is the dataset's kind's (its record in
pipeline.data.datasets): MNIST's official files by md5 (pipeline.data.mnist); an image folder
from a folder, .zip, URL or Kaggle (pipeline.data.imagefolder), its images checked when
`prepare` decodes them. The download is built in a temp folder: a failure leaves no data/.
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
