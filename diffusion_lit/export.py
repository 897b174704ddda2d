"""Export: ``python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>``.

Writes a self-contained, pickle-free model folder: ``model.safetensors`` (the UNet, EMA weights
by default), ``prompts.safetensors`` (the encoded training prompts), ``config.json`` (the
model spec, image size and channels) and a ``README.md`` model card with the training config,
metrics and a sample grid. Sampling takes the folder as ``ckpt_path``.

The checkpoint of a ``finetune=lora`` run exports as an adapter folder (``adapter.json``,
``adapter.safetensors`` and a card), drawn over its base with ``adapters=[<folder>]``;
``merge=true`` writes the full model instead, its adapter folded in. ``adapters=[...]`` over any
model writes the model they make, merged.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from diffusion_lit import checks, cli
from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.adapter_folder import is_adapter, write_adapter
from diffusion_lit.modelfile.card import adapter_card, card_grid, model_card
from diffusion_lit.modelfile.checkpoint import (
    existing,
    has_ema,
    model_from_checkpoint,
    read_checkpoint,
)
from diffusion_lit.modelfile.export_folder import is_export, write_export
from diffusion_lit.modelfile.load import load_model
from diffusion_lit.modelfile.staging import check_target, write_folder
from diffusion_lit.models.lora import adapter_state
from diffusion_lit.runs.layout import RunDir

log = logging.getLogger(__name__)


def ours(path: Path) -> bool:
    return is_export(path) or is_adapter(path)


def export(cfg: DictConfig) -> Path:
    """Writes the export folder (built aside, then renamed into place); returns its path."""
    ckpt_path = existing(checks.path("ckpt_path", cfg.ckpt_path))
    use_ema, overwrite = (
        checks.flag("use_ema", cfg.use_ema),
        checks.flag("overwrite", cfg.overwrite),
    )
    merge = checks.flag("merge", cfg.get("merge", False))
    adapters = checks.paths("adapters", cfg.get("adapters"))
    weights = cfg.get("adapter_weights")
    grid_steps = checks.integer("grid_steps", cfg.grid_steps, 1, 100_000)
    Guidance().over_config(cfg)  # the guidance it records, checked before any work
    out_dir = checks.out_dir("out_dir", cfg.out_dir, optional=True)
    if is_adapter(ckpt_path):
        raise UserError(
            f"{ckpt_path} is an adapter folder, not a model: pass the model it was made for as "
            f"ckpt_path and adapters=[{ckpt_path}] to write the model they make."
        )
    if ckpt_path.is_dir() and not adapters:
        raise UserError(
            f"{ckpt_path} is an export already: pass ckpt_path=<a .ckpt>, or adapters=[...] to "
            "write the model they make over it."
        )
    ckpt, spec = (None, None) if ckpt_path.is_dir() else read_checkpoint(ckpt_path)
    as_adapter = spec is not None and spec.adapter is not None and not merge and not adapters
    if out_dir is None:
        out_dir = RunDir.export_dir(ckpt_path, use_ema, as_adapter)
        run = RunDir.of_checkpoint(ckpt_path)
        if run is not None and not run.inside(out_dir.parent):  # checkpoints/ links out of it
            raise UserError(
                f"{out_dir} would lie outside the run {run.path}: {out_dir.parent} leads to "
                f"{out_dir.parent.resolve()}. Pass out_dir=<a folder>; nothing was written."
            )
    check_target(out_dir, overwrite, ours)
    if as_adapter:
        model = model_from_checkpoint(ckpt, spec, use_ema, ckpt_path)
    else:  # the model as it samples: a fine-tune's adapter and any adapters given folded in
        spec, model = load_model(ckpt_path, use_ema, adapters, weights)
    # the guidance the export records: the command's, the checkpoint's own where it gives none
    spec = spec.with_guidance(spec.guidance.over_config(cfg))
    weights_kind = "EMA" if ckpt is None or (use_ema and has_ema(ckpt)) else "trained (raw)"
    source = {"checkpoint": str(ckpt_path), "weights": weights_kind}
    if ckpt is not None:
        source |= {"epochs": ckpt["epoch"] + 1, "global_step": ckpt["global_step"]}
    if adapters:
        source["adapters"] = [str(a) for a in adapters]

    if as_adapter:

        def write(folder: Path) -> None:
            write_adapter(folder, spec, adapter_state(model.net), {"source": source})
            (folder / "README.md").write_text(adapter_card(spec, folder, source))

        write_folder(out_dir, write, overwrite, ours)
    else:

        def write_card(folder: Path) -> None:
            # merged with adapters, the model is not the checkpoint's: its picture is drawn anew
            grid = card_grid(
                spec, model, ckpt_path, folder / "grid.png", grid_steps, bool(adapters)
            )
            (folder / "README.md").write_text(model_card(spec, model, ckpt_path, source, grid))

        write_export(out_dir, spec, model, {"source": source}, write_card, overwrite, ours)
    log.info("Exported %s (%s weights) to %s", ckpt_path, weights_kind, out_dir)
    return out_dir


@cli.command("export")
def main(cfg: DictConfig) -> None:
    print(export(cfg))


if __name__ == "__main__":
    main()
