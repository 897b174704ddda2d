"""A trained model from either of its two forms on disk, as data only: a training checkpoint
(:mod:`~diffusion_lit.modelfile.checkpoint`) or an export folder
(:mod:`~diffusion_lit.modelfile.export_folder`). Either way the model is rebuilt from its spec
through :mod:`~diffusion_lit.modelfile.spec`'s fixed table of this project's classes: nothing a
file names is imported or called."""

from pathlib import Path

from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.modelfile.checkpoint import existing, model_from_checkpoint, read_checkpoint
from diffusion_lit.modelfile.export_folder import read_export
from diffusion_lit.modelfile.spec import ModelSpec


def load_model(path: str | Path, use_ema: bool = True) -> tuple[ModelSpec, DiffusionModel]:
    """The spec and model in a ``.ckpt`` file or an export folder. ``use_ema`` picks a
    checkpoint's EMA weights (when it was trained with them) over the raw trained ones; an
    export holds the weights it was exported with."""
    path = existing(path)
    if path.is_dir():
        return read_export(path)
    ckpt, spec = read_checkpoint(path)
    return spec, model_from_checkpoint(ckpt, spec, use_ema, path)
