"""The Candlestick research's timm models, never pretrained, for `candle` images.

timm is imported on first use (through ``timm_compat``), so listing the zoo stays cheap.
"""

from __future__ import annotations

from torch import nn

from ml.zoo.registry import ModelDefaults, register_model
from ml.zoo.timm_compat import import_timm

CANDLE_64 = ModelDefaults(
    family="timm", input_style="candle", image_size=(64, 64), in_chans=3, window=15
)


@register_model("edgenext", CANDLE_64)
def edgenext(**kwargs) -> nn.Module:
    return build_timm("edgenext_xx_small", **kwargs)


@register_model("mobilenetv3", CANDLE_64)
def mobilenetv3(**kwargs) -> nn.Module:
    return build_timm("mobilenetv3_small_100", **kwargs)


@register_model("ghostnet", CANDLE_64)
def ghostnet(**kwargs) -> nn.Module:
    return build_timm("ghostnet_100", **kwargs)


@register_model("levit", CANDLE_64)
def levit(**kwargs) -> nn.Module:
    # LeViT's attention biases are sized for one resolution: build it for the images it gets.
    return build_timm("levit_128s", fixed_resolution=True, **kwargs)


def build_timm(
    timm_name: str,
    *,
    in_chans: int,
    num_classes: int,
    image_size: tuple[int, int],
    fixed_resolution: bool = False,
    **overrides,
) -> nn.Module:
    """``timm.create_model`` with random weights. A convolutional model takes any image size; a
    ``fixed_resolution`` one is built for ``image_size`` (timm's ``img_size``)."""
    if fixed_resolution:
        overrides["img_size"] = image_size
    timm = import_timm()
    return timm.create_model(
        timm_name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **overrides
    )
