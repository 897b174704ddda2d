"""Command-line values, checked where they enter. Each CLI checks its options first, so that a
mistyped value ends in one ``error: <problem>. <fix>`` line (exit status 2) before any work is
done, instead of a traceback, a silent NaN or a half-written output.

Each check takes the config and a dotted key, and returns the value (normalised where a user's
shorthand is obvious: one string where a list of strings is expected is a one-item list).
Upper bounds are far above any sensible setting; they stop a typo (an extra zero, a misplaced
exponent) from starting hours of work or exhausting memory.
"""

import math
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffusion_lit.errors import UserError
from diffusion_lit.samplers import SAMPLERS, SPACINGS

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeding take 32 bits
SAMPLING_PRECISIONS = ("auto", "32", "bf16-mixed")


def value(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def _show(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(key: str, x, expected: str) -> UserError:
    return UserError(f"{key}={_show(x)} is not {expected}; pass {key}=<{expected}>.")


def integer(cfg, key: str, low: int, high: int, optional: bool = False) -> int | None:
    x = value(cfg, key)
    if x is None and optional:
        return None
    if not isinstance(x, int) or isinstance(x, bool) or not low <= x <= high:
        expected = f"an integer from {low} to {high}" + (" or null" if optional else "")
        raise _refuse(key, x, expected)
    return x


def _finite(x) -> bool:
    """A finite int or float, not a boolean."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def real(
    cfg, key: str, low: float, high: float | None, above: bool = False, optional: bool = False
) -> float | None:
    """A finite number in [low, high] (``above``: low excluded; ``high`` None: no bound)."""
    x = value(cfg, key)
    if x is None and optional:
        return None
    if not _finite(x) or not (low < x if above else low <= x) or (high is not None and x > high):
        expected = f"a finite number {'>' if above else '≥'} {low:g}"
        raise _refuse(key, x, expected + ("" if high is None else f" and ≤ {high:g}"))
    return float(x)


def flag(cfg, key: str) -> bool:
    x = value(cfg, key)
    if not isinstance(x, bool):
        raise _refuse(key, x, "true or false")
    return x


def one_of(cfg, key: str, options) -> str:
    x = value(cfg, key)
    if not isinstance(x, str) or x not in options:
        raise _refuse(key, x, f"one of {', '.join(options)}")
    return x


def texts(cfg, key: str, optional: bool = False) -> list[str] | None:
    """A list of non-empty strings; one string is a one-item list (``prompts="Draw a six"``)."""
    x = value(cfg, key)
    if x is None and optional:
        return None
    items = [x] if isinstance(x, str) else list(x) if isinstance(x, ListConfig | list) else None
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise UserError(
            f"{key}={_show(x if items is None else list(items))} is not a list of non-empty "
            f"texts; pass {key}='[\"first\",\"second\"]' or {key}='one text'."
        )
    return items


def path(cfg, key: str, optional: bool = False) -> Path | None:
    x = value(cfg, key)
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x.strip():
        raise _refuse(key, x, "a path")
    return Path(x)


def model_path(cfg, key: str = "ckpt_path", optional: bool = False) -> Path | None:
    """A checkpoint file or an export folder that exists (reading it checks the rest: see
    :func:`diffusion_lit.artifacts.read_checkpoint`)."""
    p = path(cfg, key, optional)
    if p is None:
        return None
    if not p.exists():
        raise UserError(
            f"{key}={str(p)!r} does not exist: pass a .ckpt file (e.g. outputs/runs/<run>/"
            "checkpoints/last.ckpt) or an export folder."
        )
    return p


def checkpoint_file(cfg, key: str = "ckpt_path") -> Path:
    """A training checkpoint file (not an export folder)."""
    p = model_path(cfg, key)
    if p.is_dir():
        raise UserError(
            f"{key}={str(p)!r} is a folder; this needs a training checkpoint file, e.g. "
            "outputs/runs/<run>/checkpoints/last.ckpt."
        )
    return p


def out_dir(cfg, key: str = "out_dir", optional: bool = False) -> Path | None:
    """A folder to write into: it may not exist yet, but no file may stand in its way."""
    p = path(cfg, key, optional)
    if p is None:
        return None
    blocking = next((q for q in (p, *p.parents) if q.exists() and not q.is_dir()), None)
    if blocking is not None:
        raise UserError(
            f"{key}={str(p)!r} cannot be a folder: {blocking} is a file. Pass {key}=<a folder "
            "path>."
        )
    return p


def device(cfg, key: str = "device") -> str:
    """auto, cpu, cuda, cuda:<n> or mps, naming a device this machine has."""
    x = value(cfg, key)
    try:
        dev = torch.device(x) if isinstance(x, str) and x != "auto" else None
    except RuntimeError:
        dev = None
    if x != "auto" and (dev is None or dev.type not in ("cpu", "cuda", "mps")):
        raise _refuse(key, x, "auto, cpu, cuda, cuda:<n> or mps")
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


def sampling(cfg) -> dict:
    """The sampling options shared by the sample and evaluate CLIs and the web page; returns
    those that go to :class:`~diffusion_lit.pipeline.TextToImage` as its keyword arguments."""
    model_path(cfg, "ckpt_path", optional=True)
    flag(cfg, "use_ema")
    device(cfg)
    return guidance(cfg) | {
        "sampler": one_of(cfg, "sampler", list(SAMPLERS)),
        "steps": integer(cfg, "steps", 1, 100_000, optional=True),  # ≤ T: checked once T is known
        "timestep_spacing": one_of(cfg, "timestep_spacing", SPACINGS),
        "eta": real(cfg, "eta", 0, 1),
        "seed": integer(cfg, "seed", 0, MAX_SEED),
        "batch_size": integer(cfg, "batch_size", 1, 1_000_000),
        "nearest_prompt": flag(cfg, "nearest_prompt"),
        "precision": sampling_precision(cfg),
    }


def guidance(cfg, prefix: str = "") -> dict:
    """``<prefix>guidance_scale`` (0–100) and ``<prefix>guidance_interval`` (a list [start,
    stop]), each None when null: the model's own (:data:`diffusion_lit.spec.SAMPLING`)."""
    span = interval(cfg, f"{prefix}guidance_interval", optional=True)
    return {
        "guidance_scale": real(cfg, f"{prefix}guidance_scale", 0, 100, optional=True),
        "guidance_interval": None if span is None else list(span),
    }


def interval(cfg, key: str, optional: bool = False) -> tuple[float, float] | None:
    """Two numbers ``[start, stop]`` with 0 ≤ start ≤ stop ≤ 1."""
    x = value(cfg, key)
    if x is None and optional:
        return None
    pair = list(x) if isinstance(x, ListConfig | list | tuple) else None
    ok = pair is not None and len(pair) == 2 and all(map(_finite, pair))
    if not ok or not 0 <= pair[0] <= pair[1] <= 1:
        expected = "[start, stop] with 0 ≤ start ≤ stop ≤ 1" + (" or null" if optional else "")
        raise _refuse(key, x if pair is None else pair, expected)
    return float(pair[0]), float(pair[1])


def sampling_precision(cfg) -> str:
    """``precision``: auto, 32 or bf16-mixed (on the command line, 32 arrives as a number)."""
    x = value(cfg, "precision")
    if str(x) not in SAMPLING_PRECISIONS:
        raise _refuse("precision", x, f"one of {', '.join(SAMPLING_PRECISIONS)}")
    return str(x)


def synonyms(cfg, key: str) -> None:
    """A mapping of class names to lists of other names (absent or null: none)."""
    x = value(cfg, key)
    if x is None:
        return
    ok = isinstance(x, DictConfig | dict) and all(
        isinstance(v, str)
        or isinstance(v, ListConfig | list)
        and all(isinstance(i, str) for i in v)
        for v in x.values()
    )
    if not ok:
        raise UserError(
            f"{key}={_show(x)} is not a mapping of class names to lists of names; pass e.g. "
            f"{key}='{{six: [\"6\"]}}'."
        )


def data(cfg) -> None:
    """The ``data`` group's values, shared by training and evaluation."""
    integer(cfg, "data.batch_size", 1, 1_000_000)
    integer(cfg, "data.image_size", 4, 4096)
    integer(cfg, "data.channels", 1, 3)
    integer(cfg, "data.num_workers", 0, 256)
    real(cfg, "data.val_fraction", 0, 1, above=True)
    texts(cfg, "data.prompt_templates")
    synonyms(cfg, "data.class_synonyms")
    integer(cfg, "data.split_seed", 0, MAX_SEED)
    for key in ("hflip", "pin_memory", "persistent_workers", "download"):
        if value(cfg, f"data.{key}") is not None:
            flag(cfg, f"data.{key}")
    if value(cfg, "data.root") is not None:
        path(cfg, "data.root")
