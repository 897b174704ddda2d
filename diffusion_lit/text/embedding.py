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

    def last(self, n: int, keep: torch.Tensor | None = None) -> "TextEmbedding":
        """The last ``n`` prompts; with ``keep`` (n,) bool, those it marks False become the
        null prompt (as conditional dropout drops them)."""
        pooled, tokens, mask = self.pooled[-n:], self.tokens[-n:], self.mask[-n:]
        if keep is not None:
            pooled, mask = pooled * keep[:, None].to(pooled.dtype), mask & keep[:, None]
        return TextEmbedding(pooled, tokens, mask)

    def cat(self, other: "TextEmbedding") -> "TextEmbedding":
        """Both, one after the other; the shorter token sequences padded (masked) to the
        longer's length."""
        length = max(self.tokens.shape[1], other.tokens.shape[1])
        a, b = self.padded(length), other.padded(length)
        return TextEmbedding(
            torch.cat([a.pooled, b.pooled]),
            torch.cat([a.tokens, b.tokens]),
            torch.cat([a.mask, b.mask]),
        )

    def padded(self, length: int) -> "TextEmbedding":
        """The token sequences padded with masked zeros to ``length``."""
        extra = length - self.tokens.shape[1]
        if extra <= 0:
            return self
        tokens = torch.nn.functional.pad(self.tokens, (0, 0, 0, extra))
        return TextEmbedding(self.pooled, tokens, torch.nn.functional.pad(self.mask, (0, extra)))

    def where(self, keep: torch.Tensor, other: "TextEmbedding") -> "TextEmbedding":
        """Row by row, this one's prompt where ``keep`` (B,) is True, else ``other``'s; the
        shorter token sequences padded (masked) to the longer's length."""
        length = max(self.tokens.shape[1], other.tokens.shape[1])
        a, b = self.padded(length), other.padded(length)

        def pick(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.where(keep.view(-1, *[1] * (x.dim() - 1)), x, y)

        return TextEmbedding(pick(a.pooled, b.pooled), pick(a.tokens, b.tokens),
                             pick(a.mask, b.mask))  # fmt: skip

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
