"""Drawn images, (P, N, C, H, W) in [0, 1], as one PNG: a row per prompt (or class)."""

from pathlib import Path

import torch
from torchvision.utils import save_image


def save_grid(images: torch.Tensor, path: Path) -> Path:
    """Writes the grid to ``path`` (its folder made if need be); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.flatten(0, 1), path, nrow=images.shape[1])
    return path
