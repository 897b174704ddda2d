"""Evaluation: ``python -m diffusion_lit.evaluate ckpt_path=<ckpt> data=<data>``.

Loads the judge classifier for the data (training and caching it the first time), samples
``images_per_class`` images for every class, and writes ``eval.json``, ``eval.md`` and
``grid.png`` next to the checkpoint."""

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.diffusion.precision import for_sampling
from diffusion_lit.errors import UserError
from diffusion_lit.evaluation.attributes import attribute_following, words_followed
from diffusion_lit.evaluation.concepts import concept_following, has_concepts
from diffusion_lit.evaluation.judge import judge_for, judge_path
from diffusion_lit.evaluation.metrics import evaluate_samples, real_sets, standard_metrics, timed
from diffusion_lit.evaluation.phrasings import phrasing_accuracy
from diffusion_lit.evaluation.report import settings_name, write_report
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.runs.layout import RunDir
from diffusion_lit.training.config import build

log = logging.getLogger(__name__)


def check(cfg: DictConfig) -> SamplingOptions:
    """The evaluate CLI's own values (the data module checks the data's as it is built);
    returns the sampling options."""
    options = SamplingOptions.from_config(cfg)
    if checks.path("ckpt_path", cfg.ckpt_path, optional=True) is not None:
        existing(cfg.ckpt_path)
    checks.flag("use_ema", cfg.use_ema)
    checks.device("device", cfg.device)
    checks.flag("train_classifier", cfg.train_classifier)
    checks.path("classifier.dir", cfg.classifier.dir)
    checks.integer("images_per_class", cfg.images_per_class, 1, 100_000)
    checks.integer("phrasing_images_per_class", cfg.phrasing_images_per_class, 0, 100_000)
    checks.integer("attribute_images_per_class", cfg.attribute_images_per_class, 0, 100_000)
    checks.integer("concept_images", cfg.concept_images, 0, 100_000)
    checks.integer("concepts", cfg.concepts, 1, 1_000_000)
    folder = checks.path("concept_calibration", cfg.concept_calibration, optional=True)
    if folder is not None and not folder.is_dir():
        raise UserError(
            f"concept_calibration={str(folder)!r} is not a folder: pass a folder of another "
            "artist's emoji PNGs named by code (python bench/emoji_eval.py makes one), or null."
        )
    checks.out_dir("out_dir", cfg.out_dir, optional=True)
    weights = checks.path("inception_weights", cfg.inception_weights, optional=True)
    if weights is not None and not weights.is_file():
        raise UserError(
            f"inception_weights={str(weights)!r} is not a file: pass the FID Inception weights' "
            "path, or leave it null to skip that metric."
        )
    checks.path("clip_model", cfg.clip_model, optional=True)
    return options


def model_data_judge(cfg: DictConfig):
    """The checkpoint's pipeline (None without ``ckpt_path``), the data set up at the size the
    model generates, and the judge for that data with its metadata and path; refuses a judge,
    data and checkpoint that disagree on the classes."""
    pipe = None
    if cfg.ckpt_path:
        pipe = TextToImage.from_checkpoint(cfg.ckpt_path, cfg.device, use_ema=cfg.use_ema)
        channels, size, _ = pipe.model.image_shape
        with open_dict(cfg):  # evaluate at the size the model generates
            cfg.data.image_size, cfg.data.channels = size, channels
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    classes = datamodule.class_names
    dataset = cfg.data.dataset._target_.rsplit(".", 1)[-1]
    path = judge_path(cfg.classifier.dir, dataset, cfg.data.image_size, cfg.data.channels)
    judge, meta = judge_for(
        datamodule, path, retrain=cfg.train_classifier, seed=cfg.seed,
        epochs=cfg.classifier.epochs, batch_size=cfg.classifier.batch_size, lr=cfg.classifier.lr,
    )  # fmt: skip
    trained_on = pipe.model.prompts.class_names if pipe is not None else classes
    if meta["classes"] != classes or not set(trained_on) <= set(classes):
        raise UserError(
            f"The judge at {path} knows classes {meta['classes']}, the data has {classes} "
            f"and the checkpoint {trained_on}: pass the data the model was trained on (or data "
            "with all its classes), and retrain the judge (train_classifier=true) if the data "
            "changed."
        )
    return pipe, datamodule, judge, meta, path


def evaluated_classes(cfg: DictConfig, pipe: TextToImage) -> list[str]:
    """The classes to evaluate: ``classes`` (some of the model's, by name), or all of them."""
    known = pipe.model.prompts.class_names
    chosen = checks.texts("classes", cfg.get("classes"), optional=True) or known
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise UserError(
            f"classes={chosen}: {', '.join(unknown)} not among the model's classes "
            f"({', '.join(known)}); name some of those, or leave classes=null for all."
        )
    return list(chosen)


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
    classes = datamodule.class_names  # the judge's
    chosen = evaluated_classes(cfg, pipe)
    numbers = [classes.index(c) for c in chosen]
    bank = pipe.model.prompts
    prompts = [bank.default_prompts[bank.class_names.index(c)] for c in chosen]

    n = cfg.images_per_class
    out, seconds = timed(pipe, prompts, n, options=options)
    samples = out.images.flatten(0, 1) * 2 - 1  # (C·n, ch, H, W) in [−1, 1], like the real images
    labels = torch.tensor(numbers).repeat_interleave(n)
    heldout, reference = real_sets(datamodule, len(samples), numbers)

    result = {
        "checkpoint": str(cfg.ckpt_path),
        **({"classes": chosen} if chosen != classes else {}),
        "sampler": options.sampler, "steps": options.steps,
        "timestep_spacing": options.spacing, "eta": options.noise_level,
        # not "precision": that is the samples' precision (with recall) below
        "sampling_precision": for_sampling(options.precision, pipe.model.device.type),
        **out.guidance.to_dict(),
        "use_ema": cfg.use_ema, "seed": options.seed,
        "nearest_prompt": out.options.nearest_prompt,
        "images_per_class": n, "heldout_images": len(heldout[0]),
        "reference_images": len(reference[0]),
        "classifier": str(path), "classifier_accuracy": meta["val_accuracy"],
        "sampling_seconds": seconds, "images_per_second": len(samples) / seconds,
    }  # fmt: skip
    result |= evaluate_samples(judge, samples, labels, heldout, reference, classes)
    prompts = [p for p in out.prompts for _ in range(n)]
    result |= standard_metrics(heldout[0], samples, prompts, cfg.inception_weights, cfg.clip_model)
    heldout_phrasings = cfg.get("heldout")
    result |= phrasing_accuracy(
        pipe, judge, heldout_phrasings, chosen, numbers, cfg.phrasing_images_per_class, options
    )
    if cfg.attribute_images_per_class:
        other_words = (heldout_phrasings or {}).get("attribute_phrasings") or {}
        position = {number: i for i, number in enumerate(numbers)}  # labels as chosen's
        real = (reference[0], torch.tensor([position[int(y)] for y in reference[1]]))
        result |= attribute_following(
            pipe, datamodule.attributes, datamodule.caption_templates, datamodule.heldout,
            dict(other_words), real, chosen, cfg.attribute_images_per_class, options,
        )  # fmt: skip
        asked = (heldout_phrasings or {}).get("attribute_words") or {}
        result |= words_followed(
            pipe, datamodule.attributes, asked, chosen, numbers, judge,
            cfg.attribute_images_per_class, options,
        )  # fmt: skip
    if cfg.concept_images and has_concepts(datamodule):
        phrasings = list((heldout_phrasings or {}).get("concept_phrasings") or [])
        result |= concept_following(
            pipe, judge, datamodule, cfg.concepts, cfg.concept_images, phrasings,
            cfg.concept_calibration, options, seed=options.seed,
        )  # fmt: skip
    out_dir = cfg.out_dir or RunDir.evaluation_dir(Path(cfg.ckpt_path), settings_name(result))
    write_report(result, out.images, Path(out_dir))
    return result


@cli.command("evaluate")
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("conditional_accuracy")


if __name__ == "__main__":
    main()
