"""The seed's enhanced TextGuidedUNet: sinusoidal time embedding, conditional text dropout,
cross-attention to the prompt's tokens, self-attention at the bottleneck."""

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_lit import checks
from diffusion_lit.models.layers import (
    Attention,
    SinusoidalTimeEmbedding,
    TextConditioning,
    check_unet,
    group_norm,
    shortcut,
)


class GuidedResBlock(nn.Module):
    """The enhanced UNet's residual block: x + Conv(SiLU(Conv(GroupNorm(x)) + W·cond)).

    The seed leaves open where the timestep enters; here the projected conditioning (time plus
    pooled text) is added after the first conv, as in DDPM's ResNet blocks, so every block at
    every resolution is told the noise level and the prompt. A 1×1 conv matches widths for the skip.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.norm = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond_proj = nn.Linear(cond_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = shortcut(in_channels, out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm(x)) + self.cond_proj(cond)[:, :, None, None]
        return self.shortcut(x) + self.conv2(F.silu(h))


class DownBlock(nn.Module):
    """Residual block, optional cross-attention, residual block, then a stride-2 conv.
    Returns the features (the skip connection) and their downsampled version."""

    def __init__(self, in_ch, out_ch, cond_dim, text_dim, heads, cross_attention):
        super().__init__()
        self.res1 = GuidedResBlock(in_ch, out_ch, cond_dim)
        self.attn = Attention(out_ch, heads, text_dim) if cross_attention else None
        self.res2 = GuidedResBlock(out_ch, out_ch, cond_dim)
        self.down = nn.Conv2d(out_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x, cond, tokens, mask):
        h = self.res1(x, cond)
        if self.attn is not None:
            h = self.attn(h, tokens, mask)
        h = self.res2(h, cond)
        return h, self.down(h)  # (B, out, H, W), (B, out, H/2, W/2)


class UpBlock(nn.Module):
    """Transposed conv (×2), concat with the encoder's skip, residual block, optional
    cross-attention, residual block."""

    def __init__(self, in_ch, skip_ch, out_ch, cond_dim, text_dim, heads, cross_attention):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch, 4, stride=2, padding=1)
        self.res1 = GuidedResBlock(in_ch + skip_ch, out_ch, cond_dim)
        self.attn = Attention(out_ch, heads, text_dim) if cross_attention else None
        self.res2 = GuidedResBlock(out_ch, out_ch, cond_dim)

    def forward(self, x, skip, cond, tokens, mask):
        h = self.res1(torch.cat([self.up(x), skip], dim=1), cond)
        if self.attn is not None:
            h = self.attn(h, tokens, mask)
        return self.res2(h, cond)


class TextGuidedUNet(nn.Module):
    """Two DownBlocks, a bottleneck (residual, self-attention, residual), two UpBlocks and a
    1×1 output conv. Widths: ``base_channels`` at full resolution, twice that below."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        text_dim: int,
        base_channels: int = 64,
        time_dim: int = 128,
        cond_drop_prob: float = 0.1,
        attention_heads: int = 4,
        cross_attention: bool = True,
    ):
        super().__init__()
        check_unet(image_size, in_channels, text_dim, base_channels, time_dim)
        checks.flag("cross_attention", cross_attention)
        c, c2 = base_channels, 2 * base_channels
        self.image_size, self.in_channels, self.text_dim = image_size, in_channels, text_dim
        attn = dict(text_dim=text_dim, heads=attention_heads, cross_attention=cross_attention)

        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        self.text_cond = TextConditioning(text_dim, time_dim, cond_drop_prob)

        self.down1 = DownBlock(in_channels, c, time_dim, **attn)
        self.down2 = DownBlock(c, c2, time_dim, **attn)
        self.mid1 = GuidedResBlock(c2, c2, time_dim)
        self.mid_attn = Attention(c2, attention_heads)
        self.mid2 = GuidedResBlock(c2, c2, time_dim)
        self.up1 = UpBlock(c2, c2, c2, time_dim, **attn)
        self.up2 = UpBlock(c2, c, c, time_dim, **attn)
        self.out = nn.Conv2d(c, in_channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        pooled: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,), pooled: (B, D), tokens: (B, L, D), mask: (B, L) bool.
        Missing text is the null prompt: a zero pooled vector and no tokens."""
        # (B, d_time): time plus pooled text, reaching every residual block
        cond, tokens, mask = self.text_cond(self.time_embed(t), pooled, tokens, mask)

        skip1, h = self.down1(x, cond, tokens, mask)  # (B, c, H, W), (B, c, H/2, W/2)
        skip2, h = self.down2(h, cond, tokens, mask)  # (B, 2c, H/2, W/2), (B, 2c, H/4, W/4)
        h = self.mid2(self.mid_attn(self.mid1(h, cond)), cond)
        h = self.up1(h, skip2, cond, tokens, mask)  # (B, 2c, H/2, W/2)
        h = self.up2(h, skip1, cond, tokens, mask)  # (B, c, H, W)
        return self.out(h)
