"""U-Net (Ronneberger et al. 2015), the segmenter of the paper (section 3.1), in pure PyTorch.

Encoder: ``depth`` stages of (max-pool 2x, two 3x3 conv + BatchNorm + ReLU), channels doubling
from ``width``; decoder: bilinear 2x upsampling, concatenation with the skip connection, two
3x3 convs. ``width=64, depth=4`` is the classic network (31.4 M parameters); ``width=16`` is the
small, fast variant (2.0 M), ``width=8`` a tiny one (0.5 M).

Input: (N, 3, S, S) float32 RGB in [0, 1] (the ImageNet normalisation is built in), S a
multiple of ``2 ** depth``. Output: (N, num_classes, S, S) float32 logits.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BatchNorm -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Bilinear 2x upsampling of the deeper map, concatenated with the skip, then a DoubleConv."""

    def __init__(self, cin_deep: int, cin_skip: int, cout: int):
        super().__init__()
        self.conv = DoubleConv(cin_deep + cin_skip, cout)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, deep], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` down/up stages and ``width`` channels at full resolution."""

    def __init__(self, num_classes: int = 5, width: int = 64, depth: int = 4):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError("width and depth must be positive")
        self.num_classes, self.width, self.depth = int(num_classes), int(width), int(depth)
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(3, chans[0])
        self.downs = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(chans[i + 1], chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)

    def config(self) -> Dict[str, Any]:
        """Architecture hyper-parameters as plain ints (stored in checkpoints)."""
        return {"num_classes": self.num_classes, "width": self.width, "depth": self.depth}


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
