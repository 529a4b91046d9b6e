"""Small CNNs written here: ``custom`` for `candle` images and ``jkx`` for `ohlc_bar` images.

``jkx`` follows Jiang, Kelly & Xiu, "(Re-)Imag(in)ing Price Trends" (2023): blocks of a 5×3
convolution, batch norm, LeakyReLU(0.01) and a 2×1 max-pool (height halves, width stays), 64
channels doubling per block, the flattened features through dropout 0.5 into a linear head, Xavier
initialisation. The paper uses 2 / 3 / 4 blocks for its 5 / 20 / 60-day images, 32 / 64 / 96 rows
high; our windows are 5 / 15 / 30 candles, which ``ml.rendering`` draws 32 / 64 / 96 rows high, so
the number of blocks follows the image height (``jkx_blocks``). Unlike the paper, every block keeps
stride 1 (the paper strides and dilates the first convolution of its larger images).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from dagster_project.core.errors import InvalidRequestError
from ml.rendering import CandleStyle, OhlcBarStyle
from ml.zoo.registry import ModelDefaults, register_model

DEFAULT_WINDOW = 15  # candles per image; the middle of our 5 / 15 / 30 windows


@register_model(
    "custom",
    ModelDefaults(
        family="cnn",
        input_style="candle",
        image_size=CandleStyle().size_for(DEFAULT_WINDOW),
        in_chans=CandleStyle.channels,
        window=DEFAULT_WINDOW,
    ),
)
def custom(*, in_chans: int, num_classes: int, image_size: tuple[int, int], **overrides):
    return CandleCNN(in_chans, num_classes, image_size, **overrides)


@register_model(
    "jkx",
    ModelDefaults(
        family="cnn",
        input_style="ohlc_bar",
        image_size=OhlcBarStyle().size_for(DEFAULT_WINDOW),
        in_chans=OhlcBarStyle.channels,
        window=DEFAULT_WINDOW,
    ),
)
def jkx(*, in_chans: int, num_classes: int, image_size: tuple[int, int], **overrides):
    return JKXNet(in_chans, num_classes, image_size, **overrides)


def jkx_blocks(height: int) -> int:
    """The paper's depth for an image ``height`` rows high: 2 up to 32 rows, 3 up to 64, else 4."""
    return 2 if height <= 32 else 3 if height <= 64 else 4


class CandleCNN(nn.Module):
    """Conv 3×3 → batch norm → ReLU → 2×2 max-pool per block, global average pool, linear head."""

    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        image_size: tuple[int, int],
        channels: Sequence[int] = (16, 32, 64, 128),  # one block per entry
        dropout: float = 0.2,  # before the head
    ) -> None:
        super().__init__()
        _require_min_size(image_size, (2 ** len(channels),) * 2, "custom")
        widths = [in_chans, *channels]
        self.features = nn.Sequential(
            *(_candle_block(c_in, c_out) for c_in, c_out in pairwise(widths))
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(widths[-1], num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class JKXNet(nn.Module):
    """Jiang–Kelly–Xiu's CNN; built for one image size, since its head sees every position."""

    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        image_size: tuple[int, int],
        blocks: int | None = None,  # None: jkx_blocks(image height)
        dropout: float = 0.5,  # before the head, as in the paper
    ) -> None:
        super().__init__()
        height, width = image_size
        blocks = blocks or jkx_blocks(height)
        _require_min_size(image_size, (2**blocks, 1), f"jkx with {blocks} blocks")
        widths = [in_chans, *(64 * 2**i for i in range(blocks))]
        self.features = nn.Sequential(
            *(_jkx_block(c_in, c_out) for c_in, c_out in pairwise(widths))
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(widths[-1] * (height // 2**blocks) * width, num_classes),
        )
        self.apply(_xavier_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _candle_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def _jkx_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=(5, 3), padding=(2, 1)),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.01, inplace=True),
        nn.MaxPool2d((2, 1)),
    )


def _xavier_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def _require_min_size(image_size: tuple[int, int], minimum: tuple[int, int], model: str) -> None:
    if image_size[0] < minimum[0] or image_size[1] < minimum[1]:
        raise InvalidRequestError(
            f"{model} needs images of at least {minimum[0]}×{minimum[1]} (height × width), "
            f"got {image_size[0]}×{image_size[1]}"
        )
