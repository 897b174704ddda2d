"""From a training config to objects: building a config node, and the model spec it describes."""

import re

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.errors import BadValue
from diffusion_lit.modelfile.spec import ModelSpec, kind_of


def build(node, where: str | None = None, **kwargs):
    """``hydra.utils.instantiate`` that lets the target's own error through unwrapped: for bad
    input that error's message is the one that names the problem and the fix. ``where``, the
    node's key in the config (``model``), goes before the name of a value the target refuses
    (``model.base_channels``)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if cause is None:
            raise
        if isinstance(cause, BadValue) and where:
            raise as_set(cause, node, where) from None
        raise cause from None


def as_set(err: BadValue, node: DictConfig, where: str) -> BadValue:
    """The refusal of one of ``node``'s values, named where the user set it: under ``where``,
    or, for a value the node takes from elsewhere (``timesteps: ${schedule.timesteps}``), at
    that key."""
    key = err.key.split(".")[0]
    source = set_at(node, key, None)
    if source is not None:
        return BadValue(source, err.value, err.expected, err.example)
    return err.under(where)


def set_at(node: DictConfig, key: str, where: str | None) -> str | None:
    """Where the user sets ``node``'s value ``key``: the key it is taken from when it is an
    interpolation (``image_size: ${data.image_size}``), else ``where.key`` (None without
    ``where``)."""
    if isinstance(node, DictConfig) and key in node and OmegaConf.is_interpolation(node, key):
        source = re.fullmatch(r"\$\{([\w.]+)\}", OmegaConf.to_container(node)[key])
        if source:
            return source[1]
    return f"{where}.{key}" if where else None


def component_spec(node: DictConfig, group: str) -> dict:
    """A config node with ``_target_`` as spec data: the class's name in the spec table
    (``diffusion_lit.models.SimpleUNet`` → ``kind: simple``) and its plain arguments. A class
    outside the table trains, and its checkpoints record the import path, which loading refuses
    until the class is added to the table."""
    args = OmegaConf.to_container(node, resolve=True)
    target = args.pop("_target_")
    return {"kind": kind_of(get_class(target), group) or target} | args


def model_spec(
    cfg: DictConfig,
    class_names: list[str],
    class_prompts: list[list[str]],
    attributes: dict[str, list[str]] | None = None,
    synonyms: dict[str, list[str]] | None = None,
):
    """The model a training config describes, as the plain data its checkpoints hold: its
    captions, the ``attributes`` they name, other words for its class names and attribute words
    (``synonyms``), and how it samples unless told otherwise. A model
    whose captions name attributes reads a new prompt from its own text embedding, which
    composes words into combinations no caption had; one trained on class prompts, as its
    nearest training prompt (both measured in bench/RESULTS.md); ``own_sampling.nearest_prompt``
    chooses otherwise."""
    given = OmegaConf.select(cfg, "own_sampling.nearest_prompt")
    nearest = not attributes if given is None else given
    if not isinstance(nearest, bool):
        raise BadValue("own_sampling.nearest_prompt", given, "true, false or null")
    return ModelSpec(
        net=component_spec(cfg.model, "net"),
        schedule=OmegaConf.to_container(cfg.schedule, resolve=True),
        text_encoder=component_spec(cfg.text_encoder, "text_encoder"),
        class_names=list(class_names),
        class_prompts=[list(p) for p in class_prompts],
        guidance=own_guidance(cfg, bool(attributes)),
        attributes=dict(attributes or {}),
        nearest_prompt=nearest,
        synonyms=dict(synonyms or {}),
    )


# the scale of the words beyond the class for a model whose captions name attributes, unless the
# training config's own_sampling.attribute_scale says otherwise (chosen in bench/RESULTS.md)
ATTRIBUTE_SCALE = 3.0


def own_guidance(cfg: DictConfig, attributes: bool = False) -> Guidance:
    """The guidance the model records as its own: the training config's ``own_sampling`` (null
    values: :class:`Guidance`'s defaults, and :data:`ATTRIBUTE_SCALE` for a model whose
    captions name ``attributes``), checked."""
    given = cfg.get("own_sampling") or {}
    known = {*Guidance.KEYS, "nearest_prompt"}
    if not isinstance(given, DictConfig) or not set(given) <= known:
        raise BadValue(
            "own_sampling", given, f"a mapping of {', '.join(sorted(known))}",
            "'{guidance_scale: 3}'",
        )  # fmt: skip
    try:
        return Guidance(attribute_scale=ATTRIBUTE_SCALE if attributes else None).over_config(given)
    except BadValue as err:
        raise err.under("own_sampling") from None
