"""Evaluation entry point: ``python -m diffusion_lit.evaluate ckpt_path=<ckpt> data=<data>``.

Loads the judge classifier for the data (training and caching it the first time), samples
``images_per_class`` images for every class prompt, and writes ``eval.json``, ``eval.md`` and
``grid.png`` next to the checkpoint."""

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, open_dict

from diffusion_lit import checks
from diffusion_lit.config import build
from diffusion_lit.data import class_prompts
from diffusion_lit.errors import UserError, report_user_errors
from diffusion_lit.evaluation import (
    evaluate_samples,
    has_classifier,
    load_classifier,
    predict,
    real_sets,
    save_classifier,
    timed,
    train_classifier,
)
from diffusion_lit.models.classifier import ImageClassifier
from diffusion_lit.pipeline import TextToImage, save_grid
from diffusion_lit.precision import sampling_precision
from diffusion_lit.run_dir import RunDir
from diffusion_lit.spec import guidance_text

log = logging.getLogger(__name__)


JUDGE_VERSION = 2  # the judge's layers and features; a cached judge of another is retrained


def classifier_path(cfg: DictConfig) -> Path:
    dataset = cfg.data.dataset._target_.rsplit(".", 1)[-1]
    name = f"{dataset}_{cfg.data.image_size}px_{cfg.data.channels}ch_v{JUDGE_VERSION}"
    return Path(cfg.classifier.dir) / name


def judge_for(cfg: DictConfig, datamodule) -> tuple[ImageClassifier, dict, Path]:
    """The judge for the data: trained on its training images and cached, the first time (or
    with ``train_classifier=true``); else loaded from the cache."""
    path = classifier_path(cfg)
    if not cfg.train_classifier and has_classifier(path):
        return *load_classifier(path), path
    log.info("Training the judge classifier for this data (cached as %s)", path)
    classes = datamodule.class_names
    judge, acc = train_classifier(
        datamodule.train_set, datamodule.val_set, cfg.data.channels, len(classes),
        epochs=cfg.classifier.epochs, batch_size=cfg.classifier.batch_size,
        lr=cfg.classifier.lr, seed=cfg.seed,
    )  # fmt: skip
    meta = {"classes": classes, "image_size": cfg.data.image_size,
            "channels": cfg.data.channels, "val_accuracy": acc}  # fmt: skip
    save_classifier(judge, path, meta)
    log.info("Judge classifier: %.1f%% on held-out images", 100 * acc)
    return judge, meta, path


def default_out_dir(cfg: DictConfig, result: dict) -> Path:
    """Named by the settings sampled with (``result``: the model's guidance where the command
    left it null, ``auto`` precision resolved)."""
    ckpt = Path(cfg.ckpt_path)
    raw = "" if cfg.use_ema else "-raw"
    spacing = "" if cfg.timestep_spacing == "linspace" else f"-{cfg.timestep_spacing}"
    start, stop = result["guidance_interval"]
    interval = "" if (start, stop) == (0, 1) else f"-i{start:g}-{stop:g}"
    bf16 = "-bf16" if result["sampling_precision"] == "bf16-mixed" else ""
    return RunDir.evaluation_dir(
        ckpt,
        f"{cfg.sampler}{cfg.steps}{spacing}-w{result['guidance_scale']:g}{interval}{bf16}{raw}",
    )


def to_rgb01(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] images with 1 or 3 channels → RGB in [0, 1], as the standard metrics take them."""
    return ((x + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)


def standard_metrics(cfg: DictConfig, real: torch.Tensor, fake: torch.Tensor, prompts) -> dict:
    """Inception FID/KID and CLIPScore where their weights are available; a note otherwise."""
    result, notes = {}, {}
    if cfg.inception_weights:
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance

            fid = FrechetInceptionDistance(
                feature_extractor_weights_path=cfg.inception_weights, normalize=True
            )
            fid.update(to_rgb01(real), real=True)
            fid.update(to_rgb01(fake), real=False)
            result["fid_inception"] = fid.compute().item()
        except Exception as err:  # an optional extra: never fail the evaluation over it
            notes["fid_inception"] = f"skipped: {err}"
    else:
        notes["fid_inception"] = "skipped: no Inception weights offline (inception_weights=<path>)"
    if cfg.clip_model:
        try:
            from torchmetrics.multimodal.clip_score import CLIPScore

            score = CLIPScore(model_name_or_path=cfg.clip_model)
            images = (to_rgb01(fake) * 255).to(torch.uint8)
            result["clip_score"] = score(images, prompts).item()
        except Exception as err:
            notes["clip_score"] = f"skipped: {err}"
    else:
        notes["clip_score"] = "skipped: no CLIP weights offline (clip_model=<name or path>)"
    return result | ({"notes": notes} if notes else {})


def check(cfg: DictConfig) -> dict:
    """The evaluate CLI's values (see :mod:`diffusion_lit.checks`); returns the sampling options
    (the pipeline's keyword arguments)."""
    options = checks.sampling(cfg)
    checks.data(cfg)
    checks.flag(cfg, "train_classifier")
    checks.path(cfg, "classifier.dir")
    checks.integer(cfg, "classifier.epochs", 1, 10_000)
    checks.integer(cfg, "classifier.batch_size", 1, 1_000_000)
    checks.real(cfg, "classifier.lr", 0, 10, above=True)
    checks.integer(cfg, "images_per_class", 1, 100_000)
    checks.integer(cfg, "phrasing_images_per_class", 0, 100_000)
    checks.out_dir(cfg, optional=True)
    weights = checks.path(cfg, "inception_weights", optional=True)
    if weights is not None and not weights.is_file():
        raise UserError(
            f"inception_weights={str(weights)!r} is not a file: pass the FID Inception weights' "
            "path, or leave it null to skip that metric."
        )
    if checks.value(cfg, "clip_model") is not None:
        checks.path(cfg, "clip_model")
    return options


def model_data_judge(cfg: DictConfig):
    """The checkpoint's pipeline (None without ``ckpt_path``), the data set up at the size the
    model generates, and the judge for that data with its metadata and path; refuses a judge,
    data and checkpoint that disagree on the classes."""
    pipe = None
    if cfg.ckpt_path:
        pipe = TextToImage.from_checkpoint(cfg.ckpt_path, cfg.device, use_ema=cfg.use_ema)
        with open_dict(cfg):  # evaluate at the size the model generates
            cfg.data.image_size = pipe.module.net.image_size
            cfg.data.channels = pipe.module.net.in_channels
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    classes = datamodule.class_names
    judge, meta, path = judge_for(cfg, datamodule)
    if pipe is not None:
        trained_on = list(pipe.module.hparams.class_names)
        if meta["classes"] != classes or trained_on != classes:
            raise UserError(
                f"The judge at {path} knows classes {meta['classes']}, the data has {classes} "
                f"and the checkpoint {trained_on}: pass the data the model was trained on, and "
                "retrain the judge (train_classifier=true) if the data changed."
            )
    return pipe, datamodule, judge, meta, path


def evaluate(cfg: DictConfig) -> dict:
    """Returns the evaluation (or, with no checkpoint, the judge's held-out accuracy)."""
    options = check(cfg)
    pipe, datamodule, judge, meta, path = model_data_judge(cfg)
    if pipe is None:
        if not cfg.train_classifier:
            raise UserError(
                "Nothing to do: give ckpt_path=<checkpoint> and/or train_classifier=true."
            )
        return {"classifier_accuracy": meta["val_accuracy"], "classifier": str(path)}
    classes = datamodule.class_names
    options = pipe.module.sampling_options(options)  # the model's guidance where cfg has null

    n = cfg.images_per_class
    images, seconds = timed(pipe, None, num_images=n, **options)
    samples = images.flatten(0, 1) * 2 - 1  # (C·n, ch, H, W) in [−1, 1], like the real images
    labels = torch.arange(len(classes)).repeat_interleave(n)
    heldout, reference = real_sets(datamodule, len(samples))

    result = {
        "checkpoint": str(cfg.ckpt_path),
        "sampler": cfg.sampler, "steps": cfg.steps, "timestep_spacing": cfg.timestep_spacing,
        "eta": cfg.eta,
        # not "precision": that is the samples' precision (with recall) below
        "sampling_precision": sampling_precision(options["precision"], pipe.module.device.type),
        "guidance_scale": options["guidance_scale"],
        "guidance_interval": list(options["guidance_interval"]),
        "use_ema": cfg.use_ema, "seed": cfg.seed,
        "images_per_class": n, "heldout_images": len(heldout[0]),
        "reference_images": len(reference[0]),
        "classifier": str(path), "classifier_accuracy": meta["val_accuracy"],
        "sampling_seconds": seconds, "images_per_second": len(samples) / seconds,
    }  # fmt: skip
    result |= evaluate_samples(judge, samples, labels, heldout, reference, classes)
    prompts = [p for p in pipe.class_prompts for _ in range(n)]
    result |= standard_metrics(cfg, heldout[0], samples, prompts)
    result |= phrasing_accuracy(cfg, options, pipe, judge, classes)
    out_dir = cfg.out_dir or default_out_dir(cfg, result)
    write_report(result, images, Path(out_dir))
    return result


def phrasing_accuracy(
    cfg: DictConfig, options: dict, pipe: TextToImage, judge, classes: list[str]
) -> dict:
    """Conditional accuracy on the model's training prompts and on held-out phrasings (the
    data's ``conf/heldout`` file), ``phrasing_images_per_class`` images per class cycling
    through each class's prompts and sampled with ``options``, plus the accuracy of every
    prompt."""
    n = cfg.phrasing_images_per_class
    if not n:
        return {}
    result = {}
    for name, per_class in phrasing_sets(cfg, pipe, classes).items():
        accuracy, per_prompt = prompt_accuracy(per_class, n, options, pipe, judge)
        result |= {f"{name}_accuracy": accuracy, f"{name}_per_prompt": per_prompt}
    return result


def phrasing_sets(cfg: DictConfig, pipe: TextToImage, classes: list[str]) -> dict:
    """``training_phrasings`` (the model's prompts) and, where the data has a ``conf/heldout``
    file, ``heldout_phrasings``: each a list of prompts per class."""
    sets = {"training_phrasings": list(pipe.module.hparams.class_prompts)}
    heldout = heldout_phrasings(cfg, classes)
    return sets if heldout is None else sets | {"heldout_phrasings": heldout}


def heldout_phrasings(cfg: DictConfig, classes: list[str]) -> list[list[str]] | None:
    """The phrasings of the data's ``conf/heldout`` file per class (None without one)."""
    if not cfg.get("heldout"):
        return None
    return class_prompts(
        classes, list(cfg.heldout.prompt_templates), cfg.heldout.get("class_synonyms"),
        where="heldout",
    )  # fmt: skip


def prompt_accuracy(
    per_class: list[list[str]], n: int, options: dict, pipe: TextToImage, judge
) -> tuple[float, dict[str, float]]:
    """The judge's accuracy on ``n`` images per class cycling through each class's prompts, in
    all and by prompt."""
    prompts = [ps[j % len(ps)] for ps in per_class for j in range(n)]
    labels = torch.arange(len(per_class)).repeat_interleave(n)
    images = pipe(prompts, **options, progress=False).flatten(0, 1)
    correct = (predict(judge, images * 2 - 1) == labels).float()
    by_prompt = {p: [] for p in prompts}
    for p, c in zip(prompts, correct.tolist(), strict=True):
        by_prompt[p].append(c)
    return correct.mean().item(), {p: sum(c) / len(c) for p, c in by_prompt.items()}


def write_report(result: dict, images: torch.Tensor, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    save_grid(images[:, :8], out_dir / "grid.png")
    table = report_table(result)
    per_class = ", ".join(
        f"{name} {acc:.0%} / {result['per_class_diversity'].get(name, float('nan')):.2f}"
        for name, acc in result["per_class_accuracy"].items()
    )
    (out_dir / "eval.md").write_text(
        f"# Evaluation of `{result['checkpoint']}`\n\n{table}\n\nPer class (accuracy / "
        f"diversity): {per_class}\n\n![samples, a row per class prompt](grid.png)\n"
    )
    print(table)
    for name, note in result.get("notes", {}).items():
        print(f"{name}: {note}")
    log.info("Wrote %s", out_dir / "eval.json")


def phrasing_rows(r: dict) -> list[str]:
    rows = []
    for name, label in [("training", "training"), ("heldout", "held-out")]:
        if f"{name}_phrasings_accuracy" in r:
            per_prompt = r[f"{name}_phrasings_per_prompt"]
            worst = min(per_prompt, key=per_prompt.get)
            rows.append(
                f"| conditional accuracy, {label} phrasings ({len(per_prompt)} prompts) "
                f"| {r[f'{name}_phrasings_accuracy']:.1%} (worst: {worst!r} "
                f"{per_prompt[worst]:.0%}) | | |"
            )
    return rows


def report_table(r: dict) -> str:
    return "\n".join([
        f"{r['sampler']} {r['steps']} steps, {guidance_text(r)}, "
        f"{'EMA' if r['use_ema'] else 'raw'} weights, {r['images_per_class']} images per class, "
        f"seed {r['seed']}",
        "",
        "| metric (judge's features) | samples | real vs real | ratio |",
        "|---|---|---|---|",
        f"| conditional accuracy | {r['conditional_accuracy']:.1%} "
        f"| {r['classifier_accuracy']:.1%} (judge on held-out) | |",
        *phrasing_rows(r),
        f"| FID | {r['fid']:.3f} | {r['fid_real_vs_real']:.3f} | {r['fid_ratio']:.2f}× |",
        f"| KID | {r['kid_mean']:.4f} ± {r['kid_std']:.4f} "
        f"| {r['kid_mean_real_vs_real']:.4f} ± {r['kid_std_real_vs_real']:.4f} "
        f"| {r['kid_ratio']:.2f}× |",
        f"| diversity (÷ held-out's) | {r['diversity']:.2f} "
        f"| {r['diversity_real_vs_real']:.2f} | |",
        f"| precision / recall | {r['precision']:.2f} / {r['recall']:.2f} "
        f"| {r['precision_real_vs_real']:.2f} / {r['recall_real_vs_real']:.2f} | |",
        f"| sampling speed | {r['images_per_second']:.1f} img/s | | |",
    ])  # fmt: skip


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("conditional_accuracy")


if __name__ == "__main__":
    main()
