"""A training checkpoint (``.ckpt``) read as data: ``torch.load(weights_only=True)`` unpickles
tensors and plain containers only, and the model spec in it is checked before anything is built
from it."""

import logging
from pathlib import Path

import torch

from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError, first_line
from diffusion_lit.modelfile.spec import ModelSpec

log = logging.getLogger(__name__)

# where a model is looked for when the path given does not exist
HINT = "a .ckpt file (e.g. outputs/runs/<run>/checkpoints/last.ckpt) or an export folder"


def existing(path: str | Path, key: str = "ckpt_path", hint: str = HINT) -> Path:
    """``path``, refused in one line naming ``key`` when nothing is there: the one check that a
    model file given by a user exists, made first by every command that takes one."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{key}={str(path)!r} does not exist: pass {hint}.")
    return path


def read_checkpoint(path: str | Path, mmap: bool = False) -> tuple[dict, ModelSpec]:
    """A training checkpoint's contents (tensors and plain values only) and its checked model
    spec; fails with one line for a missing, empty, truncated or foreign file and for a spec
    that names anything outside this project's components."""
    path = existing(path)
    if not path.is_file():
        raise UserError(
            f"{path} is a folder, not a training checkpoint: pass <run dir>/checkpoints/last.ckpt."
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
    return ckpt, ModelSpec.read(ckpt.get("hyper_parameters"), str(path))


def has_ema(ckpt: dict) -> bool:
    """Whether the checkpoint holds EMA weights: Lightning's weight averaging keeps them as its
    ``state_dict`` and moves the raw trained ones to ``current_model_state``."""
    return "current_model_state" in ckpt


def model_from_checkpoint(
    ckpt: dict, spec: ModelSpec, use_ema: bool, path: str | Path
) -> DiffusionModel:
    """The model in a checkpoint read by :func:`read_checkpoint` from ``path``: its EMA weights
    (``use_ema``, when it has them) or its raw trained ones."""
    model = spec.build(source=str(path))
    if use_ema and not has_ema(ckpt):
        log.info("%s holds no EMA weights; using the trained weights.", path)
    state = ckpt["state_dict"] if use_ema or not has_ema(ckpt) else ckpt["current_model_state"]
    load_weights(model.net, _strip(state, "net."), f"{path} (net)")
    model.prompts.load_state_dict(_strip(state, "prompts."))
    return model


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
