"""A trained model on disk, in either of its two forms, loaded as data only:

- a training checkpoint (``.ckpt``): read with ``torch.load(weights_only=True)``, which unpickles
  tensors and plain containers only;
- an export folder (``python -m diffusion_lit.export``): ``config.json`` for the model spec,
  ``model.safetensors`` for the UNet weights and ``prompts.safetensors`` for the encoded class
  prompts.

Either way the model is rebuilt from its spec through :mod:`diffusion_lit.spec`'s fixed table of
this project's classes: nothing a file names is imported or called.
"""

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusion_lit.errors import UserError, first_line
from diffusion_lit.module import DiffusionModule
from diffusion_lit.spec import SPEC_VERSION, read_spec

log = logging.getLogger(__name__)

EXPORT_FORMAT = "diffusion_lit-export"
CONFIG, WEIGHTS, PROMPTS = "config.json", "model.safetensors", "prompts.safetensors"


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A training checkpoint's contents (tensors and plain values only), its model spec checked
    and in the current format; fails with one line for a missing, empty, truncated or foreign
    file and for a spec that names anything outside this project's components."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Checkpoint {path} does not exist or is not a file: pass ckpt_path=<run dir>/"
            "checkpoints/last.ckpt or an export folder."
        )
    if path.stat().st_size == 0:
        raise UserError(
            f"Checkpoint {path} is empty (0 bytes), perhaps from a full disk or an interrupted "
            "copy: pass another checkpoint, e.g. <run dir>/checkpoints/last.ckpt."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # truncated, another format, or pickled code weights_only refuses
        raise UserError(
            f"{path} is not a readable diffusion_lit checkpoint ({type(err).__name__}: "
            f"{first_line(err)}); pass a .ckpt written by python -m diffusion_lit.train."
        ) from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(
            f"{path} is not a diffusion_lit checkpoint (it holds no weights); pass a .ckpt "
            "written by python -m diffusion_lit.train or an export folder."
        )
    ckpt["hyper_parameters"] = read_spec(ckpt.get("hyper_parameters"), str(path))
    return ckpt


def load_module(path: str | Path, use_ema: bool = True) -> DiffusionModule:
    """The model in a ``.ckpt`` file or an export folder. ``use_ema`` picks a checkpoint's EMA
    weights (its ``state_dict`` when trained with the EMA callback) over the raw trained ones;
    an export holds the weights it was exported with."""
    path = Path(path)
    return _load_export(path) if path.is_dir() else _load_checkpoint(path, use_ema)


def _load_checkpoint(path: Path, use_ema: bool) -> DiffusionModule:
    return module_from_checkpoint(read_checkpoint(path), use_ema, path)


def module_from_checkpoint(ckpt: dict, use_ema: bool, path: Path) -> DiffusionModule:
    """The model in a checkpoint already read by :func:`read_checkpoint` (from ``path``)."""
    module = DiffusionModule(ckpt["hyper_parameters"])
    has_ema = "current_model_state" in ckpt  # Lightning's weight averaging moved the raw weights
    if use_ema and not has_ema:
        log.info("%s holds no EMA weights; using the trained weights.", path)
    state = ckpt["state_dict"] if use_ema or not has_ema else ckpt["current_model_state"]
    load_weights(module.net, _strip(state, "net."), f"{path} (net)")
    module.prompts.load_state_dict(_strip(state, "prompts."))
    return module.eval()


def _strip(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def load_weights(net: torch.nn.Module, state: dict, source: str) -> None:
    """``net.load_state_dict(state)``, failing with one line that says what does not match."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(missing)} weights missing ({', '.join(missing[:3])})" if missing else "",
            f"{len(unexpected)} unknown ({', '.join(unexpected[:3])})" if unexpected else "",
            f"{len(reshaped)} of another shape, file vs model ({'; '.join(reshaped[:3])})"
            if reshaped
            else "",
        ]
        raise UserError(
            f"{source} does not fit the model its configuration describes: "
            f"{', '.join(p for p in problems if p)}. The weights come from another model or "
            "configuration: use the config and weights written together by one training run or "
            "export."
        )
    net.load_state_dict(state)


def save_export(module: DiffusionModule, out_dir: Path, extra: dict) -> None:
    """Writes the export files of ``module`` into ``out_dir`` (which must exist)."""
    config = {
        "format": EXPORT_FORMAT,
        "version": SPEC_VERSION,
        "image_size": module.net.image_size,
        "channels": module.net.in_channels,
        **extra,
        "spec": dict(module.hparams),
    }
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in module.net.state_dict().items()}
    save_file(state, out_dir / WEIGHTS, metadata={"format": EXPORT_FORMAT})
    prompts = {k: v.cpu().contiguous() for k, v in module.prompts.state_dict().items()}
    save_file(prompts, out_dir / PROMPTS, metadata={"format": EXPORT_FORMAT})


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_export` (by its config's format)."""
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == EXPORT_FORMAT


def _load_export(path: Path) -> DiffusionModule:
    files = [path / name for name in (CONFIG, WEIGHTS, PROMPTS)]
    if not all(f.is_file() for f in files):
        raise UserError(
            f"{path} is not a diffusion_lit export: it needs {', '.join(f.name for f in files)}; "
            "write one with python -m diffusion_lit.export ckpt_path=<ckpt> out_dir=<dir>."
        )
    try:
        config = json.loads(files[0].read_text(encoding="utf-8"))
        weights, prompts = load_file(files[1]), load_file(files[2])
    except (ValueError, OSError) as err:  # not JSON / not safetensors / unreadable
        raise UserError(
            f"{path} is not a readable diffusion_lit export ({type(err).__name__}: "
            f"{first_line(err)}); export the checkpoint again."
        ) from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise UserError(f"{files[0]} is not a diffusion_lit export config (no format field).")
    # format 1 kept the spec, in its own format, under hyper_parameters
    spec = config.get("spec") if config.get("version") != 1 else config.get("hyper_parameters")
    module = DiffusionModule(read_spec(spec, str(files[0])))
    load_weights(module.net, weights, str(files[1]))
    module.prompts.load_state_dict(prompts)
    return module.eval()
