"""Time to quality: the quickstart's training wall time until its samples pass each target —
conditional accuracy ≥ 98 %, FID ≤ 1.5× real-vs-real, diversity ≥ 0.85 of the real images' —
for the old recipe and the new one, side by side. Every ``--every`` epochs the EMA weights are
judged (20 images per class, the model's own guidance as the sample CLI's default, DDPM 100
steps for speed); judging is not counted in the wall time.

    python bench/time_to_quality.py [--every 5] [--smoke]
"""

import sys
import time
from pathlib import Path

import lightning as L
import torch
from common import NEW_RECIPE, OUT, SMOKE, config, overrides_of, record
from omegaconf import open_dict

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.evaluate import evaluate
from diffusion_lit.evaluation.judge import load_classifier
from diffusion_lit.evaluation.metrics import evaluate_samples, real_sets
from diffusion_lit.train import train
from diffusion_lit.training.config import build, own_guidance
from diffusion_lit.training.ema import averaged_module

TARGETS = {
    "accuracy ≥ 98 %": lambda r: r["conditional_accuracy"] >= 0.98,
    "FID ≤ 1.5× real": lambda r: r["fid_ratio"] <= 1.5,
    "diversity ≥ 0.85": lambda r: r["diversity"] >= 0.85,
}
RECIPES = {"old": overrides_of({}), "new (the defaults)": overrides_of(NEW_RECIPE)}
SMOKE_OVERRIDES = [
    "data.image_size=8", "model.base_channels=4", "model.time_dim=8", "schedule.timesteps=20",
    "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
]  # fmt: skip


class Stopwatch(L.Callback):
    """Judges samples every ``every`` epochs, stops training once every target is met."""

    def __init__(self, judge, real, reference, every: int, per_class: int = 20):
        self.judge, self.real, self.reference = judge, real, reference
        self.every, self.per_class = every, per_class
        self.trained_seconds, self.rows = 0.0, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.trained_seconds += time.perf_counter() - self.t0
        if (trainer.current_epoch + 1) % self.every:
            return
        model = averaged_module(trainer, pl_module).model
        images = model.sample_classes(
            self.per_class, pl_module.spec.guidance, SamplingOptions(steps=5 if SMOKE else 100)
        )
        labels = torch.arange(len(images)).repeat_interleave(self.per_class)
        names = model.prompts.class_names
        r = evaluate_samples(self.judge, images.flatten(0, 1) * 2 - 1, labels, self.real,
                             self.reference, names)  # fmt: skip
        self.rows.append((trainer.current_epoch, self.trained_seconds, r))
        if all(target(r) for target in TARGETS.values()):
            trainer.should_stop = True


def main() -> None:
    every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else 5
    every = 1 if SMOKE else every
    table = ["| recipe | " + " | ".join(f"min to {t}" for t in TARGETS) + " | epochs judged |",
             "|---" * (len(TARGETS) + 2) + "|"]  # fmt: skip
    for recipe, overrides in RECIPES.items():
        cfg = config(["experiment=quickstart", "~callbacks.sample_grid", "~callbacks.curves",
                      *overrides, *(SMOKE_OVERRIDES if SMOKE else [])])  # fmt: skip
        judge_cfg = config(["data=digits", f"data.image_size={cfg.data.image_size}",
                            f"classifier.dir={OUT / 'classifiers'}", "train_classifier=true"],
                           name="evaluate")  # fmt: skip
        judge, _ = load_classifier(Path(evaluate(judge_cfg)["classifier"]))
        datamodule = build(cfg.data)
        datamodule.setup("fit")  # the split evaluate uses: the same data config and seed
        per_class = 20
        reference = real_sets(datamodule, per_class * len(datamodule.class_names))
        stopwatch = Stopwatch(judge, *reference, every, per_class)
        with open_dict(cfg):
            cfg.paths.run_dir = str(OUT / "time_to_quality" / recipe.split()[0])
        train(cfg, extra_callbacks=[stopwatch])
        minutes = [
            next((f"{s / 60:.1f}" for _, s, r in stopwatch.rows if target(r)), "not reached")
            for target in TARGETS.values()
        ]
        table.append(f"| {recipe} | " + " | ".join(minutes) + f" | {len(stopwatch.rows)} |")
        print(table[-1], flush=True)
        for epoch, seconds, r in stopwatch.rows:
            print(f"  {recipe}: epoch {epoch}, {seconds:.0f} s: accuracy "
                  f"{r['conditional_accuracy']:.1%}, FID ÷ real {r['fid_ratio']:.2f}, "
                  f"diversity {r['diversity']:.2f}")  # fmt: skip
    record("Time to quality: the quickstart until each target, old vs new recipe",
           "\n".join(table), notes=f"Judged every {every} epochs: 20 images per class, "
           f"the model's own {own_guidance(cfg)} (the sample CLI's default), "
           "DDPM 100 steps, EMA weights.")  # fmt: skip


if __name__ == "__main__":
    main()
