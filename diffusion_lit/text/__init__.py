"""The text side: frozen pretrained encoders, prompt templates, the bank of encoded training
prompts a model carries, and reading a new prompt through that bank."""

from diffusion_lit.text.embedding import TextEmbedding
from diffusion_lit.text.encoders import (
    CLIPEncoder,
    MiniLMEncoder,
    TextEncoder,
    TextEncoderUnavailable,
)
from diffusion_lit.text.prompt_bank import PromptBank

__all__ = [
    "CLIPEncoder", "MiniLMEncoder", "PromptBank", "TextEmbedding", "TextEncoder",
    "TextEncoderUnavailable",
]  # fmt: skip
