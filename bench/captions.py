"""Does the model follow the words of its captions? Each variant of the quickstart's caption
recipe trains with each seed and is judged by the evaluation: class accuracy, FID ÷ real-vs-real
and diversity (the default prompts), held-out phrasings, and for each attribute the AUC of
"high" over "low" words (docs/data.md: Captions) on the trained class × word combinations, on the
held-out ones and on other words — each at every ``--attribute-scales`` (the scale of the words
beyond the class; 1.5, the guidance scale, is plain guidance), a request read from its own text
embedding and as its nearest training caption. A class-prompt model (``--baseline``: no
attribute captions) should sit near 0.5.

    python bench/captions.py [--shares 0.5,0.75] [--seeds 1,2] [--attribute-scales 1.5,3]
                             [--baseline] [--grid docs/results/attribute_grid.png] [--smoke]

``--grid`` draws, with the first attribute variant's first seed, a row per digit and a column
per word ("a thin seven", "a thick seven", "a seven, slanted left", ...), the last scale.
"""

import sys
import time
from pathlib import Path

from common import OUT, SMOKE, config, option, record
from omegaconf import open_dict

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.evaluate import evaluate, model_data_judge
from diffusion_lit.evaluation.attributes import attribute_following
from diffusion_lit.evaluation.metrics import real_sets
from diffusion_lit.images import save_grid
from diffusion_lit.pipeline import TextToImage, slugify
from diffusion_lit.train import train

SMOKE_OVERRIDES = ["data.image_size=8", "model.base_channels=4", "model.time_dim=8",
                   "schedule.timesteps=20", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "lr_scheduler.warmup_steps=0"]  # fmt: skip
READINGS = {"own": False, "nearest": True}
GRID_WORDS = [
    "a thin {}",
    "a thick {}",
    "a {}, slanted left",
    "a {}, upright",
    "a {}, slanted right",
]


def attribute_grid(ckpt, path, scale: float) -> None:
    """A row per class, a column per word of :data:`GRID_WORDS`, one image each (seed 0)."""
    pipe = TextToImage.from_checkpoint(ckpt, "cpu")
    names = pipe.model.prompts.class_names
    prompts = [w.format(n) for n in names for w in GRID_WORDS]
    options = SamplingOptions(seed=0, attribute_scale=scale, nearest_prompt=False,
                              **({"steps": 3} if SMOKE else {}))  # fmt: skip
    images = pipe(prompts, 1, options=options).images[:, 0]
    save_grid(images.unflatten(0, (len(names), len(GRID_WORDS))), path)
    print(f"attribute grid: {path}")


def trained(name: str, overrides: list[str], seed: int):
    """Trains one variant with one seed; its checkpoint and the seconds it took."""
    cfg = config(["experiment=quickstart", "~callbacks.sample_grid", "~callbacks.curves",
                  f"seed={seed}", *overrides, *(SMOKE_OVERRIDES if SMOKE else [])])  # fmt: skip
    run_dir = OUT / "captions" / f"{slugify(name)}-seed{seed}"
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    start = time.perf_counter()
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt", time.perf_counter() - start


def judged(ckpt, seconds: float, scales: list[float]) -> dict[float, dict]:
    """The evaluation of one checkpoint (class accuracy, FID, diversity, phrasings: the default
    prompts, the same at any attribute scale) and its attribute AUCs per scale and reading."""
    n = 2 if SMOKE else 50
    cfg = config([f"ckpt_path={ckpt}", "data=digits", f"classifier.dir={OUT / 'classifiers'}",
                  f"images_per_class={n}", "attribute_images_per_class=0",
                  f"phrasing_images_per_class={2 if SMOKE else 20}", f"out_dir={ckpt.parent}/eval",
                  *(["steps=3"] if SMOKE else [])], name="evaluate")  # fmt: skip
    result = evaluate(cfg)
    common = {"seconds": seconds, "accuracy": result["conditional_accuracy"],
              "fid": result["fid_ratio"], "diversity": result["diversity"],
              "heldout phrasings": result.get("heldout_phrasings_accuracy")}  # fmt: skip
    pipe, datamodule, *_ = model_data_judge(cfg)
    _, reference = real_sets(datamodule, n * len(datamodule.class_names))
    other = dict((cfg.get("heldout") or {}).get("attribute_phrasings") or {})
    rows = {}
    for scale in scales:
        row = dict(common)
        for reading, nearest in READINGS.items():
            options = SamplingOptions.from_config(cfg).replace(
                nearest_prompt=nearest, attribute_scale=scale
            )
            found = attribute_following(
                pipe, datamodule.attributes, datamodule.caption_templates, datamodule.heldout,
                other, reference, datamodule.class_names, 2 if SMOKE else 20, options,
            ).get("attributes", {})  # fmt: skip
            for attribute, scores in found.items():
                for key in ("trained", "heldout", "other_words"):
                    row[f"{attribute} {key} {reading}"] = scores.get(f"auc_{key}")
        rows[scale] = row
    return rows


def main() -> None:
    shares = [float(s) for s in option("--shares", "0.5,0.75").split(",")]
    seeds = [int(s) for s in option("--seeds", "1" if SMOKE else "1,2").split(",")]
    scales = [float(s) for s in option("--attribute-scales", "1.5,3").split(",")]
    variants = {f"attribute_share {s:g}": [f"data.attribute_share={s}"] for s in shares}
    if "--baseline" in sys.argv:
        variants = {"class prompts (no attributes)": ["~data.attributes"]} | variants
    grid = option("--grid", "")
    rows = {}
    for name, overrides in variants.items():
        ckpts = [trained(name, overrides, seed) for seed in seeds]
        if grid and name.startswith("attribute_share"):
            path = OUT / "attribute_grid.png" if SMOKE else Path(grid)
            attribute_grid(ckpts[0][0], path, scales[-1])
            grid = ""
        runs = [judged(ckpt, seconds, scales) for ckpt, seconds in ckpts]
        for scale in scales:
            rows[f"{name}, attribute_scale {scale:g}"] = [r[scale] for r in runs]
    keys = list(next(iter(rows.values()))[0])
    lines = ["| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]

    def cell(values) -> str:
        values = [v for v in values if v is not None]
        return f"{sum(values) / len(values):.3g}" if values else "—"

    for name, runs in rows.items():
        cells = [cell([r.get(k) for r in runs]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    record(
        "Captions: the quickstart's attribute recipe, judged (means over training seeds)",
        "\n".join(lines),
        f"Seeds {seeds}; the evaluate CLI's defaults; 50 images per class for accuracy, FID ÷ "
        "real and diversity (the default prompts, alike at every attribute scale), 20 per class "
        "and word for the attribute AUCs (P(measure of the high word's image > the low word's): "
        "thickness thin/thick, slant slanted left/right); 'own': a request read from its own "
        "text embedding, 'nearest': as its nearest training caption; 'heldout': class × word "
        "combinations no caption trained on; 'other_words': words no caption uses "
        "(conf/heldout/digits.yaml). Seconds: the whole training run.",
    )


if __name__ == "__main__":
    main()
