"""The model zoo: ``create_model(name, ...)`` and ``list_models()`` over every family module.

Importing the package registers every family; timm itself is imported only when a timm model is
built. See ``ml.zoo.registry`` for the input and output conventions all models keep.
"""

from ml.zoo import cnn, timm_models  # noqa: F401  (registers their models)
from ml.zoo.registry import (
    ModelDefaults,
    UnknownModelError,
    WeightsFileError,
    create_model,
    list_models,
    model_defaults,
    register_model,
)

__all__ = [
    "WeightsFileError",
    "ModelDefaults",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_defaults",
    "register_model",
]
