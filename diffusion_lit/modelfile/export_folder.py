"""An export folder (``python -m diffusion_lit.export``), pickle-free: ``config.json`` holds the
model spec, ``model.safetensors`` the UNet's weights and ``prompts.safetensors`` the encoded
training prompts, beside a model card."""

import json
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file

from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError
from diffusion_lit.files import kind
from diffusion_lit.modelfile.safe_files import has_format, header_shapes, read_config, tensors
from diffusion_lit.modelfile.spec import SPEC_VERSION, ModelSpec
from diffusion_lit.modelfile.staging import write_folder
from diffusion_lit.modelfile.weights import check_finite, check_net, check_prompts, expected_net

EXPORT_FORMAT = "diffusion_lit-export"
CONFIG, WEIGHTS, PROMPTS = "config.json", "model.safetensors", "prompts.safetensors"
FIX = "export the checkpoint again"


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`write_export` (by its config's format)."""
    return has_format(path / CONFIG, EXPORT_FORMAT)


def write_export(
    out_dir: Path,
    spec: ModelSpec,
    model: DiffusionModel,
    extra: dict,
    write_more: Callable[[Path], None] | None = None,
    overwrite: bool = False,
    ours: Callable[[Path], bool] = is_export,
) -> None:
    """Writes the export of ``model`` (``extra``: more keys for its config), and what
    ``write_more(folder)`` adds to it (the model card), atomically into ``out_dir``: an
    existing one is replaced only with ``overwrite`` and when it is ``ours``
    (:func:`~diffusion_lit.modelfile.staging.write_folder`), and only by a folder that
    :func:`read_export` reads back."""

    def write(folder: Path) -> None:
        _save(folder, spec, model, extra)
        try:  # what its own loader refuses is never put in place
            read_export(folder)
        except UserError as err:
            raise UserError(
                f"The model to export to {out_dir} would not load ({err}); nothing was written."
            ) from err
        if write_more is not None:
            write_more(folder)

    write_folder(out_dir, write, overwrite, ours)


def _save(out_dir: Path, spec: ModelSpec, model: DiffusionModel, extra: dict) -> None:
    channels, size, _ = model.image_shape
    config = {
        "format": EXPORT_FORMAT,
        "version": SPEC_VERSION,
        "image_size": size,
        "channels": channels,
        **extra,
        "spec": spec.to_dict(),
    }
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    for module, name in ((model.net, WEIGHTS), (model.prompts, PROMPTS)):
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, out_dir / name, metadata={"format": EXPORT_FORMAT})


def read_export(path: Path) -> tuple[ModelSpec, DiffusionModel]:
    """The spec and model of an export folder, read as data: the config parsed within bounds,
    the tensors' names and shapes checked against the spec from the files' headers before any
    tensor is read, then every value checked finite."""
    files = [path / name for name in (CONFIG, WEIGHTS, PROMPTS)]
    if any(kind(f) is None for f in files):
        raise UserError(
            f"{path} is not a diffusion_lit export: it needs {', '.join(f.name for f in files)}; "
            "write one with python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>."
        )
    config = read_config(files[0], EXPORT_FORMAT, FIX)
    # format 1 kept the spec, in its own format, under hyper_parameters
    data = config.get("spec") if config.get("version") != 1 else config.get("hyper_parameters")
    spec = ModelSpec.read(data, str(files[0]))
    check_net(expected_net(spec, str(files[0])), header_shapes(files[1], FIX), str(files[1]))
    found = header_shapes(files[2], FIX, {"mask": frozenset({"BOOL"})})
    check_prompts(spec, found, str(files[2]))
    weights, prompts = tensors(files[1], FIX), tensors(files[2], FIX)
    check_finite(weights | prompts, str(path))
    model = spec.build(source=str(files[0]))
    model.net.load_state_dict(weights)
    model.prompts.load_state_dict(prompts)
    return spec, model
