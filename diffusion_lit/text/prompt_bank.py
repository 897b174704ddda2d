"""The training prompts a model carries: every class's prompts and their encodings."""

import functools
from collections.abc import Callable

import torch
from torch import nn

from diffusion_lit.text.embedding import TextEmbedding
from diffusion_lit.text.encoders import TextEncoder


class PromptBank(nn.Module):
    """Every class's training prompts (C classes × K prompts each, ``class_prompts``) and their
    encodings, computed once per run (:meth:`fill`) and saved with the model's weights, so that
    a model draws its own prompts without its text encoder."""

    def __init__(self, class_names: list[str], class_prompts: list[list[str]]):
        super().__init__()
        self.class_names = list(class_names)
        self.class_prompts = [list(p) for p in class_prompts]
        self.register_buffer("pooled", torch.empty(0, 0, 0))  # (C, K, D)
        self.register_buffer("tokens", torch.empty(0, 0, 0, 0))  # (C, K, L, D)
        self.register_buffer("mask", torch.empty(0, 0, 0, dtype=torch.bool))  # (C, K, L)
        self.register_load_state_dict_pre_hook(_take_saved_shapes)

    @property
    def default_prompts(self) -> list[str]:
        """The first prompt of every class: what is drawn when no prompt is given."""
        return [prompts[0] for prompts in self.class_prompts]

    @property
    def prompts(self) -> list[str]:
        """Every training prompt, class by class, in the order of :meth:`flat`."""
        return [p for prompts in self.class_prompts for p in prompts]

    @functools.cached_property
    def index(self) -> dict[str, tuple[int, int]]:
        """Every training prompt and where its encoding is: (class, position)."""
        return {p: (c, k) for c, ps in enumerate(self.class_prompts) for k, p in enumerate(ps)}

    @torch.no_grad()
    def fill(self, encoder: TextEncoder) -> None:
        """Encodes every distinct prompt once (a class's row repeats its captions up to the
        widest class's, and classes share captions), then lays them out as the table."""
        distinct = list(dict.fromkeys(self.prompts))
        where = {p: i for i, p in enumerate(distinct)}
        emb = encoder.encode(distinct)
        rows = torch.tensor([where[p] for p in self.prompts], device=emb.pooled.device)
        shape = (len(self.class_prompts), len(self.class_prompts[0]))
        grouped = emb.map(lambda z: z[rows].reshape(*shape, *z.shape[1:]))
        self.pooled = grouped.pooled.to(self.pooled)
        self.tokens = grouped.tokens.to(self.tokens)
        self.mask = grouped.mask.to(self.mask)

    @torch.no_grad()
    def extended(
        self,
        class_names: list[str],
        class_prompts: list[list[str]],
        encode: Callable[[list[str]], TextEmbedding],
    ) -> "PromptBank":
        """A bank of ``class_prompts`` (which holds this one's, as an extended model's does):
        the encodings this one has copied, the other prompts encoded by ``encode`` (a text
        encoder's, called only when there are any)."""
        bank = PromptBank(class_names, class_prompts)
        new = list(dict.fromkeys(p for p in bank.prompts if p not in self.index))
        known = [p for p in dict.fromkeys(bank.prompts) if p in self.index]
        found = self.stored(known) if known else None
        if new:
            f = encode(new)
            fresh = TextEmbedding(f.pooled.to(self.pooled), f.tokens.to(self.tokens),
                                  f.mask.to(self.mask))  # fmt: skip
            found = fresh if found is None else found.cat(fresh)
        where = {p: i for i, p in enumerate(known + new)}
        rows = torch.tensor([where[p] for p in bank.prompts], device=self.pooled.device)
        shape = (len(class_prompts), len(class_prompts[0]))
        grouped = found.map(lambda z: z[rows].reshape(*shape, *z.shape[1:]))
        bank.pooled, bank.tokens, bank.mask = grouped.pooled, grouped.tokens, grouped.mask
        return bank

    def lookup(self, classes: torch.Tensor, positions: torch.Tensor) -> TextEmbedding:
        """The encodings of the given (class, position) pairs."""
        bank = TextEmbedding(self.pooled, self.tokens, self.mask)
        return bank.map(lambda z: z[classes, positions])

    def stored(self, prompts: list[str]) -> TextEmbedding | None:
        """The saved encodings of ``prompts`` when every one is a training prompt, else None."""
        if not all(p in self.index for p in prompts):
            return None
        where = torch.tensor([self.index[p] for p in prompts], device=self.pooled.device)
        return self.lookup(where[:, 0], where[:, 1])

    def flat(self) -> torch.Tensor:
        """The pooled encodings of :attr:`prompts`, (C·K, D)."""
        return self.pooled.flatten(0, 1)


def _take_saved_shapes(bank: PromptBank, state_dict: dict, prefix: str, *args) -> None:
    """The bank's shape depends on the data it was built from: a saved bank brings its own."""
    for name in ("pooled", "tokens", "mask"):
        if prefix + name in state_dict:
            setattr(bank, name, torch.empty_like(state_dict[prefix + name]))
