"""Sampling: ``python -m diffusion_lit.sample ckpt_path=<ckpt> prompts='[...]'``."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.pipeline import IMAGES_PER_PROMPT, TextToImage

log = logging.getLogger(__name__)


def sample(cfg: DictConfig) -> Path | None:
    """Writes ``<out_dir>/<slug>/NNN.png`` per prompt and ``<out_dir>/grid.png``; returns grid."""
    ckpt_path = existing(checks.path("ckpt_path", cfg.ckpt_path))
    use_ema = checks.flag("use_ema", cfg.use_ema)
    adapters = checks.paths("adapters", cfg.get("adapters"))
    weights = cfg.get("adapter_weights")
    if cfg.prompts == "list":
        search = checks.text("search", cfg.get("search"), optional=True)
        return list_prompts(ckpt_path, use_ema, adapters, weights, search)
    options = SamplingOptions.from_config(cfg)
    device = checks.device("device", cfg.device)
    num_images = checks.integer("num_images", cfg.num_images, 1, 100_000, optional=True)
    out_dir = checks.out_dir("out_dir", cfg.out_dir)
    prompts = checks.texts("prompts", cfg.prompts, optional=True)
    init = checks.path("init_image", cfg.get("init_image"), optional=True)
    mask = checks.path("mask", cfg.get("mask"), optional=True)
    if mask is not None and init is None:
        raise UserError("mask=... needs init_image=<the picture it masks>.")
    num_images = num_images or (IMAGES_PER_PROMPT if init is None else 1)
    pipe = TextToImage.from_checkpoint(ckpt_path, device, use_ema, adapters, weights)
    out = pipe(prompts, num_images, init_images=init, mask=mask, options=options)
    for note in out.unfamiliar:
        log.warning(note)
    for note in out.substitutions:
        log.info(note)
    grid = pipe.save(out.images, out.prompts, out_dir)
    edited = "" if out.edited is None else (
        f", edits of {len(out.edited.names)} pictures in their order"
        f"{' (inpainted)' if out.edited.mask is not None else ''} at strength "
        f"{options.start_strength(out.edited.mask is not None):g}"
    )  # fmt: skip
    log.info(
        "Wrote %d images per prompt for %d prompts (%s%s); grid: %s",
        out.images.shape[1], len(out.prompts), out.guidance, edited, grid,
    )  # fmt: skip
    return grid


def list_prompts(
    ckpt_path: Path,
    use_ema: bool = True,
    adapters: list[Path] = (),
    weights=None,
    search: str | None = None,
) -> None:
    """``prompts=list``: prints what the model was trained to draw: each class's prompts, a
    class a line (a few of each for a model of thousands; ``search``: those that say its
    words), and the words of each attribute its captions name."""
    pipe = TextToImage.from_checkpoint(ckpt_path, "cpu", use_ema, adapters, weights)
    print("\n".join(pipe.vocabulary(search)))


@cli.command("sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
