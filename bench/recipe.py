"""Sample quality per minute of training: each recipe variant trains the same data for the same
wall-clock budget on this machine, then is judged by the evaluation (conditional accuracy, FID
÷ real-vs-real, diversity, precision/recall in the judge's features).

    python bench/recipe.py [--budget SECONDS] [--experiment quickstart] [--only NAME,NAME]
                           [--guidance 1.5] [--images 50] [overrides ...] [--smoke]

``--only`` takes variant names, comma-separated (e.g. ``--only "+ warm-up + cosine"``);
``--images`` is the number of samples per class each variant is judged on.

A variant's budget becomes a step count: a short probe run measures its seconds per step, and
the real run gets ``trainer.max_steps`` = budget ÷ that, so the learning-rate schedule knows
its horizon. Overrides after the options apply to every variant (e.g. ``data=fashion_mnist``).
"""

import shutil
import sys
import time

from common import (
    NEW_RECIPE,
    OUT,
    SMOKE,
    LightningStepClock,
    StepClock,
    config,
    data_option,
    option,
    overrides_of,
    record,
)
from omegaconf import open_dict

from diffusion_lit.evaluate import evaluate
from diffusion_lit.pipeline import slugify
from diffusion_lit.train import train

BASE = ["~callbacks.sample_grid", "~callbacks.curves"]
WARMUP_COSINE = {"lr_scheduler.warmup_steps": 100, "lr_scheduler.cosine": True}
CLIP = {"trainer.gradient_clip_val": 1.0}
# each variant: settings over OLD_RECIPE (common.py), so that a table stays reproducible when
# the defaults change (they are NEW_RECIPE now: "+ warm-up + cosine + clip 1.0 + cosine β")
VARIANTS = {
    "quickstart (Adam; constant lr; ε)": {},
    "+ warm-up + cosine": WARMUP_COSINE,
    "+ warm-up + cosine + AdamW wd 0.01": WARMUP_COSINE | {
        "optimizer._target_": "torch.optim.AdamW", "optimizer.weight_decay": 0.01
    },
    "+ warm-up + cosine + clip 1.0": WARMUP_COSINE | CLIP,
    "+ warm-up + cosine + min-SNR-5": WARMUP_COSINE | {"min_snr_gamma": 5},
    "+ warm-up + cosine + v": WARMUP_COSINE | {"schedule.prediction": "v"},
    "+ warm-up + cosine + v + zero-SNR": WARMUP_COSINE | {
        "schedule.prediction": "v", "schedule.zero_terminal_snr": True
    },
    "+ warm-up + cosine + x0": WARMUP_COSINE | {"schedule.prediction": "x0"},
    "+ warm-up + cosine + cosine β": WARMUP_COSINE | {"schedule.kind": "cosine"},
    "+ warm-up + cosine + width 64": WARMUP_COSINE | {"model.base_channels": 64},
    "+ warm-up + cosine + batch 128": WARMUP_COSINE | {"data.batch_size": 128},
    "+ warm-up + cosine + clip 1.0 + cosine β": WARMUP_COSINE | CLIP | {"schedule.kind": "cosine"},
    "+ warm-up + cosine + clip 1.0 + v": WARMUP_COSINE | CLIP | {"schedule.prediction": "v"},
    # the new recipe (the defaults) at other sizes, for 28 px
    "new: width 32": NEW_RECIPE | {"model.base_channels": 32},
    "new: width 48": NEW_RECIPE | {"model.base_channels": 48},
    "new: width 64": NEW_RECIPE | {"model.base_channels": 64},
    "new: width 48 + batch 64": NEW_RECIPE | {"model.base_channels": 48, "data.batch_size": 64},
    "new: enhanced width 32": NEW_RECIPE | {"model": "enhanced", "model.base_channels": 32},
}  # fmt: skip
SMOKE_OVERRIDES = [
    "data.image_size=8", "model.base_channels=4", "model.time_dim=8", "schedule.timesteps=20",
    "trainer.enable_progress_bar=false", "lr_scheduler.warmup_steps=2",
]  # fmt: skip


def overrides_given() -> list[str]:
    options = ("--budget", "--only", "--experiment", "--guidance", "--images")
    skip = {i + 1 for i, a in enumerate(sys.argv) if a in options}
    return [a for i, a in enumerate(sys.argv[1:], 1) if "=" in a and i not in skip]


def seconds_per_step(overrides: list[str], steps: int) -> float:
    clock = StepClock(warmup=3)
    cfg = config([*overrides, f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
                  "~callbacks.model_checkpoint", "~callbacks.last_checkpoint",
                  "~callbacks.step_checkpoint", "trainer.limit_val_batches=0"])  # fmt: skip
    with open_dict(cfg):
        cfg.paths.run_dir = str(OUT / "recipe" / "probe")
    train(cfg, extra_callbacks=[LightningStepClock(clock)])
    return clock.seconds_per_step()


def run(name: str, overrides: list[str], budget: float) -> dict:
    steps = max(5, int(budget / seconds_per_step(overrides, 8 if SMOKE else 30)))
    cfg = config([*overrides, f"trainer.max_steps={steps}", "trainer.max_epochs=-1"])
    run_dir = OUT / "recipe" / slugify(name)
    shutil.rmtree(run_dir, ignore_errors=True)  # an earlier run's checkpoint would be resumed
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    data = [f"data={data_option(overrides)}", *(a for a in overrides if a.startswith("data."))]
    result = evaluate(config_evaluate(run_dir, data))
    return result | {"train_steps": steps, "train_seconds": seconds}


def config_evaluate(run_dir, data: list[str]):
    """The same judging for every variant: the last checkpoint, DDPM 100 steps, ``--guidance``
    (the sample CLI's 1.5 by default), ``--images`` per class; no phrasing rows (the table has
    none)."""
    n, steps = (2, 5) if SMOKE else (int(option("--images", "50")), 100)
    return config([
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *data, f"images_per_class={n}",
        "phrasing_images_per_class=0", "attribute_images_per_class=0",
        f"steps={steps}", "sampler=ddpm", f"guidance_scale={option('--guidance', '1.5')}",
        f"out_dir={run_dir / 'eval'}",
        f"classifier.dir={OUT / 'classifiers'}",
    ], name="evaluate")  # fmt: skip


def main() -> None:
    budget = float(option("--budget", "2" if SMOKE else "120"))
    experiment = f"experiment={option('--experiment', 'quickstart')}"
    only = option("--only", "")
    chosen = {k: v for k, v in VARIANTS.items() if not only or k in only.split(",")}
    if SMOKE:
        chosen = dict(list(chosen.items())[:2])
    extra = overrides_given() + (SMOKE_OVERRIDES if SMOKE else [])
    rows = ["| variant | steps | train s | accuracy | FID ÷ real | diversity | precision "
            "| recall |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, settings in chosen.items():
        r = run(name, [experiment, *BASE, *overrides_of(settings), *extra], budget)
        rows.append(
            f"| {name} | {r['train_steps']} | {r['train_seconds']:.0f} "
            f"| {r['conditional_accuracy']:.1%} "
            f"| {r['fid_ratio']:.2f} | {r['diversity']:.2f} | {r['precision']:.2f} "
            f"| {r['recall']:.2f} |"
        )
        print(rows[-1], flush=True)
    record(
        f"Recipe: quality after the same {budget:.0f} s training budget per variant ({experiment})",
        "\n".join(rows),
        notes=f"Judged with DDPM 100 steps, guidance {option('--guidance', '1.5')}, "
        f"{option('--images', '50')} images per class, EMA weights; "
        "FID in the judge's quality features, ÷ real-vs-real. Overrides for all: "
        f"`{' '.join(extra) or 'none'}`.",
    )


if __name__ == "__main__":
    main()
