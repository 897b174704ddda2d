"""Noise-prediction networks. None of them import Lightning or Hydra.

Both take ``(x, t, pooled, tokens, mask)``: the noisy image, the timestep, and the prompt's
pooled embedding and token sequence (None for the null prompt)."""

from diffusion_lit.models.enhanced_unet import TextGuidedUNet
from diffusion_lit.models.simple_unet import SimpleUNet

__all__ = ["SimpleUNet", "TextGuidedUNet"]
