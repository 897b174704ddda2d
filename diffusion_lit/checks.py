"""Checks of single values, for whoever owns them: a constructor checks its arguments, a command
its own options, each with these. A value that fails is a :class:`~diffusion_lit.errors.BadValue`
naming it, which a command reports as one ``error: <problem>. <fix>`` line (exit status 2)
before any work is done, instead of a traceback, a silent NaN or a half-written output.

Each check takes the value's name (``key``) and the value, and returns the value (normalised
where a user's shorthand is obvious: one string where a list of strings is expected is a
one-item list). Upper bounds are far above any sensible setting; they stop a typo (an extra
zero, a misplaced exponent) from starting hours of work or exhausting memory.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from diffusion_lit.errors import BadValue, UserError

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeding take 32 bits


def finite(x) -> bool:
    """A finite int or float, not a boolean."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _listed(x) -> list | None:
    """``x`` as a list when it is a sequence (a list, tuple or OmegaConf ListConfig), else None."""
    return list(x) if isinstance(x, Sequence) and not isinstance(x, str | bytes) else None


def integer(key: str, x, low: int, high: int, optional: bool = False) -> int | None:
    if x is None and optional:
        return None
    if not isinstance(x, int) or isinstance(x, bool) or not low <= x <= high:
        raise BadValue(
            key, x, f"an integer from {low} to {high}" + (" or null" if optional else "")
        )
    return x


def real(
    key: str, x, low: float, high: float | None, above: bool = False, optional: bool = False
) -> float | None:
    """A finite number in [low, high] (``above``: low excluded; ``high`` None: no bound)."""
    if x is None and optional:
        return None
    if not finite(x) or not (low < x if above else low <= x) or (high is not None and x > high):
        expected = f"a finite number {'>' if above else '≥'} {low:g}"
        expected += "" if high is None else f" and ≤ {high:g}"
        raise BadValue(key, x, expected + (" or null" if optional else ""))
    return float(x)


def flag(key: str, x) -> bool:
    if not isinstance(x, bool):
        raise BadValue(key, x, "true or false")
    return x


def one_of(key: str, x, options) -> str:
    if not isinstance(x, str) or x not in options:
        raise BadValue(key, x, f"one of {', '.join(options)}")
    return x


def text(key: str, x, optional: bool = False) -> str | None:
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x.strip():
        raise BadValue(key, x, "a non-empty text" + (" or null" if optional else ""))
    return x


def texts(key: str, x, optional: bool = False) -> list[str] | None:
    """A list of non-empty strings; one string is a one-item list (``prompts="Draw a six"``)."""
    if x is None and optional:
        return None
    items = [x] if isinstance(x, str) else _listed(x)
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        example = '\'["first","second"]\' or ' + f"{key}='one text'"
        raise BadValue(key, x if items is None else items, "a list of non-empty texts", example)
    return items


def paths(key: str, x) -> list[Path]:
    """A list of paths; one path is a one-item list; null or [] is none."""
    if x is None:
        return []
    items = [x] if isinstance(x, str) else _listed(x)
    if items is None or not all(isinstance(i, str) and i.strip() for i in items):
        raise BadValue(key, x, "a list of paths", "'[outputs/a,outputs/b]'")
    return [Path(i) for i in items]


def reals(key: str, x, low: float, high: float) -> list[float] | None:
    """A list of finite numbers in [low, high] (one number is a one-item list), or null."""
    if x is None:
        return None
    items = [x] if finite(x) else _listed(x)
    if items is None or not all(finite(i) and low <= i <= high for i in items):
        raise BadValue(key, x, f"a list of numbers from {low:g} to {high:g}", "[1,0.5]")
    return [float(i) for i in items]


def names_by_name(key: str, x) -> dict[str, list[str]]:
    """A mapping of names to lists of names (``{six: ["6"]}``); one name is a one-item list;
    null is an empty mapping."""
    if x is None:
        return {}
    names = (
        {k: [v] if isinstance(v, str) else _listed(v) for k, v in x.items()}
        if isinstance(x, Mapping)
        else None
    )
    if names is None or not all(
        isinstance(k, str) and v is not None and all(isinstance(i, str) for i in v)
        for k, v in names.items()
    ):
        raise BadValue(key, x, "a mapping of class names to lists of names", "'{six: [\"6\"]}'")
    return names


def interval(key: str, x, optional: bool = False) -> tuple[float, float] | None:
    """Two numbers ``[start, stop]`` with 0 ≤ start ≤ stop ≤ 1."""
    if x is None and optional:
        return None
    pair = _listed(x)
    ok = pair is not None and len(pair) == 2 and all(map(finite, pair))
    if not ok or not 0 <= pair[0] <= pair[1] <= 1:
        expected = "[start, stop] with 0 ≤ start ≤ stop ≤ 1" + (" or null" if optional else "")
        raise BadValue(key, x if pair is None else pair, expected)
    return float(pair[0]), float(pair[1])


def path(key: str, x, optional: bool = False) -> Path | None:
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x.strip():
        raise BadValue(key, x, "a path")
    return Path(x)


def out_dir(key: str, x, optional: bool = False) -> Path | None:
    """A folder to write into: it may not exist yet, but no file may stand in its way."""
    p = path(key, x, optional)
    if p is None:
        return None
    blocking = next((q for q in (p, *p.parents) if q.exists() and not q.is_dir()), None)
    if blocking is not None:
        raise UserError(
            f"{key}={str(p)!r} cannot be a folder: {blocking} is a file. Pass {key}=<a folder "
            "path>."
        )
    return p


def device(key: str, x) -> str:
    """auto, cpu, cuda, cuda:<n> or mps, naming a device this machine has."""
    try:
        dev = torch.device(x) if isinstance(x, str) and x != "auto" else None
    except RuntimeError:
        dev = None
    if x != "auto" and (dev is None or dev.type not in ("cpu", "cuda", "mps")):
        raise BadValue(key, x, "auto, cpu, cuda, cuda:<n> or mps")
    if dev is not None and dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise UserError(
                f"{key}={x!r} names a CUDA GPU, but this machine has {count} visible "
                f"(torch.cuda.is_available() is {torch.cuda.is_available()}); pass {key}=cpu or "
                f"{key}=auto."
            )
    if dev is not None and dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key}='mps' but this machine has no Apple GPU; pass {key}=cpu.")
    return x
