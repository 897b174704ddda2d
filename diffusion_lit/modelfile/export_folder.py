"""An export folder (``python -m diffusion_lit.export``), pickle-free: ``config.json`` holds the
model spec, ``model.safetensors`` the UNet's weights and ``prompts.safetensors`` the encoded
training prompts, beside a model card."""

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError, first_line
from diffusion_lit.modelfile.spec import SPEC_VERSION, ModelSpec
from diffusion_lit.modelfile.weights import check_finite, check_net, check_prompts, expected_net

EXPORT_FORMAT = "diffusion_lit-export"
CONFIG, WEIGHTS, PROMPTS = "config.json", "model.safetensors", "prompts.safetensors"


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`write_export` (by its config's format)."""
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == EXPORT_FORMAT


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuses an ``out_dir`` that exists, unless ``overwrite`` and it is an export itself, and
    one that is a link (replacing it would replace the link, not what it points to)."""
    if out_dir.is_symlink():
        raise UserError(
            f"{out_dir} is a link to {out_dir.resolve()}: pass out_dir=<that folder itself> or "
            "another out_dir=; nothing was changed."
        )
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists: pass overwrite=true or another out_dir=.")
    if out_dir.exists() and not is_export(out_dir):
        raise UserError(
            f"{out_dir} exists and is not a diffusion_lit export: overwrite=true replaces only "
            "an export folder; pass another out_dir=."
        )


def write_export(
    out_dir: Path,
    spec: ModelSpec,
    model: DiffusionModel,
    extra: dict,
    write_more: Callable[[Path], None] | None = None,
    overwrite: bool = False,
) -> None:
    """Writes the export of ``model`` (``extra``: more keys for its config), and what
    ``write_more(folder)`` adds to it (the model card), into a folder beside ``out_dir``, then
    renames it into place: an existing ``out_dir`` is replaced only with ``overwrite``, only
    when it is an export itself (:func:`check_target`), and only once the new one is
    complete."""
    check_target(out_dir, overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
            staged = Path(tmp) / out_dir.name
            staged.mkdir()
            _save(staged, spec, model, extra)
            if write_more is not None:
                write_more(staged)
            for file in staged.iterdir():
                file.chmod(0o644)  # safetensors writes owner-only files; exports are shared
            _replace_dir(staged, out_dir)
    except OSError as err:
        raise UserError(
            f"Cannot write the export to {out_dir}: {err.strerror or err}. Pass out_dir=<a "
            "writable folder with free space>; nothing was changed there."
        ) from err


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


def _replace_dir(new: Path, target: Path) -> None:
    """Moves ``new`` to ``target``; an existing ``target`` is swapped out only once ``new`` is
    complete, so a failure leaves either the old folder or the new one, never half of each."""
    if target.exists():
        old = new.parent / "old"
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    else:
        new.rename(target)


def read_export(path: Path) -> tuple[ModelSpec, DiffusionModel]:
    """The spec and model of an export folder, read as data: the config parsed within bounds,
    the tensors' names and shapes checked against the spec from the files' headers before any
    tensor is read, then every value checked finite."""
    files = [path / name for name in (CONFIG, WEIGHTS, PROMPTS)]
    if not all(f.is_file() for f in files):
        raise UserError(
            f"{path} is not a diffusion_lit export: it needs {', '.join(f.name for f in files)}; "
            "write one with python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>."
        )
    config = _read_config(files[0])
    # format 1 kept the spec, in its own format, under hyper_parameters
    data = config.get("spec") if config.get("version") != 1 else config.get("hyper_parameters")
    spec = ModelSpec.read(data, str(files[0]))
    check_net(expected_net(spec, str(files[0])), _shapes(files[1]), str(files[1]))
    check_prompts(spec, _shapes(files[2]), str(files[2]))
    weights, prompts = _tensors(files[1]), _tensors(files[2])
    check_finite(weights | prompts, str(path))
    model = spec.build(source=str(files[0]))
    model.net.load_state_dict(weights)
    model.prompts.load_state_dict(prompts)
    return spec, model


# a model's config.json is a few kilobytes: this bounds what is parsed
MAX_CONFIG_BYTES = 16 * 2**20


def _read_config(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than a model's config holds")
        config = json.loads(path.read_bytes())
    except (ValueError, OSError, RecursionError) as err:  # not JSON, nested too deep, unreadable
        raise _unreadable(path, err) from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path} is not a diffusion_lit export config (no format field).")
    return config


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensors' names and shapes, from the file's header alone."""
    try:
        with safe_open(path, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:  # truncated, a lying header, not one
        raise _unreadable(path, err) from err


def _tensors(path: Path) -> dict:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: BaseException) -> UserError:
    return UserError(
        f"{path} is not a readable diffusion_lit export file ({type(err).__name__}: "
        f"{first_line(err)}); export the checkpoint again."
    )
