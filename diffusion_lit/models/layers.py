"""Building blocks shared by the UNets: time embeddings, conditioning dropout, residual blocks."""

import math

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divides ``channels`` (so 1- and 3-channel inputs work)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class LearnedTimeEmbedding(nn.Module):
    """The seed's simple-UNet time embedding: e_t = W2 · SiLU(W1 · Emb(t)), Emb learned per step."""

    def __init__(self, timesteps: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(timesteps, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(t))  # (B, dim)


class ConditionalDropout(nn.Module):
    """Replaces a sample's whole text embedding by the null (zero) embedding with probability p.

    Active in training only, so the network also learns the unconditional noise prediction that
    classifier-free guidance needs; identity in eval mode or when p = 0.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {p}")
        self.p = p

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return emb
        keep = torch.rand(emb.shape[0], device=emb.device) >= self.p
        return emb * keep.view(-1, *([1] * (emb.dim() - 1))).to(emb.dtype)


class ResBlock(nn.Module):
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
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.block1(x))
        h = h + self.cond_proj(cond)[:, :, None, None]  # (B, C_out, 1, 1) broadcast over H, W
        return h + self.shortcut(x)


def check_image_size(image_size: int, factor: int) -> None:
    """Fail early with a fix when the UNet's down/up path cannot round-trip ``image_size``."""
    if image_size <= 0 or image_size % factor:
        raise ValueError(
            f"image_size={image_size} is not divisible by {factor}: the UNet halves the image "
            f"{int(math.log2(factor))} times. Set data.image_size to a multiple of {factor} "
            f"(e.g. {max(factor, round(image_size / factor) * factor)})."
        )
