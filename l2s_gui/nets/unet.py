"""UNet segmentation network S_phi for 2D and 3D images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["UNet"]

_ACTIVATIONS = {
    "elu": lambda: nn.ELU(),
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
}


def _conv(ndim: int):
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]


def _conv_t(ndim: int):
    return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[ndim]


def _pool(ndim: int):
    return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[ndim]


def _norm(kind: str, ndim: int, channels: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "instance":
        # affine parameters, no running statistics: no buffers mutated in forward
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[ndim](
            channels, affine=True, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"norm must be 'none', 'instance' or 'group', got {kind!r}")


class ConvBlock(nn.Sequential):
    """``n`` x (3^ndim conv, optional norm, activation); every conv outputs ``out_channels``."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, n: int, activation: str, norm: str):
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(_conv(ndim)(in_channels if i == 0 else out_channels, out_channels, 3,
                                      padding=1, bias=norm == "none"))
            nrm = _norm(norm, ndim, out_channels)
            if nrm is not None:
                layers.append(nrm)
            layers.append(_ACTIVATIONS[activation]())
        super().__init__(*layers)


class UNet(nn.Module):
    """UNet with ``len(widths)`` levels; level ``i`` has ``widths[i]`` channels, exactly as given.

    Encoder: at each level ``convs_per_level`` 3x3(x3) convolutions (+ optional norm) + activation,
    then a 2x max-pool to the next level. Decoder: a stride-2 transposed convolution (kernel 2,
    "up-convolution", ``widths[i+1] -> widths[i]``) from the coarser level, concatenation with the
    encoder skip connection, and ``convs_per_level`` convolutions to ``widths[i]``. A final 1x1
    convolution gives ``out_channels`` logits.

    All operations (convolution, transposed convolution, max-pool, ELU/ReLU, instance/group norm
    without running statistics) support forward-mode AD (``torch.func.jvp``) and double backward,
    and the module has plain parameters and no buffers, so it works with
    ``torch.func.functional_call``.

    Spatial sizes must be multiples of ``2 ** (len(widths) - 1)`` (see :attr:`factor`).

    Parameters
    ----------
    ndim: 2 or 3 (1 also works).
    in_channels, out_channels: input channels, output logits.
    widths: channels at each level.
    activation: 'elu', 'relu' or 'leaky_relu'.
    norm: 'none', 'instance' (affine, no running stats) or 'group' (gcd(8, channels) groups).
    convs_per_level: convolutions per level in the encoder and in the decoder.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int,
                 widths: Sequence[int] = (16, 24, 32, 48, 64), activation: str = "elu",
                 norm: str = "none", convs_per_level: int = 2):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if ndim not in (1, 2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive channel counts, got {widths}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if convs_per_level < 1:
            raise ValueError(f"convs_per_level must be >= 1, got {convs_per_level}")
        _norm(norm, ndim, 8)  # validate
        self.ndim, self.in_channels, self.out_channels = ndim, in_channels, out_channels
        self.widths = widths
        self.activation, self.norm, self.convs_per_level = activation, norm, convs_per_level

        self.encoder = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.encoder.append(ConvBlock(ndim, prev, w, convs_per_level, activation, norm))
            prev = w
        self.pool = _pool(ndim)(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):  # coarse to fine
            self.up.append(_conv_t(ndim)(widths[i + 1], widths[i], 2, stride=2))
            self.decoder.append(ConvBlock(ndim, 2 * widths[i], widths[i], convs_per_level, activation, norm))
        self.head = _conv(ndim)(widths[0], out_channels, 1)

    @property
    def factor(self) -> int:
        """Spatial sizes must be multiples of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.widths) - 1)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:
        spatial = tuple(x.shape[2:])
        if len(spatial) != self.ndim or any(s % self.factor for s in spatial):
            raise ValueError(f"UNet({self.ndim}D, {len(self.widths)} levels) needs input (B, C, *spatial) with "
                             f"{self.ndim} spatial sizes that are multiples of {self.factor}, got {tuple(x.shape)}")
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

    def extra_repr(self) -> str:
        return (f"ndim={self.ndim}, widths={list(self.widths)}, activation={self.activation!r}, "
                f"norm={self.norm!r}, convs_per_level={self.convs_per_level}")
