"""params.yaml -> typed, validated config: the schema (one dataclass per section, each setting
explained once), its loading, and profiles (`pipeline profile NAME`)."""
from pipeline.config.loading import PARAMS_FILE, check_device, load_params, merge_overrides, parse_params
from pipeline.config.schema import (
    ConfigError,
    CudaConfig,
    DatasetSections,
    DistributedConfig,
    Params,
    RuntimeConfig,
    TrainConfig,
)

__all__ = ["PARAMS_FILE", "ConfigError", "CudaConfig", "DatasetSections", "DistributedConfig", "Params",
           "RuntimeConfig", "TrainConfig", "check_device", "load_params", "merge_overrides", "parse_params"]
