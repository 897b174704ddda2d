import pytest
import torch
import torch.nn.functional as F

from diffusion_lit.errors import UserError
from diffusion_lit.text import (
    CLIPEncoder,
    MiniLMEncoder,
    PromptBank,
    TextEncoderUnavailable,
    prompt_bank,
)
from diffusion_lit.text.encoders import CLIP_VOCAB_SIZE


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_minilm_gives_pooled_and_token_embeddings(minilm):
    emb = minilm.encode(["Draw a six", "Orchids"])
    assert emb.pooled.shape == (2, 384)
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 384
    assert emb.mask.dtype == torch.bool and emb.mask[0].all() and not emb.mask[1].all()


def test_minilm_puts_a_prompt_closer_to_its_paraphrase_than_to_an_unrelated_one(minilm):
    a, paraphrase, unrelated = F.normalize(
        minilm.encode(
            ["Draw a six", "A drawing of the digit six", "A red tulip in a garden"]
        ).pooled,
        dim=-1,
    )
    assert a @ paraphrase > a @ unrelated + 0.2


def test_minilm_is_frozen_and_stays_in_eval_mode(minilm):
    minilm.train()
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.parameters())


def test_long_prompt_is_truncated_with_a_warning(minilm, caplog):
    with caplog.at_level("WARNING"):
        emb = minilm.encode(["six " * 200])
    assert emb.tokens.shape[1] == minilm.max_length and "truncated" in caplog.text


@pytest.mark.parametrize("prompts", [[], ["  "]])
def test_empty_prompts_are_refused(minilm, prompts):
    with pytest.raises(UserError, match="prompt"):
        minilm.encode(prompts)


def test_clip_path_with_the_real_vocabulary(tmp_path):
    from clip_fixture import save_tiny_clip

    encoder = CLIPEncoder(save_tiny_clip(tmp_path / "clip", hidden_size=32), dim=32)
    assert encoder.tokenizer.vocab_size == CLIP_VOCAB_SIZE == len(encoder.tokenizer)
    assert encoder.tokenizer.tokenize("a photograph of orchids") == [
        "a</w>",
        "photograph</w>",
        "of</w>",
        "orchids</w>",
    ]
    emb = encoder.encode(["Draw a six", "Orchids"])
    assert emb.pooled.shape == (2, 32) and emb.tokens.shape[2] == 32
    assert emb.mask.sum(1).tolist() == [5, 3]  # <start> draw a six <end> / <start> orchids <end>


def test_clip_unavailable_offline_points_at_minilm():
    with pytest.raises(TextEncoderUnavailable, match="text_encoder=minilm"):
        CLIPEncoder("openai/clip-vit-base-patch32")


def test_wrong_dim_is_refused():
    with pytest.raises(UserError, match="text_encoder.dim"):
        MiniLMEncoder(dim=512)


def test_prompt_bank_round_trips_through_a_state_dict(minilm):
    prompts = [["Draw a zero", "Zero"], ["Draw a one", "One"], ["Draw a two", "Two"]]
    bank = PromptBank(["zero", "one", "two"], prompts)
    bank.fill(minilm)
    assert bank.pooled.shape == (6, 384) and bank.mask.shape[0] == 6  # one per distinct prompt
    restored = PromptBank(["zero", "one", "two"], prompts)
    restored.load_state_dict(bank.state_dict())
    torch.testing.assert_close(restored.pooled, bank.pooled)
    torch.testing.assert_close(restored.tokens, bank.tokens)


def test_a_bank_of_format_4_reads_as_one_encoding_per_distinct_prompt(minilm):
    """Up to format 4 a model file held the classes × prompts table of encodings, a class's
    row repeating its prompts: it loads, and each prompt draws with its own encoding."""
    prompts = [["Draw a zero", "Zero", "Draw a zero"], ["Draw a one", "One", "Uno"]]
    table = minilm.encode(sum(prompts, [])).map(lambda z: z.reshape(2, 3, *z.shape[1:]))
    bank = PromptBank(["zero", "one"], prompts)
    bank.load_state_dict({"pooled": table.pooled, "tokens": table.tokens, "mask": table.mask})
    assert bank.pooled.shape == (5, 384) and bank.holds_tokens
    found = bank.stored(["Uno", "Draw a zero", "Zero"])
    torch.testing.assert_close(found.pooled, table.pooled[[1, 0, 0], [2, 0, 1]])
    torch.testing.assert_close(found.tokens, table.tokens[[1, 0, 0], [2, 0, 1]])


def test_a_large_bank_saves_its_pooled_vectors_and_encodes_its_tokens_when_drawn(
    minilm, monkeypatch
):
    """Beyond the bound the token states stay out of the model file (a model of thousands of
    captions stays the size of its weights); loaded, the bank encodes a prompt's tokens with
    the model's text encoder when it is drawn, as training had them."""
    monkeypatch.setattr(prompt_bank, "MAX_SAVED_TOKEN_BYTES", 1000)
    prompts = [["Draw a zero", "Zero"], ["Draw a one", "One"]]
    bank = PromptBank(["zero", "one"], prompts)
    bank.fill(minilm)
    saved = bank.state_dict()
    assert set(saved) == {"pooled"}
    built = []
    loaded = PromptBank(["zero", "one"], prompts, lambda: built.append(1) or minilm)
    loaded.load_state_dict(saved)
    assert not loaded.holds_tokens and not built  # nothing encoded until a prompt is drawn
    found, trained = loaded.stored(["One", "Draw a zero"]), bank.stored(["One", "Draw a zero"])
    assert built == [1]
    torch.testing.assert_close(found.pooled, trained.pooled)
    length = trained.mask.sum(1)
    for i, n in enumerate(length.tolist()):
        torch.testing.assert_close(found.tokens[i, :n], trained.tokens[i, :n], atol=1e-5, rtol=0)
    resumed = PromptBank(["zero", "one"], prompts)  # a run resumed after it encoded its own
    resumed.fill(minilm)
    resumed.load_state_dict(saved)
    assert resumed.holds_tokens


def test_a_bank_encodes_each_distinct_caption_once_in_batches(minilm, monkeypatch):
    """A class's row repeats its captions up to the widest class's and classes share some:
    each distinct caption is encoded once, the encoder's passes are of at most a batch, and
    the table holds what encoding each caption alone gives."""
    prompts = [["Draw a zero", "a thin zero", "a thick zero"], ["Draw a one", "Draw a one",
               "Draw a one"], ["Draw a two", "Draw a zero", "a thin zero"]]  # fmt: skip
    passes = []
    encode = minilm._encode
    monkeypatch.setattr(minilm, "_encode", lambda batch: passes.append(batch) or encode(batch))
    bank = PromptBank(["zero", "one", "two"], prompts)

    class TwoAPass:  # the encoder, two prompts a pass
        def encode(self, prompts):
            return minilm.encode(prompts, batch_size=2)

    bank.fill(TwoAPass())
    seen = [p for batch in passes for p in batch]
    assert sorted(seen) == sorted(set(sum(prompts, []))) and max(map(len, passes)) <= 2
    for c, row in enumerate(prompts):
        for k, prompt in enumerate(row):
            alone = minilm.encode([prompt]).pooled[0]
            drawn = bank.lookup(torch.tensor([c]), torch.tensor([k])).pooled[0]
            torch.testing.assert_close(drawn, alone, atol=1e-5, rtol=0)
