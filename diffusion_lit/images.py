"""Drawn images, (P, N, C, H, W) in [0, 1], as one PNG: a row per prompt (or class); and a
picture's transparency flattened the way the training images are."""

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import save_image


def save_grid(images: torch.Tensor, path: Path) -> Path:
    """Writes the grid to ``path`` (its folder made if need be); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.flatten(0, 1), path, nrow=images.shape[1])
    return path


def on_white(image: Image.Image) -> Image.Image:
    """``image`` as RGB, its transparency (if it has any) composited on white."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")
