"""A LoRA adapter folder (``python -m diffusion_lit.export`` of a ``finetune=lora`` run),
pickle-free: ``adapter.json`` (the base model's content hash and path, the adapter's rank,
alpha and layers, the model's classes and captions as text, its sampling and lineage) and
``adapter.safetensors`` (the adapter's weights alone), beside a model card. It is drawn from
over the base it was made for (:func:`diffusion_lit.modelfile.load.load_model`); its captions
are encoded there, by the base's text encoder, so the folder stays a small fraction of the
model's size."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusion_lit.errors import UserError, first_line
from diffusion_lit.files import kind
from diffusion_lit.modelfile.lineage import read_lineage
from diffusion_lit.modelfile.safe_files import has_format, header_shapes, read_config, tensors
from diffusion_lit.modelfile.spec import ModelSpec, read_adapter, read_attributes, read_classes
from diffusion_lit.modelfile.weights import check_finite
from diffusion_lit.models.lora import adapter_shapes, add_lora

ADAPTER_FORMAT = "diffusion_lit-adapter"
CONFIG, WEIGHTS = "adapter.json", "adapter.safetensors"
FIX = "export the fine-tune's checkpoint again"
BASE_KEYS = ("hash", "path")


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter as read from its folder: the base it was made for (``base_hash``,
    ``base_path``), its shape (``lora``: rank, alpha, layers), the classes and captions of the
    model it makes, that model's lineage, and its weights."""

    path: Path
    base_hash: str
    base_path: str
    lora: dict
    class_names: list[str]
    class_prompts: list[list[str]]
    attributes: dict[str, list[str]]
    lineage: list[dict]
    state: dict[str, torch.Tensor]


def is_adapter(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`write_adapter` (by its config's format)."""
    return has_format(path / CONFIG, ADAPTER_FORMAT) and (path / WEIGHTS).is_file()


def write_adapter(folder: Path, spec: ModelSpec, state: dict, extra: dict) -> None:
    """Writes the adapter ``state`` of the fine-tune ``spec`` (whose last lineage link names
    its base) into ``folder``; ``extra``: more keys for its config."""
    base = spec.lineage[-1]
    config = {
        "format": ADAPTER_FORMAT,
        "version": 1,
        "base": {"hash": base["hash"], "path": base["path"]},
        "lora": dict(spec.adapter),
        "class_names": list(spec.class_names),
        "class_prompts": [list(p) for p in spec.class_prompts],
        "attributes": {k: list(v) for k, v in spec.attributes.items()},
        "lineage": [dict(link) for link in spec.lineage],
        **extra,
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, folder / WEIGHTS, metadata={"format": ADAPTER_FORMAT})


def read_adapter_folder(path: Path, base: ModelSpec) -> Adapter:
    """The adapter in ``path``, read as data and checked against the ``base`` model it is to
    be drawn over: its config within bounds, its weights' names and shapes (from the file's
    header) those of its layers on that base's UNet, every value finite."""
    if kind(path / CONFIG) is None or kind(path / WEIGHTS) is None:
        raise UserError(
            f"{path} is not a diffusion_lit adapter: it needs {CONFIG} and {WEIGHTS}; write one "
            "with python -m diffusion_lit.export ckpt_path=<a finetune=lora run's checkpoint>."
        )
    config, source = read_config(path / CONFIG, ADAPTER_FORMAT, FIX), str(path / CONFIG)
    given = config.get("base")
    if not (isinstance(given, dict) and all(isinstance(given.get(k), str) for k in BASE_KEYS)):
        raise UserError(f"{source} is damaged: it does not name the base model it was made for.")
    lora = read_adapter(config.get("lora"), source)
    if lora is None:
        raise UserError(f"{source} is damaged: it has no LoRA rank, alpha and layers.")
    names, prompts = read_classes(config.get("class_names"), config.get("class_prompts"), source)
    attributes = read_attributes(config.get("attributes", {}), source)
    lineage = read_lineage(config.get("lineage", []), source)
    with torch.device("meta"):
        net = ModelSpec.build_net(base, source)
        try:
            add_lora(net, lora["rank"], lora["alpha"], lora["modules"])
        except ValueError as err:  # a layer the base has not
            raise UserError(
                f"{source}: its layers are not the base model's ({first_line(err)})."
            ) from err
        expected = adapter_shapes(net)
    found = header_shapes(path / WEIGHTS, FIX)
    if found != expected:
        differ = sorted(set(found) ^ set(expected))
        differ = differ or [k for k in expected if found[k] != expected[k]]
        raise UserError(
            f"{path / WEIGHTS} does not fit its configuration on this base model ({len(differ)} "
            f"weights differ, e.g. {differ[0]}): it was made for another model; pass the base "
            f"it was made for ({given['path']})."
        )
    state = tensors(path / WEIGHTS, FIX)
    check_finite(state, str(path / WEIGHTS))
    return Adapter(path, given["hash"], given["path"], lora, names, prompts, attributes,
                   lineage, state)  # fmt: skip
