"""The U-Net of OpenAI's improved-diffusion (Nichol & Dhariwal, 2021), written to load its checkpoints.

Our own implementation of the architecture described in the paper and in
``improved_diffusion/unet.py`` of github.com/openai/improved-diffusion. Module names and
tensor shapes follow the published checkpoints, so ``load_state_dict(strict=True)`` accepts
e.g. ``imagenet64_cond_270M_250K.pt``:

* ``time_embed.{0,2}``: sinusoidal timestep features (``model_channels``; cosines first,
  then sines) through Linear, SiLU, Linear to ``4 * model_channels``;
* ``label_emb``: ``nn.Embedding(num_classes, 4 * model_channels)``, added to it;
* ``input_blocks.N.M``: a 3x3 input conv, then per level ``num_res_blocks`` residual blocks
  (each followed by attention at the configured downsampling rates) and a strided-conv
  ``Downsample`` (``op``) between levels;
* ``middle_block``: residual block, attention, residual block;
* ``output_blocks.N.M``: per level (reversed) ``num_res_blocks + 1`` residual blocks over the
  concatenated skip connection, attention where configured and an ``Upsample`` (``conv``)
  closing each level but the last;
* ``out.{0,2}``: GroupNorm, SiLU, 3x3 conv to ``out_channels``.

A residual block is ``in_layers`` (GroupNorm, SiLU, conv), ``emb_layers`` (SiLU, Linear;
twice the width with scale-shift norm), ``out_layers`` (GroupNorm, SiLU, Dropout, conv) and a
1x1 ``skip_connection`` conv when the width changes. An attention block is ``norm``,
``qkv`` (1x1 Conv1d to three times the width, laid out head by head as ``[q, k, v]``) and
``proj_out`` (1x1 Conv1d). Every GroupNorm has 32 groups and runs in float32.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ADMUNet", "timestep_embedding"]

#: Groups of every GroupNorm of the architecture.
NORM_GROUPS = 32


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features.

    Args:
        timesteps: ``(N,)`` timesteps (int or float; the model's own scale).
        dim: feature size.
        max_period: the longest period, in timesteps.

    Returns:
        float32 ``(N, dim)``: ``[cos(t f_0), ..., cos(t f_{h-1}), sin(t f_0), ...]`` with
        ``h = dim // 2`` frequencies ``f_i = max_period ** (-i / h)`` (a zero column is
        appended when ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input and weight dtype; returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(NORM_GROUPS, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (the architecture's initialisation of its last layers)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Sequential):
    """A sequence of layers; residual blocks among them also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep (and class) embedding.

    Args:
        channels: input channels.
        emb_channels: embedding width.
        out_channels: output channels.
        dropout: dropout probability (inactive in ``eval()``).
        use_scale_shift_norm: the embedding gives a scale and a shift applied after the
            second GroupNorm (``h = norm(h) * (1 + scale) + shift``) instead of a bias added
            before it.
    """

    def __init__(self, *, channels: int, emb_channels: int, out_channels: int, dropout: float,
                 use_scale_shift_norm: bool) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            _norm(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, channels, H, W)``; ``emb``: ``(N, emb_channels)``. Returns ``(N, out_channels, H, W)``."""
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    Args:
        channels: width (divisible by ``num_heads``).
        num_heads: heads; the ``qkv`` output holds, head after head, that head's queries,
            keys and values (``channels // num_heads`` each).
    """

    def __init__(self, *, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention width {channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)``. Returns the same shape."""
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.num_heads, 3 * c // self.num_heads, -1)
        q, k, v = (part.transpose(1, 2) for part in qkv.chunk(3, dim=1))  # (b * heads, T, c // heads) each
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        h = h.transpose(1, 2).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Halve the resolution: a 3x3 stride-2 conv ``op`` (or 2x2 average pooling without ``use_conv``)."""

    def __init__(self, channels: int, *, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest neighbour), then a 3x3 conv ``conv`` if ``use_conv``."""

    def __init__(self, channels: int, *, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class ADMUNet(nn.Module):
    """improved-diffusion's U-Net (2-D images), with the checkpoints' parameter names.

    Args:
        in_channels: image channels in.
        model_channels: base width (``--num_channels``).
        out_channels: channels out; ``2 * in_channels`` for a learned variance
            (``--learn_sigma True``: epsilon first, then the variance interpolation).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_rates: downsampling rates with attention (e.g. ``(4, 8)`` at 64 px =
            attention at 16 x 16 and 8 x 8).
        channel_mult: width multiplier per level.
        dropout: dropout probability of the residual blocks.
        conv_resample: learned convs for down- and upsampling.
        num_classes: ``None`` (unconditional) or the number of classes of ``label_emb``.
        num_heads: attention heads on the way down and in the middle.
        num_heads_upsample: heads on the way up (``-1``: ``num_heads``).
        use_scale_shift_norm: see :class:`ResBlock`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_rates: Sequence[int],
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.0,
        conv_resample: bool = True,
        num_classes: int | None = None,
        num_heads: int = 1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
    ) -> None:
        super().__init__()
        self.model_channels = model_channels
        self.num_classes = num_classes
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb)

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(channels=ch_in, emb_channels=emb, out_channels=ch_out, dropout=dropout,
                            use_scale_shift_norm=use_scale_shift_norm)

        self.input_blocks = nn.ModuleList([TimestepBlock(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        skips = [model_channels]  # channels of each input block's output, consumed by the output blocks
        ch, rate = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if rate in attention_rates:
                    layers.append(AttentionBlock(channels=ch, num_heads=num_heads))
                self.input_blocks.append(TimestepBlock(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepBlock(Downsample(ch, use_conv=conv_resample)))
                skips.append(ch)
                rate *= 2
        self.middle_block = TimestepBlock(res(ch, ch), AttentionBlock(channels=ch, num_heads=num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mult * model_channels)]
                ch = mult * model_channels
                if rate in attention_rates:
                    layers.append(AttentionBlock(channels=ch, num_heads=heads_up))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, use_conv=conv_resample))
                    rate //= 2
                self.output_blocks.append(TimestepBlock(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zeroed(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise (and, with a learned variance, its interpolation weights).

        Args:
            x: ``(N, in_channels, H, W)`` noisy images (any float dtype; cast to the weights').
            timesteps: ``(N,)`` timesteps on the scale the model was trained with.
            y: int64 ``(N,)`` class ids; required if and only if the model is class-conditional.

        Returns:
            ``(N, out_channels, H, W)`` in the weights' dtype.
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError(
                "ADMUNet: class labels y are required for a class-conditional model and refused for an unconditional "
                f"one (num_classes={self.num_classes}, y {'missing' if y is None else 'given'})"
            )
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
