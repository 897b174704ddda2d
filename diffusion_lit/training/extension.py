"""Training from a trained model (``init_from=<.ckpt or export folder>``): a new run that starts
from its weights — a fresh optimizer, learning-rate schedule and step count, not a resume —
keeps its UNet, noise schedule and text encoder, and its classes and captions first among the
new data's (:meth:`ImageDataModule.extend`). ``finetune`` chooses what trains: every weight
(``full``) or LoRA adapters on the UNet's layers (``lora``). ``replay`` mixes images of the
classes the base knows and the new data lacks into every batch (:mod:`.replay`). The new
model records the link in its lineage (:mod:`diffusion_lit.modelfile.lineage`)."""

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from diffusion_lit import checks
from diffusion_lit.data.datamodule import ImageDataModule, image_transform
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.errors import BadValue, UserError
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.modelfile.lineage import content_hash, step
from diffusion_lit.modelfile.load import load_model
from diffusion_lit.modelfile.spec import MAX_RANK, ModelSpec
from diffusion_lit.models.lora import add_lora, target_modules
from diffusion_lit.training import replay
from diffusion_lit.training.config import build, set_at

log = logging.getLogger(__name__)

FINETUNE_MODES = ("full", "lora")
HINT = "a trained model: a .ckpt (outputs/runs/<run>/checkpoints/last.ckpt) or an export folder"
# the spec's parts a fine-tune keeps, and the config groups that set them
KEPT = {"net": "model", "schedule": "schedule", "text_encoder": "text_encoder"}


@dataclass
class Base:
    """The model a run starts from: where it is, its spec, the model (EMA weights) and their
    content hash."""

    path: Path
    spec: ModelSpec
    model: DiffusionModel
    hash: str


def read_base(cfg: DictConfig) -> Base | None:
    """The model ``init_from`` names (None without one), read as any model file is, after the
    ``finetune`` and ``replay`` options are checked."""
    finetune, options = cfg.get("finetune") or {}, cfg.get("replay") or {}
    mode = checks.one_of("finetune.mode", finetune.get("mode", "full"), FINETUNE_MODES)
    if mode == "lora":
        checks.integer("finetune.rank", finetune.get("rank"), 1, MAX_RANK)
        checks.real("finetune.alpha", finetune.get("alpha"), 0, 1e4, above=True)
        checks.texts("finetune.targets", finetune.get("targets"))
    checks.one_of("replay.mode", options.get("mode", "none"), replay.MODES)
    if options.get("mode", "none") != "none":
        fraction = options.get("fraction")
        if not (checks.finite(fraction) and 0 < fraction < 1):
            raise BadValue("replay.fraction", fraction, "a number > 0 and < 1", "0.5")
        checks.integer("replay.images_per_class", options.get("images_per_class"), 1, 100_000)
        checks.integer("replay.steps", options.get("steps"), 1, 100_000, optional=True)
        checks.flag("replay.distill", options.get("distill", False))
    given = checks.path("init_from", cfg.get("init_from"), optional=True)
    if given is None:
        if mode == "lora":
            raise UserError(
                "finetune=lora trains adapters over a trained model: pass init_from=<its .ckpt "
                "or export folder>."
            )
        return None
    path = existing(given, "init_from", HINT)
    spec, model = load_model(path, use_ema=True)
    return Base(path, spec, model, content_hash(model.net))


def replayed(cfg: DictConfig, base: Base, datamodule: ImageDataModule) -> tuple[str, list[str]]:
    """The replay the run makes (``none`` when the data lacks none of the base's classes) and
    of which classes; refuses ``replay=data`` when the data has none of them."""
    missing = [c for c in base.spec.class_names if c not in datamodule.data_class_names]
    mode = cfg.replay.mode
    if not missing or mode == "none":
        return "none", []
    if mode == "data":
        everything = build(cfg.data, "data", classes=None).data_class_names
        present = [c for c in missing if c in everything]
        if not present:
            raise UserError(
                f"replay=data replays real images of the classes the base model knows and the "
                f"training data lacks ({', '.join(missing)}), and the data has none of them "
                f"(it has {', '.join(everything)}): use replay=generated (the base's own "
                "samples) or replay=none."
            )
        if len(present) < len(missing):
            log.warning("replay=data: the data has no images of %s; they are not replayed.",
                        ", ".join(c for c in missing if c not in present))  # fmt: skip
        missing = present
    return mode, missing


def start(
    cfg: DictConfig,
    base: Base,
    net: nn.Module,
    spec: ModelSpec,
    datamodule: ImageDataModule,
    replay_mode: str,
) -> ModelSpec:
    """Starts ``net`` (built from the config) from the base's weights, with LoRA adapters
    for ``finetune=lora``; returns ``spec`` with its lineage and adapter. Refuses, naming the
    keys, a config whose UNet, schedule or text encoder differs from the base's."""
    differ = []
    for part, group in KEPT.items():
        mine, theirs = getattr(spec, part), getattr(base.spec, part)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                name = group if key == "kind" else set_at(cfg[group], key, group)
                differ.append(f"{name}={mine.get(key)!r} (the base's: {theirs.get(key)!r})")
    if differ:
        raise UserError(
            f"init_from={base.path}: the config disagrees with the base model on "
            f"{', '.join(differ)}; a model keeps its UNet, schedule and text encoder: set those "
            "to the base's (the experiment it was trained with), or drop the overrides."
        )
    net.load_state_dict(base.model.net.state_dict())
    adapter = None
    if cfg.finetune.mode == "lora":
        modules = target_modules(net, list(cfg.finetune.targets))
        add_lora(net, cfg.finetune.rank, float(cfg.finetune.alpha), modules)
        adapter = {"rank": cfg.finetune.rank, "alpha": float(cfg.finetune.alpha),
                   "modules": modules}  # fmt: skip
    data = cfg.data.dataset._target_.rsplit(".", 1)[-1]
    how_replayed = replay_mode + (", distilled" if distilled(cfg, replay_mode) else "")
    link = step(base.hash, str(base.path.resolve()), data, datamodule.data_class_names,
                cfg.finetune.mode, how_replayed)  # fmt: skip
    synonyms = base.spec.synonyms | spec.synonyms  # the base's words read as before
    return replace(spec, lineage=[*base.spec.lineage, link], adapter=adapter, synonyms=synonyms)


def replay_set(
    cfg: DictConfig, base: Base, datamodule: ImageDataModule, mode: str, classes: list[str]
) -> replay.Replay | None:
    """The images replayed for ``classes`` (:func:`replayed`), made once: the base's samples
    (on the GPU when training uses one) or the data's images."""
    if mode == "none":
        return None
    per_class = cfg.replay.images_per_class
    if mode == "generated":
        gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") not in ("cpu", None)
        log.info("Drawing %d images of each of %s with the base model, to replay", per_class,
                 ", ".join(classes))  # fmt: skip
        model = base.model.to("cuda" if gpu else "cpu")
        indices = [base.spec.class_names.index(c) for c in classes]
        options = SamplingOptions(seed=cfg.seed)  # the sample CLI's sampler
        steps = min(cfg.replay.steps or options.steps, model.schedule.timesteps)  # at most T
        options = options.replace(steps=steps)
        images, labels, rows = replay.generated(
            model, options.guidance(base.spec.guidance), indices, datamodule.class_prompts,
            per_class, options,
        )  # fmt: skip
        base.model.to("cpu")
    else:
        images, labels, rows = _real_images(cfg, datamodule, classes, per_class)
    teacher = base.model if distilled(cfg, mode) else None
    return replay.Replay(images, labels, rows, float(cfg.replay.fraction), teacher)


def distilled(cfg: DictConfig, mode: str) -> bool:
    """Whether the replayed images' targets are the base's predictions (``replay.distill``)."""
    return mode != "none" and bool(cfg.replay.get("distill", False))


def _real_images(cfg, datamodule: ImageDataModule, classes: list[str], per_class: int):
    """Up to ``per_class`` images of each of ``classes`` from the data (a seeded choice, without
    augmentation), each with those of its captions the training's table has (else its class
    prompt)."""
    old = build(cfg.data, "data", classes=classes)
    dataset = old.dataset(transform=image_transform(old.image_size, old.channels, False))
    table = old.data_captions
    targets = np.asarray(dataset.targets)
    order = np.random.default_rng(cfg.seed).permutation(len(targets))
    chosen = np.concatenate([order[targets[order] == c][:per_class] for c in range(len(classes))])
    images, labels, rows = [], [], []
    for i in chosen.tolist():
        image, c = dataset[i]
        label = datamodule.class_names.index(classes[c])
        own = table.class_prompts[c] if table.rows is None else [
            table.class_prompts[c][r] for r in table.rows[i]
        ]  # fmt: skip
        known = datamodule.class_prompts[label]
        row = [known.index(t) for t in dict.fromkeys(own) if t in known] or [0]
        images.append(image)
        labels.append(label)
        rows.append(row)
    width = max(map(len, rows))
    rows = [[r[k % len(r)] for k in range(width)] for r in rows]
    return torch.stack(images), torch.tensor(labels), torch.tensor(rows)
