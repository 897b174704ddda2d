"""Extending a trained model without forgetting (docs/extending.md). A base model trained on
some of the classes (digits 0–7, or Fashion-MNIST's first 8), then the rest (8 and 9, or bag and
ankle boot) added by each mode — every weight with generated replay (the base's predictions
distilled on its samples, or plain: the drawn noise as their targets), with the old classes' real
images, with no replay, and LoRA adapters with generated replay (distilled or plain) — each judged
by the evaluation on the old classes (before: the base; after: the extension) and on the new ones:
accuracy, FID ÷ real-vs-real and diversity; the extension's wall time (its replay images drawn
included) as a fraction of the base's training; the files.

    python bench/extend.py [--modes full-generated,full-generated-plain,full-data,...]
                           [--dataset digits|fashion_mnist] [--reuse-base] [--smoke]
                           [Hydra overrides for the extensions ...]

``--reuse-base`` takes the base (and its training time) an earlier run of this script left in
outputs/bench/extend[-fashion_mnist]/base, so that extension recipes can be compared without
training it again. Fashion-MNIST reads its files offline: `make fashion-mnist` first.
"""

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import OUT, SMOKE, config, option, record
from omegaconf import open_dict

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.evaluate import evaluate
from diffusion_lit.export import export
from diffusion_lit.train import train


@dataclass
class Setting:
    """One dataset's table: the base's classes and those added, how the table names the base's,
    the experiments that train the base and the extensions, the judge's data config, overrides
    for every run (training and judging) and the recipe's words for the notes."""

    old: list[str]
    new: list[str]
    span: str  # the base's classes, in the table
    base: str
    extension: str
    data: str
    overrides: list[str]
    recipe: str


FASHION = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker"]
SETTINGS = {
    "digits": Setting(
        ["zero", "one", "two", "three", "four", "five", "six", "seven"], ["eight", "nine"], "0–7",
        "quickstart", "quickstart_extend", "digits", [],
        "the quickstart on 0–7 (60 epochs); each extension: experiment=quickstart_extend (40 "
        "epochs, lr 2e-3, LoRA 5e-3, 10 warm-up steps; replay fraction 0.5, 32 images per old "
        "class",
    ),
    "fashion_mnist": Setting(
        FASHION, ["bag", "ankle boot"], "first 8", "fashion_mnist", "fashion_mnist_extend",
        "fashion_mnist", ["data.download=false"],  # offline: `make fashion-mnist` first
        "experiment=fashion_mnist on its first 8 classes (10 epochs); each extension: "
        "experiment=fashion_mnist_extend (2 epochs, lr 1e-3, LoRA 5e-3, 10 warm-up steps; replay "
        "fraction 0.8, 64 images per old class",
    ),
}  # fmt: skip
MODES = {
    # replay=generated distills the base's predictions on its own samples (the default)
    "full-generated": ["replay=generated"],
    # the same samples with the drawn noise as their targets (DreamBooth's prior preservation)
    "full-generated-plain": ["replay=generated", "replay.distill=false"],
    "full-data": ["replay=data"],
    "full-none": ["replay=none"],
    # adapters start at zero and have few weights: a higher learning rate than full fine-tuning
    "lora-generated": ["finetune=lora", "replay=generated", "optimizer.lr=5e-3"],
    "lora-generated-plain": [
        "finetune=lora",
        "replay=generated",
        "replay.distill=false",
        "optimizer.lr=5e-3",
    ],  # fmt: skip
}
SMOKE_OVERRIDES = ["data.image_size=8", "model.base_channels=4", "model.time_dim=8",
                   "schedule.timesteps=20", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "lr_scheduler.warmup_steps=0", "replay.images_per_class=2"]  # fmt: skip


def names(classes: list[str]) -> str:
    """A Hydra list of class names, each quoted (``t-shirt/top``, ``ankle boot``)."""
    return "[" + ",".join(f'"{c}"' for c in classes) + "]"


def folder(setting: Setting) -> Path:
    """Where a dataset's runs go."""
    return OUT / ("extend" if setting is SETTINGS["digits"] else f"extend-{setting.base}")


def trained(setting: Setting, name: str, overrides: list[str], experiment: str):
    """One training run of an experiment; its last checkpoint and its wall time."""
    cfg = config([f"experiment={experiment}", "~callbacks.sample_grid", "~callbacks.curves",
                  *setting.overrides, *overrides, *(SMOKE_OVERRIDES if SMOKE else [])])  # fmt: skip
    run_dir = folder(setting) / name
    shutil.rmtree(run_dir, ignore_errors=True)  # an earlier run's: train afresh, not resume it
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    start = time.perf_counter()
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt", time.perf_counter() - start


def judged(setting: Setting, ckpt: Path, which: str) -> dict:
    """The evaluation's accuracy, FID ratio and diversity on the old or the new classes."""
    classes = setting.old if which == "old" else setting.new
    cfg = config([f"ckpt_path={ckpt}", f"data={setting.data}", *setting.overrides,
                  f"classifier.dir={OUT / 'classifiers'}",
                  f"images_per_class={2 if SMOKE else 50}", "phrasing_images_per_class=0",
                  "attribute_images_per_class=0", f"classes={names(classes)}",
                  f"out_dir={ckpt.parent}/eval-{which}", *(["steps=3"] if SMOKE else [])],
                 name="evaluate")  # fmt: skip
    result = evaluate(cfg)
    return {k: result[k] for k in ("conditional_accuracy", "fid_ratio", "diversity")}


def size(path: Path) -> int:
    """Bytes of a file, or of a folder's files."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.iterdir())


def exported(setting: Setting, ckpt: Path, name: str) -> Path:
    """The checkpoint's export (an adapter folder for a LoRA run)."""
    cfg = config([f"ckpt_path={ckpt}", f"out_dir={folder(setting) / 'exports' / name}",
                  "overwrite=true"], name="export")  # fmt: skip
    return export(cfg)


def overrides_given() -> list[str]:
    """The command line's Hydra overrides (``key=value``), for every extension."""
    return [a for a in sys.argv[1:] if "=" in a and not a.startswith("--")]


def the_base(setting: Setting, reuse: bool) -> tuple[Path, float]:
    """The base model (trained here, or an earlier run's with ``reuse``) and its training time."""
    record_file = folder(setting) / "base.json"
    if reuse and record_file.is_file():
        found = json.loads(record_file.read_text())
        return Path(found["ckpt"]), found["seconds"]
    ckpt, seconds = trained(setting, "base", [f"data.classes={names(setting.old)}"], setting.base)
    record_file.write_text(json.dumps({"ckpt": str(ckpt), "seconds": seconds}))
    return ckpt, seconds


def main() -> None:
    modes = option("--modes", ",".join(MODES)).split(",")
    dataset = option("--dataset", "digits")
    setting = SETTINGS[dataset]
    extra = overrides_given()
    base, base_seconds = the_base(setting, "--reuse-base" in sys.argv)
    base_size = size(exported(setting, base, "base"))
    before = judged(setting, base, "old")
    span = f"{len(setting.old)}+{len(setting.new)}"
    lines = [
        "| mode | old acc | old FID ratio | old diversity | new acc | new FID ratio | "
        "new diversity | time ÷ base | file (MB) | ÷ base file |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| base ({setting.span}), before | {before['conditional_accuracy']:.1%} | "
        f"{before['fid_ratio']:.2f} | {before['diversity']:.2f} | — | — | — | 1 "
        f"({base_seconds:.0f} s) | {base_size / 1e6:.1f} | 1 |",
    ]
    for mode in modes:
        overrides = [f"data.classes={names(setting.new)}", f"init_from={base}", *MODES[mode],
                     *extra]  # fmt: skip
        ckpt, seconds = trained(setting, mode, overrides, setting.extension)
        old, new = judged(setting, ckpt, "old"), judged(setting, ckpt, "new")
        file_size = size(exported(setting, ckpt, mode))
        lines.append(
            f"| {mode} | {old['conditional_accuracy']:.1%} | {old['fid_ratio']:.2f} | "
            f"{old['diversity']:.2f} | {new['conditional_accuracy']:.1%} | "
            f"{new['fid_ratio']:.2f} | {new['diversity']:.2f} | {seconds / base_seconds:.2f} "
            f"({seconds:.0f} s) | {file_size / 1e6:.2f} | {file_size / base_size:.3f} |"
        )
    options = SamplingOptions()
    eta = "" if options.noise_level is None else f", η = {options.noise_level:g}"
    defaults = f"{options.sampler} {options.steps} steps{eta}"
    record(
        f"Extending a model: {dataset} {span}, the last {len(setting.new)} classes added by "
        "each mode",
        "\n".join(lines),
        f"The base: {setting.recipe} drawn with {defaults}, distilled but in the plain modes; "
        "replay=data distils too), init_from the base, data.classes="
        f"{names(setting.new)}{', ' + ' '.join(extra) if extra else ''}. The evaluate CLI's "
        f"defaults ({defaults}, each model's guidance), 50 images per class, "
        "classes=[...] (the judge knows all the classes); FID ratio ÷ real-vs-real of the same "
        "classes. Time: the whole training run, its replay images drawn included. File: the "
        "export (an adapter folder for LoRA).",
    )


if __name__ == "__main__":
    main()
