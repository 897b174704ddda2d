"""How well the unfamiliar-prompt note separates requests a model can draw from ones it cannot:
the similarity of each held-out phrasing (drawable, never trained on: class phrasings, and for a
model trained on attribute captions the other words for its attributes, "a bold seven", and the
class × word combinations no caption said) and of unrelated requests to the nearest training
prompt or caption, and at each threshold the share of held-out phrasings let through and of
unrelated requests flagged. The pipeline flags below ``text.nearest.UNFAMILIAR_BELOW``.

    python bench/unfamiliar.py [ckpt_path] [--heldout conf/heldout/digits.yaml] [--smoke]
"""

import sys
from pathlib import Path

from common import ROOT, SMOKE, option, record
from omegaconf import OmegaConf

from diffusion_lit.pipeline import TextToImage
from diffusion_lit.text.nearest import UNFAMILIAR_BELOW
from diffusion_lit.text.templates import class_prompts

# requests none of the bundled datasets' models can draw; some borrow the training templates'
# words ("Draw a", "handwritten", "an image showing") to test that the note sees past them
UNRELATED = [
    "a red car", "please draw a red car", "Draw a cat", "a picture of a house", "write a poem",
    "a handwritten letter A", "the letter B", "a photo of a dog", "draw a tree",
    "an image showing a bicycle", "can you make a sandwich?", "a flower", "a handwritten signature",
    "the moon at night", "a portrait of a woman", "a mountain lake", "draw a triangle",
    "a bowl of soup", "an airplane in the sky", "a chess board",
]  # fmt: skip
# the same, in the words of the attribute captions, for caption banks
UNRELATED_WITH_WORDS = ["a thick red car", "a thin cat", "a house, slanted right",
                        "a thick letter A", "a dark mountain lake", "a large airplane"]  # fmt: skip
THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7]


def heldout_combinations(pipe: TextToImage) -> list[str]:
    """Each attribute word with each class no caption put it with ("a thick two")."""
    captions = {p for prompts in pipe.training_prompts.values() for p in prompts}
    return [f"a {word} {name}" for words in pipe.attributes.values() for word in words
            for name in pipe.model.prompts.class_names
            if not any(word in c and name in c for c in captions)]  # fmt: skip


def main() -> None:
    args = [a for i, a in enumerate(sys.argv[1:], 1) if not a.startswith("--")
            and sys.argv[i - 1] != "--heldout"]  # fmt: skip
    found = sorted((ROOT / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))
    ckpt = Path(args[0]) if args else (found[-1] if found else None)
    if ckpt is None:
        raise SystemExit("No checkpoint under outputs/runs/: run `make train` or pass one.")
    heldout = OmegaConf.load(option("--heldout", str(ROOT / "conf" / "heldout" / "digits.yaml")))
    pipe = TextToImage.from_checkpoint(ckpt, device="cpu")
    names = pipe.model.prompts.class_names
    vocab = class_prompts(names, list(heldout.prompt_templates), dict(heldout.class_synonyms or {}))
    drawable = [p for prompts in vocab for p in prompts]
    if pipe.attributes:
        drawable += [t.format(name=n) for ts in (heldout.get("attribute_phrasings") or {}).values()
                     for t in ts for n in names]  # fmt: skip
        drawable += heldout_combinations(pipe)
    unrelated = UNRELATED + (UNRELATED_WITH_WORDS if pipe.attributes else [])
    unrelated = unrelated[:3] if SMOKE else unrelated
    near_drawable = [f.similarity for f in pipe.read(drawable)]
    near_unrelated = [(f.nearest, f.similarity) for f in pipe.read(unrelated)]

    rows = ["| flag below | held-out phrasings let through | unrelated requests flagged |",
            "|---|---|---|"]  # fmt: skip
    for t in THRESHOLDS:
        passed = sum(s >= t for s in near_drawable) / len(near_drawable)
        flagged = sum(s < t for _, s in near_unrelated) / len(near_unrelated)
        mark = " (the pipeline's)" if t == UNFAMILIAR_BELOW else ""
        rows.append(f"| {t:.1f}{mark} | {passed:.0%} | {flagged:.0%} |")
    closest = sorted(zip(unrelated, near_unrelated, strict=True), key=lambda x: -x[1][1])[:5]
    notes = (
        f"{len(drawable)} held-out phrasings (similarity min {min(near_drawable):.2f}, mean "
        f"{sum(near_drawable) / len(near_drawable):.2f}), {len(unrelated)} unrelated requests "
        f"(mean {sum(s for _, s in near_unrelated) / len(unrelated):.2f}); the unrelated requests "
        "closest to a training prompt: "
        + "; ".join(f"'{p}' → '{near}' {s:.2f}" for p, (near, s) in closest)
        + "."
    )
    record(f"Unfamiliar-prompt note: held-out phrasings vs unrelated requests ({ckpt})",
           "\n".join(rows), notes)  # fmt: skip


if __name__ == "__main__":
    main()
