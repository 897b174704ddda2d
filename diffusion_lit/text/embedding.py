"""A prompt's text embedding, as the UNets take it: a pooled vector and the token states."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
