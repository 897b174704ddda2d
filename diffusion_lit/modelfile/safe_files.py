"""Reading the files of a model folder as data, within bounds: a JSON config of bounded size and
depth, and safetensors files whose header (names and shapes) is read before any tensor. Any
damage is one line naming the file and the fix."""

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from diffusion_lit.errors import UserError, first_line

# a model's or an adapter's config is a few kilobytes: this bounds what is parsed
MAX_CONFIG_BYTES = 16 * 2**20


def read_config(path: Path, kind: str, fix: str) -> dict:
    """The JSON object in ``path`` whose ``format`` is ``kind``."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than a model's config holds")
        config = json.loads(path.read_bytes())
    except (ValueError, OSError, RecursionError) as err:  # not JSON, nested too deep, unreadable
        raise unreadable(path, err, fix) from err
    if not isinstance(config, dict) or config.get("format") != kind:
        raise UserError(f"{path} is not a {kind} config (no format field).")
    return config


def has_format(path: Path, kind: str) -> bool:
    """Whether ``path`` is a readable JSON config whose ``format`` is ``kind``."""
    try:
        return read_config(path, kind, "") is not None
    except UserError:
        return False


def header_shapes(path: Path, fix: str) -> dict[str, tuple[int, ...]]:
    """The tensors' names and shapes, from the file's header alone."""
    try:
        with safe_open(path, "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:  # truncated, a lying header, not one
        raise unreadable(path, err, fix) from err


def tensors(path: Path, fix: str) -> dict:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise unreadable(path, err, fix) from err


def unreadable(path: Path, err: BaseException, fix: str) -> UserError:
    return UserError(
        f"{path} is not a readable diffusion_lit file ({type(err).__name__}: "
        f"{first_line(err)}); {fix}."
    )
