"""Which text encoder reads phrasings it never trained on as their class, before any training:
for each data with held-out phrasings (conf/heldout/<data>.yaml), the share whose nearest
training prompt (cosine of pooled text embeddings: what ``nearest_prompt`` draws them as) is one
of the right class, and the ones that are not. Text only, seconds an encoder: compare an encoder
you can download (CLIP) with the offline MiniLM before training a model with it.

    python bench/retrieval.py [--encoder "OVERRIDES"]... [--data digits,fashion_mnist] [--smoke]

Each ``--encoder`` is one set of Hydra overrides for the text encoder (default: the offline
MiniLM), e.g. ``--encoder "text_encoder=clip text_encoder.name_or_path=<local CLIP folder>"``.
"""

import sys

from common import SMOKE, config, record

from diffusion_lit.evaluation.phrasings import heldout_phrasings
from diffusion_lit.text.embedding import most_similar
from diffusion_lit.training.config import build


def option_values(name: str) -> list[str]:
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == name]


def retrieval(encoder, training: list[list[str]], heldout: list[list[str]]):
    """The held-out prompts whose nearest training prompt is of the right class, of how many,
    and the misses as "'held-out' → 'nearest training prompt'"."""
    bank = [(c, p) for c, prompts in enumerate(training) for p in dict.fromkeys(prompts)]
    queries = [(c, p) for c, prompts in enumerate(heldout) for p in dict.fromkeys(prompts)]
    _, index = most_similar(
        encoder.encode([p for _, p in queries]).pooled, encoder.encode([p for _, p in bank]).pooled
    )
    misses = [
        f"'{p}' → '{bank[i][1]}'"
        for (c, p), i in zip(queries, index.tolist(), strict=True)
        if bank[i][0] != c
    ]
    return len(queries) - len(misses), len(queries), misses


def main() -> None:
    encoders = option_values("--encoder") or ["text_encoder=minilm"]
    datas = (["digits"] if SMOKE else option_values("--data") or ["digits,fashion_mnist"])[0]
    rows = ["| text encoder | data | held-out phrasings read as their class | misses |",
            "|---|---|---|---|"]  # fmt: skip
    for overrides in encoders:
        encoder = build(config(overrides.split()).text_encoder)
        for data in datas.split(","):
            cfg = config([f"data={data}"], name="evaluate")
            datamodule = build(cfg.data)
            heldout = heldout_phrasings(cfg.get("heldout"), datamodule.class_names)
            if heldout is None:
                raise SystemExit(f"data={data} has no held-out phrasings (conf/heldout/).")
            right, total, misses = retrieval(encoder, datamodule.class_prompts, heldout)
            rows.append(
                f"| `{overrides}` | {data} | {right}/{total} ({right / total:.0%}) "
                f"| {'; '.join(misses) or '—'} |"
            )
            print(rows[-1], flush=True)
    record(
        "Unseen phrasings read by each text encoder (nearest training prompt's class)",
        "\n".join(rows),
        "Text only: every data's training prompts (conf/data/) and held-out phrasings "
        "(conf/heldout/), each encoded once; a held-out phrasing counts when the training prompt "
        "of highest cosine similarity (pooled embeddings) is one of its class. With "
        "`nearest_prompt=true` (the default) a model draws it as that prompt, so this bounds the "
        "held-out accuracy of any model trained with the encoder.",
    )


if __name__ == "__main__":
    main()
