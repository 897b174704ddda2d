"""The training prompts a model carries: every class's prompts and their encodings."""

import functools
from collections.abc import Callable

import torch
from torch import nn

from diffusion_lit.text.embedding import TextEmbedding
from diffusion_lit.text.encoders import TextEncoder

# The token states of a model's distinct prompts are saved with its weights up to this size
# (the digits and Fashion-MNIST models' take 9 and 20 MB: they draw their own prompts without
# their encoder); beyond, only the pooled vectors are saved and the text encoder encodes a
# prompt's tokens again when it is drawn, so that a model of thousands of captions stays the
# size of its weights (the emoji's 12,968 captions would take 420 MB).
MAX_SAVED_TOKEN_BYTES = 32 * 2**20


class PromptBank(nn.Module):
    """Every class's training prompts (C classes × K prompts each, ``class_prompts``, a class's
    row repeating its prompts up to the widest class's) and the encodings of the distinct ones
    (:attr:`texts`), computed once per run (:meth:`fill`) and saved with the model's weights:
    the pooled vectors always, the token states while they are small
    (:data:`MAX_SAVED_TOKEN_BYTES`); where they are not held, ``encoder`` (a function that
    builds the model's text encoder, called once when first needed) encodes them on demand."""

    def __init__(
        self,
        class_names: list[str],
        class_prompts: list[list[str]],
        encoder: Callable[[], TextEncoder] | None = None,
    ):
        super().__init__()
        self.class_names = list(class_names)
        self.class_prompts = [list(p) for p in class_prompts]
        self.texts = list(dict.fromkeys(self.prompts))
        where = [[self.rows[p] for p in ps] for ps in self.class_prompts]
        self.register_buffer("where", torch.tensor(where, dtype=torch.long), persistent=False)
        self.register_buffer("pooled", torch.empty(0, 0))  # (N, D), N = len(texts)
        self.register_buffer("tokens", torch.empty(0, 0, 0))  # (N, L, D)
        self.register_buffer("mask", torch.empty(0, 0, dtype=torch.bool))  # (N, L)
        self._encoder = [encoder, None]  # a list: not a submodule, never in the state dict
        self.register_state_dict_post_hook(_drop_large_tokens)
        self.register_load_state_dict_pre_hook(_take_saved_shapes)

    @property
    def default_prompts(self) -> list[str]:
        """The first prompt of every class: what is drawn when no prompt is given."""
        return [prompts[0] for prompts in self.class_prompts]

    @property
    def prompts(self) -> list[str]:
        """Every training prompt, class by class (C·K, a class's repeats included)."""
        return [p for prompts in self.class_prompts for p in prompts]

    @functools.cached_property
    def index(self) -> dict[str, tuple[int, int]]:
        """Every training prompt and its first place in the table: (class, position)."""
        found: dict[str, tuple[int, int]] = {}
        for c, ps in enumerate(self.class_prompts):
            for k, p in enumerate(ps):
                found.setdefault(p, (c, k))
        return found

    @functools.cached_property
    def rows(self) -> dict[str, int]:
        """Every distinct training prompt and the row of its encoding (its place in
        :attr:`texts`)."""
        return {t: i for i, t in enumerate(self.texts)}

    @property
    def holds_tokens(self) -> bool:
        return self.tokens.shape[0] == len(self.texts) > 0

    @torch.no_grad()
    def fill(self, encoder: TextEncoder) -> None:
        """Encodes every distinct prompt once, in the encoder's batches."""
        emb = encoder.encode(self.texts)
        self.pooled = emb.pooled.to(self.pooled)
        self.tokens = emb.tokens.to(self.tokens)
        self.mask = emb.mask.to(self.mask)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        """``prompts`` through the model's text encoder (built on first use)."""
        build, built = self._encoder
        if built is None:
            if build is None:
                raise RuntimeError("this prompt bank was given no text encoder")
            built = self._encoder[1] = build()
        return built.encode(prompts)

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
        bank = PromptBank(class_names, class_prompts, self._encoder[0])
        bank._encoder[1] = self._encoder[1]
        known = [t for t in bank.texts if t in self.rows]
        new = [t for t in bank.texts if t not in self.rows]
        rows = torch.tensor([self.rows[t] for t in known], dtype=torch.long,
                            device=self.pooled.device)  # fmt: skip
        pooled = self.pooled[rows]
        found = self.stored(known) if self.holds_tokens else None
        if new:
            f = encode(new)
            pooled = torch.cat([pooled, f.pooled.to(self.pooled)])
            if found is not None:
                fresh = TextEmbedding(f.pooled.to(self.pooled), f.tokens.to(self.tokens),
                                      f.mask.to(self.mask))  # fmt: skip
                found = found.cat(fresh)
        order = {t: i for i, t in enumerate(known + new)}
        rows = torch.tensor([order[t] for t in bank.texts], device=self.pooled.device)
        bank.pooled = pooled[rows]
        if found is not None:
            bank.tokens, bank.mask = found.tokens[rows], found.mask[rows]
        return bank

    def lookup(self, classes: torch.Tensor, positions: torch.Tensor) -> TextEmbedding:
        """The encodings of the given (class, position) pairs."""
        rows = self.where[classes, positions]
        if self.holds_tokens:
            return TextEmbedding(self.pooled[rows], self.tokens[rows], self.mask[rows])
        emb = self.encode([self.texts[i] for i in rows.tolist()])
        return emb.map(lambda z: z.to(self.pooled.device))

    def stored(self, prompts: list[str]) -> TextEmbedding | None:
        """The encodings of ``prompts`` when every one is a training prompt, else None."""
        if not all(p in self.index for p in prompts):
            return None
        where = torch.tensor([self.index[p] for p in prompts], device=self.pooled.device)
        return self.lookup(where[:, 0], where[:, 1])


def _drop_large_tokens(bank: PromptBank, state_dict: dict, prefix: str, *args) -> None:
    """Saves the token states only while they are small (:data:`MAX_SAVED_TOKEN_BYTES`)."""
    tokens = state_dict.get(prefix + "tokens")
    if tokens is not None and tokens.numel() * tokens.element_size() > MAX_SAVED_TOKEN_BYTES:
        del state_dict[prefix + "tokens"], state_dict[prefix + "mask"]


def _take_saved_shapes(bank: PromptBank, state_dict: dict, prefix: str, *args) -> None:
    """The bank's shape depends on the data it was built from: a saved bank brings its own.
    A bank saved without its token states keeps those it holds (a run resumed after its
    prompts were encoded) or none; one of format ≤ 4 (a classes × prompts table of encodings,
    (C, K, D)) is read as the encodings of its distinct prompts."""
    pooled = state_dict.get(prefix + "pooled")
    if pooled is not None and pooled.dim() == 3:  # each distinct prompt's first cell
        classes, positions = zip(*(bank.index[t] for t in bank.texts), strict=True)
        for name in ("pooled", "tokens", "mask"):
            if prefix + name in state_dict:
                state_dict[prefix + name] = state_dict[prefix + name][classes, positions]
        pooled = state_dict[prefix + "pooled"]
    if prefix + "tokens" not in state_dict and pooled is not None:
        keep = bank.holds_tokens and bank.pooled.shape == pooled.shape
        for name in ("tokens", "mask"):
            state_dict[prefix + name] = getattr(bank, name) if keep else _empty(getattr(bank, name))
    for name in ("pooled", "tokens", "mask"):
        saved = state_dict.get(prefix + name)
        if saved is not None and saved.shape != getattr(bank, name).shape:
            setattr(bank, name, torch.empty_like(saved))


def _empty(like: torch.Tensor) -> torch.Tensor:
    return torch.empty((0,) * like.dim(), dtype=like.dtype, device=like.device)
