"""Sampling: ``python -m diffusion_lit.sample ckpt_path=<ckpt> prompts='[...]'``."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.pipeline import TextToImage

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
    num_images = checks.integer("num_images", cfg.num_images, 1, 100_000)
    out_dir = checks.out_dir("out_dir", cfg.out_dir)
    prompts = checks.texts("prompts", cfg.prompts, optional=True)
    pipe = TextToImage.from_checkpoint(ckpt_path, device, use_ema, adapters, weights)
    out = pipe(prompts, num_images, options=options)
    for note in out.unfamiliar:
        log.warning(note)
    for note in out.substitutions:
        log.info(note)
    grid = pipe.save(out.images, out.prompts, out_dir)
    log.info(
        "Wrote %d images per prompt for %d prompts (%s); grid: %s",
        num_images, len(out.prompts), out.guidance, grid,
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
