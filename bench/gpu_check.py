"""GPU check: the seed's configuration (56×56×3, batch 128, base 64, d_time 128, T = 1000) trains
on one GPU for a few hundred steps per variant — both UNets, each precision flag, channels_last —
and prints training img/s (median over steps after warm-up) and peak memory as a markdown table,
relative to the first row of the same run.

    python bench/gpu_check.py [extra Hydra overrides for every variant ...]
"""

import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from diffusion_lit.train import train

ROOT = Path(__file__).resolve().parents[1]
SEED_SIZE = [
    "trainer=gpu", "data=digits", "data.image_size=56", "data.channels=3", "data.batch_size=128",
    "model.base_channels=64", "model.time_dim=128", "trainer.max_epochs=-1",
    "+trainer.max_steps=300", "+trainer.enable_progress_bar=false",
    "callbacks.sample_grid.every_n_epochs=0", "~logger",
]  # fmt: skip
VARIANTS = {  # name: overrides
    "simple, 32": ["model=simple", "trainer.precision=32"],
    "enhanced, 32": ["model=enhanced", "trainer.precision=32"],
    "enhanced, bf16-mixed": ["model=enhanced", "trainer.precision=bf16-mixed"],
    "enhanced, 16-mixed": ["model=enhanced", "trainer.precision=16-mixed"],
    "enhanced, bf16-mixed, channels_last": [
        "model=enhanced", "trainer.precision=bf16-mixed", "channels_last=true"
    ],
}  # fmt: skip


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    def __init__(self, warmup: int = 10):
        self.warmup, self.times, self.images = warmup, [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self.start)
            self.images.append(batch[0].shape[0])


def run(overrides: list[str], run_dir: Path) -> tuple[float, float, float]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*SEED_SIZE, *overrides])
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
        cfg.callbacks.step_timer = {"_target_": f"{__name__}.StepTimer"}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    metrics, objects = train(cfg)
    timer = next(c for c in objects["trainer"].callbacks if isinstance(c, StepTimer))
    img_per_s = statistics.median(n / t for n, t in zip(timer.images, timer.times, strict=True))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return img_per_s, peak, metrics.get("val/loss", float("nan"))


def main() -> None:
    extra = sys.argv[1:]
    rows = {
        name: run([*overrides, *extra], Path("outputs/gpu_check") / f"v{i}")
        for i, (name, overrides) in enumerate(VARIANTS.items())
    }
    base = next(iter(rows.values()))[0]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{device}, torch {torch.__version__}, lightning {L.__version__}")
    print("| model, precision | img/s | × first row | peak GiB | val/loss |")
    print("|---|---|---|---|---|")
    for name, (ips, mem, loss) in rows.items():
        print(f"| {name} | {ips:.0f} | {ips / base:.2f} | {mem:.2f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
