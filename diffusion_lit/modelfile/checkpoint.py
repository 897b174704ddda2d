"""A training checkpoint (``.ckpt``) read as data: ``torch.load(weights_only=True)`` unpickles
tensors and plain containers only, and the model spec in it is checked before anything is built
from it."""

import logging
import zipfile
from pathlib import Path

import torch

from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError, first_line
from diffusion_lit.files import kind
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.modelfile.weights import (
    check_finite,
    check_net,
    check_prompts,
    expected_net,
    shapes,
)

log = logging.getLogger(__name__)

# where a model is looked for when the path given does not exist
HINT = "a .ckpt file (e.g. outputs/runs/<run>/checkpoints/last.ckpt) or an export folder"


def existing(path: str | Path, key: str = "ckpt_path", hint: str = HINT) -> Path:
    """``path``, refused in one line naming ``key`` when nothing is there: the one check that a
    model file given by a user exists, made first by every command that takes one."""
    path = Path(path)
    found = kind(path)
    if found is None:
        raise UserError(f"{key}={str(path)!r} does not exist: pass {hint}.")
    if found not in ("file", "folder"):
        raise UserError(f"{key}={str(path)!r} is a {found}, not a file or folder: pass {hint}.")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict, ModelSpec]:
    """A training checkpoint's contents (tensors and plain values only, memory-mapped) and its
    checked model spec; fails with one line for a missing, empty, truncated, inflating or
    foreign file and for a spec that names anything outside this project's components."""
    path = existing(path)
    if kind(path) != "file":
        raise UserError(
            f"{path} is a folder, not a training checkpoint: pass <run dir>/checkpoints/last.ckpt."
        )
    if path.stat().st_size == 0:
        raise UserError(
            f"Checkpoint {path} is empty (0 bytes), perhaps from a full disk or an interrupted "
            "copy: pass another checkpoint, e.g. <run dir>/checkpoints/last.ckpt."
        )
    check_archive(path)
    try:  # mmap: the tensors stay in the file until they are copied into a model
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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


def check_archive(path: Path) -> None:
    """A checkpoint is a zip archive whose members torch stores uncompressed: refuses, before
    anything is inflated, another format and members that would inflate beyond the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(
            f"{path} is not a readable diffusion_lit checkpoint ({type(err).__name__}: "
            f"{first_line(err)}); pass a .ckpt written by python -m diffusion_lit.train."
        ) from err
    inflated = sum(m.file_size for m in members)
    if inflated > path.stat().st_size or any(
        m.compress_type != zipfile.ZIP_STORED for m in members
    ):
        raise UserError(
            f"{path} holds compressed members that inflate to {inflated:,} bytes from a file "
            f"of {path.stat().st_size:,}: a checkpoint stores its tensors as they are, so this "
            "is not one (perhaps a zip bomb); it was not read."
        )


def has_ema(ckpt: dict) -> bool:
    """Whether the checkpoint holds EMA weights: Lightning's weight averaging keeps them as its
    ``state_dict`` and moves the raw trained ones to ``current_model_state``."""
    return "current_model_state" in ckpt


def model_from_checkpoint(
    ckpt: dict, spec: ModelSpec, use_ema: bool, path: str | Path
) -> DiffusionModel:
    """The model in a checkpoint read by :func:`read_checkpoint` from ``path``: its EMA weights
    (``use_ema``, when it has them) or its raw trained ones."""
    if use_ema and not has_ema(ckpt):
        log.info("%s holds no EMA weights; using the trained weights.", path)
    state = ckpt["state_dict"] if use_ema or not has_ema(ckpt) else ckpt["current_model_state"]
    net, prompts = _strip(state, "net."), _strip(state, "prompts.")
    if not all(isinstance(v, torch.Tensor) for v in (*net.values(), *prompts.values())):
        raise UserError(f"{path} holds weights that are not tensors; it was not loaded.")
    check_net(expected_net(spec, str(path)), shapes(net), f"{path} (net)")
    check_prompts(spec, shapes(prompts), f"{path} (prompts)")
    check_finite(net | prompts, str(path))
    model = spec.build(source=str(path))
    model.net.load_state_dict(net)
    model.prompts.load_state_dict(prompts)
    return model


def _strip(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
