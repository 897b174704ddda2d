"""Shared by the benchmark scripts: composing a run config, timing steps, recording results."""

import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from diffusion_lit import cli
from diffusion_lit.diffusion.precision import native_bf16

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DIFFUSION_LIT_DATA", str(ROOT / "data"))  # data/ from any folder
RESULTS = ROOT / "bench" / "RESULTS.md"
SMOKE = "--smoke" in sys.argv  # tiny sizes, a temporary folder, nothing recorded: for the tests
OUT = Path(tempfile.mkdtemp()) if SMOKE else ROOT / "outputs" / "bench"


# the training recipe before the recipe study (bench/recipe.py) and the one it chose (the
# defaults since), as settings over the defaults: benchmark tables stay reproducible
OLD_RECIPE = {
    "lr_scheduler.warmup_steps": 0, "lr_scheduler.cosine": False, "schedule.kind": "linear",
    "trainer.gradient_clip_val": None,
}  # fmt: skip
NEW_RECIPE = {
    "lr_scheduler.warmup_steps": 100, "lr_scheduler.cosine": True, "schedule.kind": "cosine",
    "trainer.gradient_clip_val": 1.0,
}  # fmt: skip


def option(name: str, default: str | None = None) -> str | None:
    """The value after ``name`` on the command line (``--steps 20``), else ``default``."""
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def overrides_of(settings: dict) -> list[str]:
    """OLD_RECIPE updated with ``settings``, as Hydra overrides."""

    def text(value) -> str:
        return (
            "null"
            if value is None
            else str(value).lower()
            if value in (True, False)
            else str(value)
        )

    return [f"{key}={text(value)}" for key, value in (OLD_RECIPE | settings).items()]


def config(overrides: list[str], name: str = "train"):
    cli.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def judged_checkpoint(args: list[str], images: int):
    """What a bench run on one checkpoint starts from, given its arguments ``<ckpt_path>
    [images=N] [overrides ...]``: the checkpoint, the images per class (``images`` unless given;
    2 in a smoke run), the evaluate CLI's config, its sampling options, and the pipeline, data
    and judge it would evaluate with."""
    from diffusion_lit.evaluate import check, model_data_judge

    ckpt, *overrides = args
    n = next((int(a.split("=")[1]) for a in overrides if a.startswith("images=")), images)
    overrides = [a for a in overrides if not a.startswith("images=")]
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    cfg = config([f"ckpt_path={ckpt}", *judge_dir, *overrides], name="evaluate")
    options = check(cfg)
    pipe, datamodule, judge, _, _ = model_data_judge(cfg)
    return ckpt, 2 if SMOKE else n, cfg, options, pipe, datamodule, judge


def data_option(overrides: list[str]) -> str:
    """The ``data`` config option a training config composes to (an experiment picks one)."""
    cli.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.runtime.choices.data


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    kernels = torch.backends.cpu.get_cpu_capability()  # AVX512, AVX2, ... (what ATen runs)
    bf16 = "native bf16" if native_bf16("cpu") else "no native bf16"
    return (f"{platform.machine()} CPU ({kernels} kernels, {bf16}), {torch.get_num_threads()} "
            f"threads, torch {torch.__version__}")  # fmt: skip


class StepClock:
    """Per-step wall times after ``warmup`` steps; median images per second."""

    def __init__(self, warmup: int):
        self.warmup, self.seconds, self.images, self.step = warmup, [], [], 0

    def start(self) -> None:
        sync()
        self.t0 = time.perf_counter()

    def stop(self, images: int) -> None:
        sync()
        if self.step >= self.warmup:
            self.seconds.append(time.perf_counter() - self.t0)
            self.images.append(images)
        self.step += 1

    def seconds_per_step(self) -> float:
        return statistics.median(self.seconds)

    def img_per_s(self) -> float:
        return statistics.median(n / s for n, s in zip(self.images, self.seconds, strict=True))


class LightningStepClock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.stop(len(batch[0]))


def record(title: str, table: str, notes: str = "") -> None:
    """Prints the table and, unless a smoke run, appends it to bench/RESULTS.md."""
    print(f"\n{title}\n\n{table}\n")
    if SMOKE:
        return
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = datetime.date.today().isoformat()
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — {title}\n\nMachine: {machine()}.\n\n```\n{command}\n```\n\n")
        f.write(f"{table}\n" + (f"\n{notes}\n" if notes else ""))
