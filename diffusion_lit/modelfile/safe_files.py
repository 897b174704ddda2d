"""Reading the files of a model folder as data, within bounds: a JSON config of bounded size and
depth, and safetensors files whose header (names, shapes and dtypes, of bounded size) is read
before any tensor. Every file is a regular file inside its folder (:mod:`diffusion_lit.files`).
Any damage is one line naming the file and the fix."""

import json
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from diffusion_lit.errors import UserError, first_line
from diffusion_lit.files import read_text, regular_file

# a model's or an adapter's config is a few kilobytes: this bounds what is parsed
MAX_CONFIG_BYTES = 16 * 2**20
# a header names each tensor once (a UNet has a few hundred): far below this
MAX_HEADER_BYTES = 2**20
# the dtypes this project writes: floating weights, and the prompts' boolean mask
FLOATS = frozenset({"F32", "F16", "BF16"})


def read_config(path: Path, kind: str, fix: str) -> dict:
    """The JSON object in ``path`` (a regular file inside its folder) whose ``format`` is
    ``kind``."""
    text = read_text(path, MAX_CONFIG_BYTES, path.parent, fix)
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as err:  # not JSON, nested too deep
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


def header_shapes(
    path: Path, fix: str, dtypes: dict[str, frozenset] | None = None
) -> dict[str, tuple[int, ...]]:
    """The tensors' names and shapes, from the file's header alone (a regular file inside its
    folder, its header within :data:`MAX_HEADER_BYTES`), each tensor of a floating dtype this
    project writes (``dtypes``: other dtypes allowed by name)."""
    regular_file(path, path.parent, fix)
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"a header of {length:,} bytes, more than a model's")
        with safe_open(path, "pt") as f:
            found = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118
            shapes = {k: tuple(s.get_shape()) for k, s in found.items()}
            kinds = {k: s.get_dtype() for k, s in found.items()}
    except (SafetensorError, OSError, ValueError, struct.error) as err:  # truncated, lying
        raise unreadable(path, err, fix) from err
    bad = [f"{k} ({t})" for k, t in kinds.items() if t not in (dtypes or {}).get(k, FLOATS)]
    if bad:
        raise UserError(
            f"{path} holds tensors of a type this project never writes ({len(bad)}: "
            f"{', '.join(bad[:3])}; weights are F32, F16 or BF16); {fix}."
        )
    return shapes


def tensors(path: Path, fix: str) -> dict:
    regular_file(path, path.parent, fix)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise unreadable(path, err, fix) from err


def unreadable(path: Path, err: BaseException, fix: str) -> UserError:
    return UserError(
        f"{path} is not a readable diffusion_lit file ({type(err).__name__}: "
        f"{first_line(err)}); {fix}."
    )
