"""The model zoo's registry, in the manner of timm: every model is a name and a factory.

A family module (``timm_models``, ``cnn``) holds one small factory per variant, decorated with
``@register_model(name, ModelDefaults(...))``; ``create_model(name, ...)`` builds it and
``list_models(pattern)`` names them. ``model_defaults(name)`` gives the entry's defaults as data
for the code that renders images and trains.

The conventions every zoo model keeps (training, evaluation and ONNX export rely on them):

* input: float32 images ``(batch, in_chans, height, width)`` scaled to [0, 1] (the renderer's
  uint8 pixels / 255);
* output: logits ``(batch, num_classes)``; binary up/down uses ``num_classes=2`` (class 1 = up)
  with ``torch.nn.functional.cross_entropy``, and the probability of up is
  ``softmax(logits)[:, 1]``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from dagster_project.core.errors import InvalidRequestError

InputStyle = Literal["candle", "ohlc_bar"]  # ml.rendering's styles
ImageSize = int | tuple[int, int]  # an int n means n × n
Factory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelDefaults:
    """What a zoo entry expects unless told otherwise."""

    family: str  # the module that defines it: "timm" or "cnn"
    input_style: InputStyle  # the rendering style it is meant for
    image_size: tuple[int, int]  # (height, width) of its default input
    in_chans: int  # 3 for RGB `candle` images, 1 for `ohlc_bar`
    window: int  # candles per image that image_size is drawn for
    num_classes: int = 2  # logits per image; 2 = down/up with cross-entropy


class UnknownModelError(InvalidRequestError):
    """A model name that no zoo entry has."""


class DuplicateModelError(ValueError):
    """Two zoo entries under one name."""


class WeightsFileError(InvalidRequestError):
    """A checkpoint file that does not hold weights for the model it is loaded into."""


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    defaults: ModelDefaults


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, defaults: ModelDefaults) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(*, in_chans, num_classes, image_size, **overrides)``."""

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise DuplicateModelError(
                f"model {name!r} is already registered by {_REGISTRY[name].factory.__module__}"
            )
        _REGISTRY[name] = _Entry(factory, defaults)
        return factory

    return decorate


def create_model(
    name: str,
    *,
    in_chans: int | None = None,
    num_classes: int | None = None,
    image_size: ImageSize | None = None,
    weights_path: str | Path | None = None,
    **overrides,
) -> nn.Module:
    """Build zoo model ``name``; arguments left out take the entry's defaults.

    ``overrides`` go to the family's factory (e.g. ``drop_rate`` for timm models, ``blocks`` for
    ``jkx``). ``weights_path`` loads a state_dict saved by ``torch.save(model.state_dict())``
    from a local file: weights are never downloaded.
    """
    entry = _entry(name)
    defaults = entry.defaults
    model = entry.factory(
        in_chans=defaults.in_chans if in_chans is None else in_chans,
        num_classes=defaults.num_classes if num_classes is None else num_classes,
        image_size=image_pair(image_size) if image_size is not None else defaults.image_size,
        **overrides,
    )
    if weights_path is not None:
        load_weights(model, weights_path)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    return sorted(fnmatch.filter(_REGISTRY, pattern))


def model_defaults(name: str) -> ModelDefaults:
    return _entry(name).defaults


def image_pair(image_size: ImageSize) -> tuple[int, int]:
    """``image_size`` as (height, width); an int n is n × n."""
    pair = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and all(isinstance(side, int) and side > 0 for side in pair)
    ):
        raise InvalidRequestError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return tuple(pair)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict file into ``model``; every key must match."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path} holds a {type(state).__name__}, expected a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing, unexpected or differently shaped weights
        raise WeightsFileError(f"{path} does not fit {type(model).__name__}: {error}") from None


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None
