"""Reading a file a stranger may have made, as every reader of this project does: only a regular
file (never a device, a FIFO or a socket, which can block for ever or never end), only inside
the folder it belongs to once every link is resolved, and never more than a bound (``limit``
bytes are read, plus one to tell that there were more). A file that fails is one
:class:`Refused` line naming it, what is wrong and the fix."""

import os
import stat
from pathlib import Path

from diffusion_lit.errors import UserError, first_line


class Refused(UserError):
    """A file that was not read, and why."""


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` once every link of both is resolved."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop, a name too long, a NUL
        return False


def kind(path: Path) -> str | None:
    """What ``path`` is once links are followed (``file``, ``folder``, ``device``, ``FIFO``,
    ``socket``), None where nothing can be found (missing, a name too long, a broken link):
    never an exception, whatever the path."""
    try:
        mode = Path(path).stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"


def is_file(path: Path, within: Path | None = None) -> bool:
    """Whether ``path`` is a regular file (inside ``within``, when given)."""
    return kind(path) == "file" and (within is None or inside(path, within))


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder (``Path.is_dir`` raises for a name too long)."""
    return kind(path) == "folder"


def regular_file(path: Path, within: Path | None = None, fix: str = "") -> Path:
    """``path``, refused unless it is a regular file, inside ``within`` when given."""
    path = Path(path)
    if within is not None and not inside(path, within):
        raise Refused(
            f"{path} is a link out of {within} (to {_target(path)}): a file of this folder must "
            f"lie in it; {fix or 'copy the file itself into the folder'}."
        )
    found = kind(path)
    if found != "file":
        what = "does not exist" if found is None else f"is a {found}, not a file"
        raise Refused(f"{path} {what}; {fix or 'pass a regular file'}.")
    return path


def read_bytes(path: Path, limit: int, within: Path | None = None, fix: str = "") -> bytes:
    """The bytes of the regular file ``path`` (inside ``within``), refused beyond ``limit``."""
    path = regular_file(path, within, fix)
    try:  # non-blocking: a FIFO swapped in after the check is refused, not waited on
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise Refused(f"{path} is not a regular file; {fix or 'pass a regular file'}.")
            data = f.read(limit + 1)
    except OSError as err:
        raise Refused(f"{path} cannot be read ({first_line(err)}); {fix or 'check it'}.") from err
    if len(data) > limit:
        raise Refused(
            f"{path} is larger than the {limit:,} bytes such a file may hold; "
            f"{fix or 'pass the file this project wrote'}."
        )
    return data


def read_text(path: Path, limit: int, within: Path | None = None, fix: str = "") -> str:
    """:func:`read_bytes` as UTF-8 text (a byte-order mark, as some editors write, is skipped);
    refused, naming the byte, when it is not UTF-8."""
    data = read_bytes(path, limit, within, fix)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise Refused(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8.") from err


def _target(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return "a link loop"
