import pytest
import torch
import torch.nn.functional as F

from diffusion_lit.errors import UserError
from diffusion_lit.text import CLIPEncoder, MiniLMEncoder, PromptBank, TextEncoderUnavailable
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
    assert bank.pooled.shape == (3, 2, 384) and bank.mask.shape[:2] == (3, 2)
    restored = PromptBank(["zero", "one", "two"], prompts)
    restored.load_state_dict(bank.state_dict())
    torch.testing.assert_close(restored.pooled, bank.pooled)
    torch.testing.assert_close(restored.tokens, bank.tokens)


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
            torch.testing.assert_close(bank.pooled[c, k], alone, atol=1e-5, rtol=0)
