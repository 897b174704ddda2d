"""Building objects from Hydra config nodes, and the model spec a training config describes."""

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lit.precision import native_bf16
from diffusion_lit.run_dir import RunDir  # noqa: F401  (registers the ${run_file:...} resolver)
from diffusion_lit.spec import SPEC_VERSION, kind_of, read_sampling


def fast_precision(accelerator: str) -> str:
    """``${fast_precision:${trainer.accelerator}}``: ``bf16-mixed`` where ``accelerator`` computes
    bf16 natively (:func:`~diffusion_lit.precision.native_bf16`), else ``32``. On this project's
    2-core AVX512-BF16 CPU bf16-mixed trains the Fashion-MNIST UNet 1.8× faster
    (bench/RESULTS.md)."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if native_bf16("cuda" if gpu else "cpu") else "32"


OmegaConf.register_new_resolver("fast_precision", fast_precision, replace=True)


def build(node, **kwargs):
    """``hydra.utils.instantiate`` that lets the target's own error through unwrapped: for bad
    input that error's message is the one that names the problem and the fix."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is None:
            raise
        raise err.__cause__ from None


def component_spec(node: DictConfig, group: str) -> dict:
    """A config node with ``_target_`` as spec data: the class's name in the spec table
    (``diffusion_lit.models.SimpleUNet`` → ``kind: simple``) and its plain arguments. A class
    outside the table trains, and its checkpoints record the import path, which loading refuses
    until the class is added to the table."""
    args = OmegaConf.to_container(node, resolve=True)
    target = args.pop("_target_")
    return {"kind": kind_of(get_class(target), group) or target} | args


def model_spec(cfg: DictConfig, class_names: list[str], class_prompts: list[list[str]]) -> dict:
    """The model a training config describes, as the plain data its checkpoints hold."""
    return {
        "version": SPEC_VERSION,
        "net": component_spec(cfg.model, "net"),
        "schedule": OmegaConf.to_container(cfg.schedule, resolve=True),
        "text_encoder": component_spec(cfg.text_encoder, "text_encoder"),
        "class_names": list(class_names),
        "class_prompts": [list(p) for p in class_prompts],
        "sampling": sampling_spec(cfg),
    }


def sampling_spec(cfg: DictConfig) -> dict:
    """The sampling the model records as its own: the training config's ``sampling`` over the
    project's defaults (:data:`diffusion_lit.spec.SAMPLING`), checked."""
    given = cfg.get("sampling")
    given = OmegaConf.to_container(given, resolve=True) if isinstance(given, DictConfig) else given
    return read_sampling(given or {})
