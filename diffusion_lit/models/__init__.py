"""Noise-prediction networks. None of them import Lightning or Hydra."""

from diffusion_lit.models.simple_unet import SimpleUNet

__all__ = ["SimpleUNet"]
