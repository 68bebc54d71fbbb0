"""Model zoo: `create_model(name)` builds any registered model; `list_models()` names them."""
from pipeline.models.registry import (
    UnknownModelError,
    count_params,
    create_model,
    get_model_spec,
    list_models,
)

__all__ = ["UnknownModelError", "count_params", "create_model", "get_model_spec", "list_models"]
