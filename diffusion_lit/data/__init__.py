"""Image datasets returning (PIL image, class index), importable without Lightning, and
(``data.datamodule``) the LightningDataModule that serves any of them."""

from diffusion_lit.data.captioned import CaptionedFolder
from diffusion_lit.data.digits import Digits
from diffusion_lit.data.flowers import FlowerFolder
from diffusion_lit.data.mnist import MNIST, FashionMNIST

__all__ = ["CaptionedFolder", "Digits", "FashionMNIST", "FlowerFolder", "MNIST"]
