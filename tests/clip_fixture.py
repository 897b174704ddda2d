"""A CLIP text model that runs offline: the real BPE vocabulary shipped inside the open-clip-torch
wheel, with a small randomly initialised CLIPTextModel (real CLIP weights need the network)."""

import gzip
from pathlib import Path

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def real_clip_tokenizer() -> CLIPTokenizer:
    """CLIPTokenizer over CLIP's own 49,408-token vocabulary, built the way open_clip builds it."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs)


def save_tiny_clip(path: Path, hidden_size: int = 32) -> Path:
    tokenizer = real_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden_size,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
