"""Image datasets returning (PIL image, class index). Importable without Lightning."""

from diffusion_lit.data.digits import Digits
from diffusion_lit.data.flowers import FlowerFolder
from diffusion_lit.data.mnist import MNIST, FashionMNIST
from diffusion_lit.data.prompts import class_prompts

__all__ = ["Digits", "FashionMNIST", "FlowerFolder", "MNIST", "class_prompts"]
