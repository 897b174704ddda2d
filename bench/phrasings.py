"""Prompts the model never saw, side by side on one checkpoint: conditional accuracy on its
training phrasings and on the held-out ones (conf/heldout/<data>.yaml), each held-out prompt
drawn as its nearest training prompt (``nearest_prompt=true``, the default) and from its own
text embedding; and how often the nearest training prompt is one of the right class (what the
first can reach). Sampled with the evaluate CLI's defaults, judged by its classifier.

    python bench/phrasings.py <ckpt_path> data=<the training data> [images=N] [--smoke]
"""

import sys

from common import OUT, SMOKE, config, record

from diffusion_lit.evaluate import check, model_data_judge
from diffusion_lit.evaluation.phrasings import phrasing_sets, prompt_accuracy


def main() -> None:
    ckpt, *overrides = [a for a in sys.argv[1:] if a != "--smoke"]
    n = next((int(a.split("=")[1]) for a in overrides if a.startswith("images=")), 50)
    n = 2 if SMOKE else n
    overrides = [a for a in overrides if not a.startswith("images=")]
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    cfg = config([f"ckpt_path={ckpt}", *judge_dir, *overrides], name="evaluate")
    options = check(cfg)
    pipe, datamodule, judge, _, _ = model_data_judge(cfg)
    guidance = options.guidance(pipe.model.guidance)  # the model's where cfg has null
    classes = datamodule.class_names
    labels = list(range(len(classes)))
    sets = phrasing_sets(pipe, cfg.get("heldout"), classes)
    if "heldout_phrasings" not in sets:
        raise SystemExit("This data has no held-out phrasings (conf/heldout/<data>.yaml).")

    trained, _ = prompt_accuracy(sets["training_phrasings"], labels, n, options, pipe, judge)
    rows = ["| held-out prompts drawn | training phrasings | held-out phrasings | gap |",
            "|---|---|---|---|"]  # fmt: skip
    for name, nearest in [("from their own embedding", False),
                          ("as the nearest training prompt (the default)", True)]:  # fmt: skip
        drawn = options.replace(nearest_prompt=nearest)
        held, _ = prompt_accuracy(sets["heldout_phrasings"], labels, n, drawn, pipe, judge)
        rows.append(f"| {name} | {trained:.1%} | {held:.1%} | {100 * (trained - held):.1f} |")

    owner = {p: c for c, ps in enumerate(pipe.model.prompts.class_prompts) for p in ps}
    heldout = {p: c for c, ps in enumerate(sets["heldout_phrasings"]) for p in ps}
    found = pipe.read(list(heldout))
    right = sum(owner[f.nearest] == c for f, c in zip(found, heldout.values(), strict=True))
    record(
        f"Prompts the model never saw: own embedding vs nearest training prompt ({ckpt})",
        "\n".join(rows),
        f"`{n}` images per class for each set (cycling through the class's prompts), "
        f"{len(heldout)} held-out prompts, {options.sampler} {options.steps} steps, "
        f"{guidance}, EMA weights; gap in points. The nearest "
        f"training prompt (cosine of pooled text embeddings) is one of the right class for "
        f"{right} of the {len(heldout)} held-out prompts ({right / len(heldout):.0%}).",
    )


if __name__ == "__main__":
    main()
