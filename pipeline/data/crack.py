"""Surface cracks (lab-C; Özgenel 2019, CC BY 4.0): an image folder (pipeline.data.imagefolder)
with a Kaggle source, Negative/ (label 0) and Positive/ (label 1), cached gray at
`prepare.crack.image_size`, and scored after its test set on 200 SDNET2018 deck photos."""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.data import imagefolder
from pipeline.data.datasets import Dataset, OtherSource, register_dataset

OTHER_SOURCE_ENV = "PIPELINE_CRACK_OTHER_SOURCE"
# Özgenel's 40,000 photos as Kaggle serves them: what download.crack.kaggle_dataset defaults to.
KAGGLE_DATASET = "arunrk7/surface-crack-detection"


def other_source(params) -> str | None:
    """evaluate.crack.other_source, or the environment variable that wins over it."""
    return os.environ.get(OTHER_SOURCE_ENV) or params.evaluate.crack.other_source


def _sdnet(params, side: int):
    from pipeline.data import sdnet

    return sdnet.load(other_source(params), side)


@dataclass(frozen=True)
class CrackEvaluateConfig:
    # A folder holding the SDNET2018 photos listed in pipeline/data/sdnet2018/SHA256SUMS (CD/ and
    # UD/, e.g. ../shared/data/sdnet2018): the evaluate stage scores every crack model on them
    # after the test set. null: crack models are not scored on another source (the log and the
    # report say so). The environment variable PIPELINE_CRACK_OTHER_SOURCE wins.
    other_source: str | None = None


DATASET = register_dataset(Dataset(
    "crack", imagefolder, {**imagefolder.SECTIONS, "evaluate": CrackEvaluateConfig},
    # Grayscale, as lab-C; (mean, std) measured on 1,000 random images of ../shared/data/crack
    # at 64x64 (0.6748, 0.1228).
    in_channels=1, fixed_class_names=("no crack", "crack"), fixed_binary=True,
    fixed_normalisation=(0.675, 0.123), pads=False, affine_augment=False, orientation_free=True,
    other_source=OtherSource(
        "SDNET2018 bridge decks", "M. Maguire, S. Dorafshan, R. J. Thomas (2018), \"SDNET2018: A "
        "concrete crack image dataset for machine learning applications\", Utah State University, "
        "doi:10.15142/T3TD19: 100 cracked and 100 uncracked 256x256 deck photos "
        "(pipeline/data/sdnet2018/PROVENANCE.md)", "CC BY 4.0",
        "decoded as the crack photos are (grayscale, Lanczos to the cached side)", _sdnet,
        setting="evaluate.crack.other_source"),
    order=1,  # after MNIST, as the sources' labs go
    environment={"download.crack.source": imagefolder.source_env_of("crack"),
                 "evaluate.crack.other_source": OTHER_SOURCE_ENV},
    offline={"download.crack.source": "crack"},
    # 400 photos cached at 32x32: a crack stage of the tests trains in seconds.
    shrink={"prepare.crack.limit": 400, "prepare.crack.image_size": 32},
    options={
        "kaggle_dataset": KAGGLE_DATASET,
        # The class folders, in label order; any other folder of the source is left out.
        "folders": ("Negative", "Positive"),
        "without": "To run without the crack dataset (no Kaggle credentials needed), set "
                   "`datasets: [mnist]` in params.yaml, then `dvc repro` again.",
    }))
