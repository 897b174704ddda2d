"""What a model file says about its model, as plain data, and the fixed table that turns it into
this project's objects.

A checkpoint (``hyper_parameters``) or an export (``config.json``) holds a *model spec*::

    {"version": 2,
     "net": {"kind": "simple", "image_size": 16, "in_channels": 1, ...},
     "schedule": {"kind": "linear", "timesteps": 1000, "beta_start": 0.0001, ...},
     "text_encoder": {"kind": "minilm", "name_or_path": null, "dim": 384, "max_length": 64},
     "class_names": ["zero", ...], "class_prompts": [["Draw a zero"], ...],
     "sampling": {"guidance_scale": 1.5, "guidance_interval": [0.0, 1.0]}}

Loading looks ``kind`` up in :data:`UNETS` and :data:`TEXT_ENCODERS` (the schedule has one class,
:class:`NoiseSchedule`, whose own ``kind`` is linear or cosine) and calls the class with
arguments checked against its signature, each a number, string, boolean, null or list of them.
Nothing named in a file is imported or called otherwise: Hydra's ``_target_`` is for the configs
a user writes and never reaches a model file (files of format 1, which did store ``_target_``,
load when each one is exactly this project's own class path).
"""

import inspect
import math

from omegaconf import OmegaConf
from torch import nn

from diffusion_lit import checks
from diffusion_lit.errors import UserError
from diffusion_lit.models import SimpleUNet, TextGuidedUNet
from diffusion_lit.schedule import NoiseSchedule
from diffusion_lit.text import CLIPEncoder, MiniLMEncoder, TextEncoder

SPEC_VERSION = 2
UNETS: dict[str, type[nn.Module]] = {"simple": SimpleUNet, "enhanced": TextGuidedUNet}
TEXT_ENCODERS: dict[str, type[TextEncoder]] = {"minilm": MiniLMEncoder, "clip": CLIPEncoder}
COMPONENTS = {"net": UNETS, "text_encoder": TEXT_ENCODERS, "schedule": {None: NoiseSchedule}}
LABELS = {"net": "UNets", "text_encoder": "text encoders", "schedule": "noise schedules"}
# how a model is sampled unless the caller says otherwise: a model records its own (its training
# config's ``sampling``, chosen for it by a guidance sweep); these for the keys it leaves out,
# and for files written before models recorded them
SAMPLING = {"guidance_scale": 1.5, "guidance_interval": [0.0, 1.0]}

# format 1 named the classes by import path; these exact strings are the only ones it may name
FORMAT1_TARGETS = {
    "net": {
        "diffusion_lit.models.SimpleUNet": "simple",
        "diffusion_lit.models.TextGuidedUNet": "enhanced",
    },
    "text_encoder": {
        "diffusion_lit.text.MiniLMEncoder": "minilm",
        "diffusion_lit.text.CLIPEncoder": "clip",
    },
    "schedule": {"diffusion_lit.schedule.NoiseSchedule": None},
}


class UnsafeModelFile(UserError):
    """A model file names something outside this project's fixed table of components."""


def kind_of(cls: type, group: str) -> str | None:
    """The table name of a class (``SimpleUNet`` → ``simple``); None when it is not in the table."""
    return next((kind for kind, known in COMPONENTS[group].items() if known is cls), None)


def read_spec(data, source: str) -> dict:
    """The checked model spec in ``data`` (a checkpoint's ``hyper_parameters`` or an export's
    spec) read from ``source``; format 1 is converted. Refuses, with one line, anything that is
    not plain data or names a component outside the table."""
    if not isinstance(data, dict) or not isinstance(data.get("net"), dict):
        raise UserError(
            f"{source} is not a diffusion_lit model (it holds no model spec); pass a .ckpt "
            "written by python -m diffusion_lit.train or an export folder."
        )
    version = data.get("version", 1)
    if version == 1:
        data = _from_format1(data, source)
    elif version != SPEC_VERSION:
        raise UserError(
            f"{source} holds a model spec of format {version!r}; this diffusion_lit reads "
            f"formats 1 and {SPEC_VERSION}. Upgrade diffusion_lit (pip install -U diffusion_lit)."
        )
    spec = {"version": SPEC_VERSION}
    for group, table in COMPONENTS.items():
        args = dict(_plain(data.get(group), f"{group}", source))
        kind = args.pop("kind", None) if group != "schedule" else None
        if kind not in table:
            raise UnsafeModelFile(
                f"{source}: {group}.kind={kind!r} is not one of this project's {LABELS[group]} "
                f"({', '.join(map(str, table))}); a model file may only name those, so this file "
                "was not loaded."
            )
        _check_arguments(table[kind], args, group, source)
        spec[group] = ({"kind": kind} if kind else {}) | args
    names, prompts = data.get("class_names"), data.get("class_prompts")
    if not (
        isinstance(names, list)
        and isinstance(prompts, list)
        and len(names) == len(prompts) > 0
        and all(isinstance(n, str) for n in names)
        and all(isinstance(p, list) and p and all(isinstance(s, str) for s in p) for p in prompts)
    ):
        raise UserError(
            f"{source}: class_names and class_prompts must be lists of names and of prompt "
            "lists, one per class; the file is damaged or not a diffusion_lit model."
        )
    sampling = read_sampling(data.get("sampling", {}), source)
    return spec | {"class_names": names, "class_prompts": prompts, "sampling": sampling}


def read_sampling(given, source: str | None = None) -> dict:
    """:data:`SAMPLING` with the values ``given`` sets (a mapping; None sets nothing), checked as
    the sample CLI checks them: a training config's ``sampling`` or, from ``source``, a model
    file's."""
    try:
        # numbers only: a string could be an OmegaConf interpolation, resolved by the check below
        plain = isinstance(given, dict) and _is_numeric(list(given.values()))
        if not (plain and set(given) <= set(SAMPLING)):
            raise UserError(
                f"sampling={given!r} is not a mapping of {' and '.join(SAMPLING)}; pass e.g. "
                "sampling.guidance_scale=3."
            )
        chosen = checks.guidance(OmegaConf.create({"sampling": given}), "sampling.")
    except UserError as err:
        if source is None:
            raise
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its sampling settings {given!r} "
            "are not valid."
        ) from err
    return SAMPLING | {k: v for k, v in chosen.items() if v is not None}


def guidance_text(sampling) -> str:
    """'guidance 3 on [0.4, 1]' from a mapping with ``guidance_scale`` and ``guidance_interval``
    (a model's sampling, an evaluation's record); the interval only when not the whole way."""
    start, stop = sampling.get("guidance_interval") or SAMPLING["guidance_interval"]
    interval = "" if (start, stop) == (0, 1) else f" on [{start:g}, {stop:g}]"
    return f"guidance {sampling['guidance_scale']:g}{interval}"


def _plain(value, key: str, source: str):
    """``value`` if it is plain data: a dict of numbers, strings, booleans, nulls and lists."""
    if not isinstance(value, dict):
        raise UserError(f"{source}: {key} must be a mapping of arguments, not {value!r}.")
    for name, arg in value.items():
        if not _is_plain(arg):
            raise UnsafeModelFile(
                f"{source}: {key}.{name}={arg!r} is not a plain value (a number, string, boolean, "
                "null or list of them); a model file may hold nothing else, so it was not loaded."
            )
    return value


def _is_plain(value) -> bool:
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int | str)


def _is_numeric(value) -> bool:
    """A number, null or boolean (refused later, by name), or a list of them."""
    if isinstance(value, list):
        return all(_is_numeric(v) for v in value)
    return _is_plain(value) and not isinstance(value, str)


def _check_arguments(cls: type, args: dict, group: str, source: str) -> None:
    params = inspect.signature(cls).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise UnsafeModelFile(
            f"{source}: {group} has arguments {unknown} that {cls.__name__} does not take "
            f"(it takes {', '.join(params)}); the file was not loaded."
        )


def _from_format1(data: dict, source: str) -> dict:
    """Format 1 (``_target_`` import paths, and training options among the hyperparameters)."""
    converted = {k: data.get(k) for k in ("class_names", "class_prompts")}
    for group, targets in FORMAT1_TARGETS.items():
        args = dict(_plain(data.get(group), group, source))
        target = args.pop("_target_", None)
        if target not in targets:
            raise UnsafeModelFile(
                f"{source}: {group}._target_={target!r} is not one of this project's classes "
                f"({', '.join(targets)}); a model file may only name those, so this file was not "
                "loaded."
            )
        converted[group] = ({"kind": targets[target]} if targets[target] else {}) | args
    schedule = converted["schedule"]
    if schedule.get("kind", "linear") == "linear":
        # format 1 used β ∈ [beta_start, beta_end] for every T; now those are the values at
        # T = 1000, scaled by 1000/T: the same β for the model it describes
        scale = schedule.get("timesteps", 1000) / 1000
        for key, default in (("beta_start", 1e-4), ("beta_end", 0.02)):
            schedule[key] = schedule.get(key, default) * scale
    return converted


def build_component(spec: dict, group: str):
    """The object a checked spec describes, from the fixed table (``group``: net, schedule or
    text_encoder)."""
    args = dict(spec[group])
    return COMPONENTS[group][args.pop("kind", None) if group != "schedule" else None](**args)
