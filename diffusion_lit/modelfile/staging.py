"""Writing a model folder (an export, an adapter) so that a failure never leaves half of one:
built beside its place, then renamed into it; an existing folder is replaced only when asked
and only when it is one of ours."""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from diffusion_lit.errors import UserError


def check_target(out_dir: Path, overwrite: bool, ours: Callable[[Path], bool]) -> None:
    """Refuses an ``out_dir`` that exists, unless ``overwrite`` and it is ``ours`` (a folder
    this project wrote), and one that is a link (replacing it would replace the link, not what
    it points to)."""
    if out_dir.is_symlink():
        raise UserError(
            f"{out_dir} is a link to {out_dir.resolve()}: pass out_dir=<that folder itself> or "
            "another out_dir=; nothing was changed."
        )
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists: pass overwrite=true or another out_dir=.")
    if out_dir.exists() and not ours(out_dir):
        raise UserError(
            f"{out_dir} exists and is not a diffusion_lit export: overwrite=true replaces only "
            "an export or adapter folder; pass another out_dir=."
        )


def write_folder(
    out_dir: Path, write: Callable[[Path], None], overwrite: bool, ours: Callable[[Path], bool]
) -> None:
    """Calls ``write(folder)`` on a folder beside ``out_dir``, then renames it into place (see
    :func:`check_target` for an existing ``out_dir``, replaced only once the new one is
    complete)."""
    check_target(out_dir, overwrite, ours)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
            staged = Path(tmp) / out_dir.name
            staged.mkdir()
            write(staged)
            for file in staged.iterdir():
                file.chmod(0o644)  # safetensors writes owner-only files; exports are shared
            _replace_dir(staged, out_dir)
    except OSError as err:
        raise UserError(
            f"Cannot write the export to {out_dir}: {err.strerror or err}. Pass out_dir=<a "
            "writable folder with free space>; nothing was changed there."
        ) from err


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
