"""Time to quality: the quickstart's training wall time until its samples' conditional accuracy
(judged by the digits classifier) passes 90 %. After every epoch, 10 images per class (100 DDPM
steps, EMA weights) are judged; that judging is not counted in the wall time.

    python bench/time_to_quality.py [--smoke]
"""

import time
from pathlib import Path

import lightning as L
import torch
from common import OUT, ROOT, SMOKE, config, record
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from diffusion_lit.callbacks import averaged_module
from diffusion_lit.evaluate import evaluate
from diffusion_lit.evaluation import conditional_accuracy, load_classifier
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.train import train

TARGET = 0.9
SMOKE_OVERRIDES = [
    "data.image_size=8", "model.base_channels=4", "model.time_dim=8", "schedule.timesteps=20",
    "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
]  # fmt: skip


class Stopwatch(L.Callback):
    """Judges samples after each epoch, stops training once accuracy reaches the target."""

    def __init__(self, judge, per_class: int = 10, steps: int = 100):
        self.judge, self.per_class, self.steps = judge, per_class, steps
        self.trained_seconds, self.rows = 0.0, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.trained_seconds += time.perf_counter() - self.t0
        pipe = TextToImage(averaged_module(trainer, pl_module))
        images = pipe(None, num_images=self.per_class, steps=self.steps, progress=False)
        labels = torch.arange(len(images)).repeat_interleave(self.per_class)
        samples = images.flatten(0, 1) * 2 - 1  # the judge takes [−1, 1]
        names = pl_module.hparams.class_names
        acc = conditional_accuracy(self.judge, samples, labels, names)["conditional_accuracy"]
        self.rows.append((trainer.current_epoch, self.trained_seconds, acc))
        if acc >= TARGET:
            trainer.should_stop = True


def main() -> None:
    overrides = ["experiment=quickstart", "~callbacks.sample_grid", "~callbacks.curves"]
    if SMOKE:
        overrides += SMOKE_OVERRIDES
    cfg = config(overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        judge_cfg = compose("evaluate", overrides=[
            "train_classifier=true", f"data.image_size={cfg.data.image_size}", "data.num_workers=0",
            f"classifier.dir={OUT / 'classifiers'}",
        ])  # fmt: skip
    judge, _ = load_classifier(Path(evaluate(judge_cfg)["classifier"]))
    stopwatch = Stopwatch(judge, steps=5 if SMOKE else 100)
    with open_dict(cfg):
        cfg.paths.run_dir = str(OUT / "time_to_quality")
    train(cfg, extra_callbacks=[stopwatch])
    rows = ["| epoch | training wall time (s) | conditional accuracy |", "|---|---|---|"]
    rows += [f"| {e} | {s:.0f} | {a:.1%} |" for e, s, a in stopwatch.rows]
    reached = next((s for _, s, a in stopwatch.rows if a >= TARGET), None)
    notes = (f"Reached {TARGET:.0%} after {reached:.0f} s of training." if reached
             else f"Did not reach {TARGET:.0%} in {len(stopwatch.rows)} epochs.")  # fmt: skip
    record("Time to quality: the quickstart until 90 % conditional accuracy", "\n".join(rows),
           notes=notes)  # fmt: skip


if __name__ == "__main__":
    main()
