"""The seed's simple UNet: learned time embedding, additive text conditioning, 2 pooling levels."""

import torch
from torch import nn

from diffusion_lit import checks
from diffusion_lit.models.layers import (
    LearnedTimeEmbedding,
    TextConditioning,
    check_unet,
    group_norm,
    shortcut,
)


class SimpleResBlock(nn.Module):
    """The seed's residual block: (GroupNorm → SiLU → Conv) ×2, plus the projected conditioning
    added after the second conv, plus a 1×1 conv shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.block1 = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.block2 = nn.Sequential(
            group_norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.cond_proj = nn.Linear(cond_dim, out_channels)
        self.shortcut = shortcut(in_channels, out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.block1(x))
        h = h + self.cond_proj(cond)[:, :, None, None]  # (B, C_out, 1, 1) broadcast over H, W
        return h + self.shortcut(x)


class SimpleUNet(nn.Module):
    """Predicts the noise ε in a noisy image x_t given the timestep t and a pooled text embedding.

    Widths: ``base_channels`` at full resolution, ``2 × base_channels`` at 1/2 and 1/4.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        text_dim: int,
        timesteps: int = 1000,
        base_channels: int = 64,
        time_dim: int = 128,
        cond_drop_prob: float = 0.1,
    ):
        super().__init__()
        check_unet(image_size, in_channels, text_dim, base_channels, time_dim)
        checks.integer("timesteps", timesteps, 2, 100_000)
        c, c2 = base_channels, 2 * base_channels
        self.image_size, self.in_channels, self.text_dim = image_size, in_channels, text_dim

        self.time_embed = LearnedTimeEmbedding(timesteps, time_dim)
        self.text_cond = TextConditioning(text_dim, time_dim, cond_drop_prob)

        self.down1 = SimpleResBlock(in_channels, c, time_dim)
        self.down2 = SimpleResBlock(c, c2, time_dim)
        self.bottleneck = SimpleResBlock(c2, c2, time_dim)
        self.up1 = SimpleResBlock(c2 + c2, c, time_dim)
        self.up2 = SimpleResBlock(c + c, c, time_dim)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Sequential(group_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 1))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        pooled: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,) int64, pooled: (B, text_dim) text embedding or None (the null
        embedding, zero). The seed's simple UNet does not use the token sequence (tokens, mask)."""
        cond, _, _ = self.text_cond(self.time_embed(t), pooled)  # e_cond = e_t + W_text·e_text

        d1 = self.down1(x, cond)  # (B, c, H, W)
        d2 = self.down2(self.pool(d1), cond)  # (B, 2c, H/2, W/2)
        b = self.bottleneck(self.pool(d2), cond)  # (B, 2c, H/4, W/4)
        u1 = self.up1(torch.cat([self.upsample(b), d2], dim=1), cond)  # (B, c, H/2, W/2)
        u2 = self.up2(torch.cat([self.upsample(u1), d1], dim=1), cond)  # (B, c, H, W)
        return self.head(u2)
