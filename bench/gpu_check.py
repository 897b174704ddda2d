"""GPU check: the seed's configuration (56×56×3, batch 128, base 64, d_time 128, T = 1000) trains
on one GPU for a few hundred steps per variant — both UNets, each precision flag, channels_last —
and prints training img/s (median over steps after warm-up) and peak memory as a markdown table,
relative to the first row of the same run.

    python bench/gpu_check.py [extra Hydra overrides for every variant ...]
"""

import sys
from pathlib import Path

import lightning as L
import torch
from common import LightningStepClock, StepClock, config

from diffusion_lit.train import train

SEED_SIZE = [
    "trainer=gpu", "data=digits", "data.image_size=56", "data.channels=3", "data.batch_size=128",
    "model.base_channels=64", "model.time_dim=128", "trainer.max_epochs=-1",
    "trainer.max_steps=300", "trainer.enable_progress_bar=false",
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


def run(overrides: list[str], run_dir: Path) -> tuple[float, float, float]:
    cfg = config([*SEED_SIZE, *overrides, f"paths.run_dir={run_dir}"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(warmup=10)
    metrics, _ = train(cfg, extra_callbacks=[LightningStepClock(clock)])
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return clock.img_per_s(), peak, metrics.get("val/loss", float("nan"))


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
