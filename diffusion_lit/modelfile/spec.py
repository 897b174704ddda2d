"""What a model file says about its model, as plain data (:class:`ModelSpec`), and the fixed
table that turns it into this project's objects.

A checkpoint (``hyper_parameters``) or an export (``config.json``'s ``spec``) holds::

    {"version": 5,
     "net": {"kind": "simple", "image_size": 16, "in_channels": 1, ...},
     "schedule": {"kind": "linear", "timesteps": 1000, "beta_start": 0.0001, ...},
     "text_encoder": {"kind": "minilm", "name_or_path": null, "dim": 384, "max_length": 64},
     "class_names": ["zero", ...],
     "class_prompts": [["Draw a zero", ..., "a thick zero, slanted left", ...], ...],
     (each class's distinct captions; the table repeats each row to the longest's length)
     "attributes": {"thickness": ["thin", "thick"], "slant": ["slanted left", ...]},
     "synonyms": {"seven": ["7"], "thick": ["bold", "heavy", ...], ...},
     "sampling": {"guidance_scale": 1.5, "guidance_interval": [0.0, 1.0],
                  "attribute_scale": 3.0, "nearest_prompt": false},
     "lineage": [{"hash": "3f2a…", "path": "outputs/runs/…/last.ckpt", "data": "Digits",
                  "classes": ["eight", "nine"], "how": "lora", "replay": "generated"}],
     "adapter": {"rank": 8, "alpha": 8.0, "modules": ["down1.conv1", ...]}}

``lineage`` lists the models it was trained from, oldest first (:mod:`.lineage`); ``adapter``
(null for most) says the UNet carries LoRA adapters on those layers (a fine-tune's checkpoint).
(Format 2 had no ``attributes``, ``attribute_scale`` or ``nearest_prompt``: its models were
trained on class prompts, sampled with plain guidance, and read a new prompt as its nearest
training prompt; format 3 had no ``lineage`` or ``adapter``; ``synonyms``, other words for its
class names and attribute words that its reading of a request maps back to them, came later in
format 4 and is empty where absent; up to format 4 every row of ``class_prompts`` had the
table's length and the prompts' encodings were saved as that table, not one per distinct
caption.)

Reading looks ``kind`` up in :data:`UNETS` and :data:`TEXT_ENCODERS` (the schedule has one class,
:class:`NoiseSchedule`, whose own ``kind`` is linear or cosine) and checks the arguments against
the class's signature, each a number, string, boolean, null or list of them; building calls the
class, which checks their values. Nothing named in a file is imported or called otherwise:
Hydra's ``_target_`` is for the configs a user writes and never reaches a model file (files of
format 1, which did store ``_target_``, load when each one is exactly this project's own class
path).
"""

import inspect
import math
from dataclasses import dataclass, field, replace

from torch import nn

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import BadValue, UserError, show
from diffusion_lit.modelfile.lineage import read_lineage
from diffusion_lit.models import SimpleUNet, TextGuidedUNet
from diffusion_lit.models.lora import add_lora, target_modules
from diffusion_lit.text import CLIPEncoder, MiniLMEncoder, PromptBank, TextEncoder
from diffusion_lit.text.captions import MAX_CAPTION_CHARS, check_table
from diffusion_lit.text.templates import padded

SPEC_VERSION = 5
READABLE = (1, 2, 3, 4, 5)
UNETS: dict[str, type[nn.Module]] = {"simple": SimpleUNet, "enhanced": TextGuidedUNet}
TEXT_ENCODERS: dict[str, type[TextEncoder]] = {"minilm": MiniLMEncoder, "clip": CLIPEncoder}
COMPONENTS = {"net": UNETS, "text_encoder": TEXT_ENCODERS, "schedule": {None: NoiseSchedule}}
LABELS = {"net": "UNets", "text_encoder": "text encoders", "schedule": "noise schedules"}

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


@dataclass(frozen=True)
class ModelSpec:
    """A model as plain data: the UNet and the text encoder (a ``kind`` from the table and its
    arguments), the noise schedule's arguments, the classes with their training captions (the
    first of each its default prompt), the words of the attributes the captions name, and how
    it samples unless told otherwise: its guidance, and whether it reads a new prompt as its
    nearest training caption or from its own text embedding (``nearest_prompt``); the models it
    was trained from (``lineage``), and the LoRA adapter its UNet carries, if any
    (``adapter``: rank, alpha and the layers); other words for its class names and attribute
    words (``synonyms``), with which a request is read (:mod:`diffusion_lit.text.reading`).
    The only hyperparameter a checkpoint keeps, so it rebuilds the model without the training
    code."""

    net: dict
    schedule: dict
    text_encoder: dict
    class_names: list[str]
    class_prompts: list[list[str]]
    guidance: Guidance = field(default_factory=Guidance)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    nearest_prompt: bool = True
    lineage: list[dict] = field(default_factory=list)
    adapter: dict | None = None
    synonyms: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The spec as a model file holds it (format 5)."""
        return {
            "version": SPEC_VERSION,
            "net": dict(self.net),
            "schedule": dict(self.schedule),
            "text_encoder": dict(self.text_encoder),
            "class_names": list(self.class_names),
            "class_prompts": compact(self.class_prompts),
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "sampling": self.guidance.to_dict() | {"nearest_prompt": self.nearest_prompt},
            "lineage": [dict(link) for link in self.lineage],
            "adapter": None if self.adapter is None else dict(self.adapter),
            "synonyms": {k: list(v) for k, v in self.synonyms.items()},
        }

    @classmethod
    def read(cls, data, source: str) -> "ModelSpec":
        """The checked spec in ``data`` (a checkpoint's ``hyper_parameters`` or an export's
        spec) read from ``source``; format 1 is converted. Refuses, with one line, anything that
        is not plain data or names a component outside the table."""
        if not isinstance(data, dict) or not isinstance(data.get("net"), dict):
            raise UserError(
                f"{source} is not a diffusion_lit model (it holds no model spec); pass a .ckpt "
                "written by python -m diffusion_lit.train or an export folder."
            )
        version = data.get("version", 1)
        if version == 1:
            data = _from_format1(data, source)
        elif version not in READABLE:
            raise UserError(
                f"{source} holds a model spec of format {version!r}; this diffusion_lit reads "
                f"formats {', '.join(map(str, READABLE))}. Upgrade diffusion_lit (pip install -U "
                "diffusion_lit)."
            )
        groups = {}
        for group, table in COMPONENTS.items():
            args = dict(_plain(data.get(group), group, source))
            kind = args.pop("kind", None) if group != "schedule" else None
            if kind not in table:
                raise UnsafeModelFile(
                    f"{source}: {group}.kind={kind!r} is not one of this project's "
                    f"{LABELS[group]} ({', '.join(map(str, table))}); a model file may only name "
                    "those, so this file was not loaded."
                )
            _check_arguments(table[kind], args, group, source)
            groups[group] = ({"kind": kind} if kind else {}) | args
        names, prompts = read_classes(data.get("class_names"), data.get("class_prompts"), source)
        guidance, nearest = read_sampling(data.get("sampling", {}), source)
        attributes = read_attributes(data.get("attributes", {}), source)
        lineage = read_lineage(data.get("lineage", []), source)
        adapter = read_adapter(data.get("adapter"), source)
        synonyms = read_synonyms(data.get("synonyms", {}), source)
        return cls(**groups, class_names=names, class_prompts=prompts, guidance=guidance,
                   attributes=attributes, nearest_prompt=nearest, lineage=lineage,
                   adapter=adapter, synonyms=synonyms)  # fmt: skip

    def with_guidance(self, guidance: Guidance) -> "ModelSpec":
        return replace(self, guidance=guidance)

    def build(self, net: nn.Module | None = None, source: str | None = None) -> DiffusionModel:
        """The model this spec describes, with fresh weights; ``net`` instead of the UNet it
        names (training builds its own from the config). ``source``: the file it was read from,
        named in the error when a value is not one its class takes."""
        schedule = self._build("schedule", source)  # first: the UNet may take its T
        net = net if net is not None else self.build_net(source)
        prompts = PromptBank(self.class_names, self.class_prompts, self.build_text_encoder)
        return DiffusionModel(net, schedule, prompts)

    def build_net(self, source: str | None = None) -> nn.Module:
        """The UNet, with its LoRA adapter when the spec has one."""
        net = self._build("net", source)
        if self.adapter is not None:
            try:
                modules = target_modules(net, self.adapter["modules"])
            except BadValue as err:
                raise UserError(
                    f"{source or 'the model'}: its adapter names a layer the UNet has no "
                    f"Conv2d or Linear of ({show(err.value)}); the file is damaged or not a "
                    "diffusion_lit model, so it was not loaded."
                ) from None
            add_lora(net, self.adapter["rank"], self.adapter["alpha"], modules)
        return net

    def build_text_encoder(self) -> TextEncoder:
        return self._build("text_encoder")

    def _build(self, group: str, source: str | None = None):
        args = dict(getattr(self, group))
        kind = args.pop("kind", None) if group != "schedule" else None
        try:
            return COMPONENTS[group][kind](**args)
        except BadValue as err:
            if source is None:
                raise err.under(group) from None
            raise UserError(
                f"{source} is damaged or not a diffusion_lit model: its {group}.{err.key}="
                f"{show(err.value)} is not {err.expected}; it was not loaded."
            ) from err


def compact(table: list[list[str]]) -> list[list[str]]:
    """A classes × captions table as a model file holds it (format 5): each class's distinct
    captions, which :func:`padded` repeats back to the table; the table itself where that
    would not give it back."""
    rows = [list(dict.fromkeys(row)) for row in table]
    return rows if padded(rows) == table else [list(row) for row in table]


def read_classes(names, prompts, source: str) -> tuple[list[str], list[list[str]]]:
    """A model's classes and their captions, checked: a list of names and one of caption
    lists, one per class (format ≤ 4: as many for each), as the table (:func:`padded`)."""
    if not (
        isinstance(names, list)
        and isinstance(prompts, list)
        and len(names) == len(prompts) > 0
        and all(isinstance(n, str) and len(n) <= MAX_CAPTION_CHARS for n in names)
        and all(isinstance(p, list) and p and all(isinstance(s, str) for s in p) for p in prompts)
    ):
        raise UserError(
            f"{source}: class_names and class_prompts must be lists of names and of prompt "
            "lists, one per class; the file is damaged or not a diffusion_lit model."
        )
    check_table(prompts, source)
    return names, padded(prompts)


def read_sampling(given, source: str) -> tuple[Guidance, bool]:
    """How a model file says its model samples, under ``sampling`` (absent keys: the defaults):
    its guidance and its ``nearest_prompt``, checked: numbers and a boolean only, each within
    what it may be."""
    known = {*Guidance.KEYS, "nearest_prompt"}
    try:
        # numbers only: a string could be an OmegaConf interpolation, were anything to resolve it
        if not (isinstance(given, dict) and _is_numeric(list(given.values()))):
            raise UserError("not a mapping of numbers")
        if not set(given) <= known:
            raise UserError(f"keys other than {', '.join(sorted(known))}")
        nearest = given.get("nearest_prompt", True)
        if not isinstance(nearest, bool):
            raise UserError("nearest_prompt is not true or false")
        return Guidance.from_dict(given), nearest
    except UserError as err:
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its sampling settings {given!r} "
            "are not valid."
        ) from err


def read_attributes(given, source: str) -> dict[str, list[str]]:
    """The words of each attribute a model's captions name: a mapping of names to lists of
    words."""
    ok = isinstance(given, dict) and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(w, str) for w in v)
        for k, v in given.items()
    )
    if not ok:
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its attributes {given!r} are not "
            "a mapping of names to lists of words."
        )
    return {k: list(v) for k, v in given.items()}


# other words for a model's words: a few dozen each at most, for a few hundred words
MAX_SYNONYMS = 4096


def read_synonyms(given, source: str) -> dict[str, list[str]]:
    """Other words for a model's class names and attribute words: a mapping of words to lists
    of words, at most :data:`MAX_SYNONYMS` in all, each at most a caption's length."""
    ok = isinstance(given, dict) and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(w, str) for w in v)
        for k, v in given.items()
    )
    ok = ok and sum(len(v) + 1 for v in given.values()) <= MAX_SYNONYMS
    ok = ok and all(len(w) <= MAX_CAPTION_CHARS for k, v in given.items() for w in (k, *v))
    if not ok:
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its synonyms {show(given)} are "
            f"not a mapping of words to lists of words (at most {MAX_SYNONYMS} in all)."
        )
    return {k: list(v) for k, v in given.items()}


# a rank beyond this is no low-rank adapter for these UNets
MAX_RANK = 1024


def read_adapter(given, source: str) -> dict | None:
    """The LoRA adapter a spec says its UNet carries (null: none): a rank, an alpha and the
    names of the layers, checked."""
    if given is None:
        return None
    ok = isinstance(given, dict) and set(given) == {"rank", "alpha", "modules"}
    ok = ok and isinstance(given["rank"], int) and 1 <= given["rank"] <= MAX_RANK
    alpha = given.get("alpha") if ok else None
    ok = ok and isinstance(alpha, int | float) and not isinstance(alpha, bool)
    ok = ok and 0 < alpha <= 1e4  # NaN fails this too
    ok = ok and isinstance(given["modules"], list) and 0 < len(given["modules"]) <= 10_000
    ok = ok and all(isinstance(m, str) for m in given["modules"])
    if not ok:
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its adapter {show(given)} is not a "
            f"rank (1–{MAX_RANK}), an alpha (> 0) and a list of layer names."
        )
    return {"rank": given["rank"], "alpha": float(given["alpha"]), "modules": given["modules"]}


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
