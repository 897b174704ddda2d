"""Export: ``python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>``.

Writes a self-contained, pickle-free model folder: ``model.safetensors`` (the UNet, EMA weights
by default), ``prompts.safetensors`` (the encoded training prompts), ``config.json`` (the
model spec, image size and channels) and a ``README.md`` model card with the training config,
metrics and a sample grid. Sampling takes the folder as ``ckpt_path``.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from diffusion_lit import checks, cli
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.card import card_grid, model_card
from diffusion_lit.modelfile.checkpoint import (
    existing,
    has_ema,
    model_from_checkpoint,
    read_checkpoint,
)
from diffusion_lit.modelfile.export_folder import check_target, write_export
from diffusion_lit.runs.layout import RunDir

log = logging.getLogger(__name__)


def default_out_dir(ckpt_path: Path, use_ema: bool) -> Path:
    return ckpt_path.parent / f"export-{ckpt_path.stem}{'' if use_ema else '-raw'}"


def export(cfg: DictConfig) -> Path:
    """Writes the export folder (built aside, then renamed into place); returns its path."""
    ckpt_path = existing(checks.path("ckpt_path", cfg.ckpt_path))
    use_ema, overwrite = (
        checks.flag("use_ema", cfg.use_ema),
        checks.flag("overwrite", cfg.overwrite),
    )
    grid_steps = checks.integer("grid_steps", cfg.grid_steps, 1, 100_000)
    # the guidance the export records (null: the checkpoint's own)
    scale = checks.real("guidance_scale", cfg.guidance_scale, 0, 100, optional=True)
    interval = checks.interval("guidance_interval", cfg.guidance_interval, optional=True)
    attribute = checks.real("attribute_scale", cfg.attribute_scale, 0, 100, optional=True)
    out_dir = checks.out_dir("out_dir", cfg.out_dir, optional=True)
    if out_dir is None:
        out_dir = default_out_dir(ckpt_path, use_ema)
        run = RunDir.of_checkpoint(ckpt_path)
        if run is not None and not run.inside(out_dir.parent):  # checkpoints/ links out of it
            raise UserError(
                f"{out_dir} would lie outside the run {run.path}: {out_dir.parent} leads to "
                f"{out_dir.parent.resolve()}. Pass out_dir=<a folder>; nothing was written."
            )
    check_target(out_dir, overwrite)
    ckpt, spec = read_checkpoint(ckpt_path)
    spec = spec.with_guidance(spec.guidance.over(scale, interval, attribute))
    model = model_from_checkpoint(ckpt, spec, use_ema, ckpt_path)
    weights = "EMA" if use_ema and has_ema(ckpt) else "trained (raw)"
    source = {
        "checkpoint": str(ckpt_path),
        "epochs": ckpt["epoch"] + 1,
        "global_step": ckpt["global_step"],
        "weights": weights,
    }

    def write_card(folder: Path) -> None:
        grid = card_grid(model, ckpt_path, folder / "grid.png", grid_steps)
        (folder / "README.md").write_text(model_card(spec, model, ckpt_path, source, grid))

    write_export(out_dir, spec, model, {"source": source}, write_card, overwrite)
    log.info("Exported %s (%s weights) to %s", ckpt_path, weights, out_dir)
    return out_dir


@cli.command("export")
def main(cfg: DictConfig) -> None:
    print(export(cfg))


if __name__ == "__main__":
    main()
