"""Sampling entry point: ``python -m diffusion_lit.sample ckpt_path=<ckpt> prompts='[...]'``."""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from diffusion_lit import checks
from diffusion_lit.errors import report_user_errors
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.spec import guidance_text

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> Path | None:
    """Writes ``<out_dir>/<slug>/NNN.png`` per prompt and ``<out_dir>/grid.png``; returns grid."""
    checks.model_path(cfg, "ckpt_path")
    if cfg.prompts == "list":
        return list_prompts(cfg)
    options = checks.sampling(cfg)
    checks.integer(cfg, "num_images", 1, 100_000)
    checks.out_dir(cfg)
    prompts = checks.texts(cfg, "prompts", optional=True)
    pipe = TextToImage.from_checkpoint(cfg.ckpt_path, device=cfg.device, use_ema=cfg.use_ema)
    prompts = prompts or pipe.class_prompts
    options = pipe.module.sampling_options(options)  # the model's guidance where cfg has null
    images = pipe(prompts, num_images=cfg.num_images, **options)
    grid = pipe.save(images, prompts, cfg.out_dir)
    log.info(
        "Wrote %d images per prompt for %d prompts (%s); grid: %s",
        cfg.num_images, len(prompts), guidance_text(options), grid,
    )  # fmt: skip
    return grid


def list_prompts(cfg: DictConfig) -> None:
    """``prompts=list``: prints what the model was trained to draw, one class a line."""
    pipe = TextToImage.from_checkpoint(cfg.ckpt_path, device="cpu", use_ema=cfg.use_ema)
    for name, prompts in pipe.training_prompts.items():
        print(f"{name}: " + " | ".join(prompts))


@hydra.main(config_path="../conf", config_name="sample", version_base="1.3")
@report_user_errors
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
