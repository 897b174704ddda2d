"""Any prompt read through the training prompts: the training prompt nearest to it (cosine
similarity of the pooled text embeddings), what it is drawn as, and whether any is near at all."""

from dataclasses import dataclass

import torch

from diffusion_lit.text.embedding import TextEmbedding, most_similar
from diffusion_lit.text.prompt_bank import PromptBank

# Below this cosine similarity to every training prompt (pooled text embeddings), a prompt is
# reported as unlike anything the model was trained on. Calibrated on MiniLM with
# bench/unfamiliar.py (the figures are in bench/RESULTS.md).
UNFAMILIAR_BELOW = 0.6


@dataclass(frozen=True)
class NearestPrompt:
    """A prompt, the most similar training prompt and their similarity."""

    prompt: str
    nearest: str
    similarity: float
    trained: bool  # the prompt is a training prompt itself (its nearest is itself)

    @property
    def unfamiliar(self) -> bool:
        return self.similarity < UNFAMILIAR_BELOW

    def drawn_as(self, nearest_prompt: bool = True) -> str:
        """What the model is conditioned on: a prompt it never trained on is drawn as its nearest
        training prompt (``nearest_prompt``), or as itself, from its own embedding."""
        return self.nearest if nearest_prompt and not self.trained else self.prompt


def nearest_prompts(prompts: list[str], text: TextEmbedding, bank: PromptBank):
    """The :class:`NearestPrompt` of each prompt, whose embeddings are ``text``."""
    similarity, index = most_similar(text.pooled, bank.pooled)
    trained = bank.texts
    return [
        NearestPrompt(p, trained[i], s, p in bank.index)
        for p, i, s in zip(prompts, index.tolist(), similarity.tolist(), strict=True)
    ]


def nearest_of(text: TextEmbedding, bank: PromptBank, candidates: list[str]) -> list[str]:
    """For each embedding of ``text``, the most similar of the training prompts
    ``candidates``."""
    pooled = bank.pooled[torch.tensor([bank.rows[c] for c in candidates], dtype=torch.long)]
    _, index = most_similar(text.pooled, pooled)
    return [candidates[i] for i in index.tolist()]


def unfamiliar_notes(found: list[NearestPrompt]) -> list[str]:
    """A line for each prompt unlike every training prompt, naming the nearest one (each prompt
    once)."""
    found = {f.prompt: f for f in found}.values()
    return [
        f"{f.prompt!r} is not like any training prompt; nearest: {f.nearest!r} ({f.similarity:.2f})"
        for f in found
        if f.unfamiliar
    ]


def substitution_notes(found: list[NearestPrompt], nearest_prompt: bool = True) -> list[str]:
    """A line for each prompt drawn as another training prompt (each prompt once)."""
    found = {f.prompt: f for f in found}.values()
    return [
        f"{f.prompt!r} is drawn as the training prompt {f.drawn_as(nearest_prompt)!r}"
        for f in found
        if f.drawn_as(nearest_prompt) != f.prompt
    ]
