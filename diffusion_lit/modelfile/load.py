"""A trained model from either of its two forms on disk, as data only: a training checkpoint
(:mod:`~diffusion_lit.modelfile.checkpoint`) or an export folder
(:mod:`~diffusion_lit.modelfile.export_folder`), with LoRA adapters over it
(:mod:`~diffusion_lit.modelfile.adapter_folder`) when given. Either way the model is rebuilt
from its spec through :mod:`~diffusion_lit.modelfile.spec`'s fixed table of this project's
classes: nothing a file names is imported or called."""

from dataclasses import replace
from pathlib import Path

from diffusion_lit import checks
from diffusion_lit.diffusion.model import DiffusionModel
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.adapter_folder import Adapter, read_adapter_folder
from diffusion_lit.modelfile.checkpoint import existing, model_from_checkpoint, read_checkpoint
from diffusion_lit.modelfile.export_folder import read_export
from diffusion_lit.modelfile.lineage import content_hash
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.models.lora import load_adapter, merge_lora
from diffusion_lit.text.captions import CaptionTable, merged

ADAPTER_HINT = "an adapter folder (python -m diffusion_lit.export of a finetune=lora run)"


def load_model(
    path: str | Path,
    use_ema: bool = True,
    adapters: list[str | Path] = (),
    adapter_weights: list[float] | None = None,
) -> tuple[ModelSpec, DiffusionModel]:
    """The spec and model in a ``.ckpt`` file or an export folder, with the LoRA ``adapters``
    (folders) over it, each scaled by its weight in ``adapter_weights`` (default 1). A
    fine-tune's own checkpoint comes with its adapter folded in. ``use_ema`` picks a
    checkpoint's EMA weights (when it was trained with them) over the raw trained ones; an
    export holds the weights it was exported with."""
    path = existing(path)
    if path.is_dir():
        spec, model = read_export(path)
    else:
        ckpt, spec = read_checkpoint(path)
        model = model_from_checkpoint(ckpt, spec, use_ema, path)
    if spec.adapter is not None:
        merge_lora(model.net)
        spec = replace(spec, adapter=None)
    weights = check_adapter_weights(adapters, adapter_weights)
    if adapters:
        spec = with_adapters(spec, model, path, adapters, weights)
    return spec, model


def check_adapter_weights(adapters: list, weights: list[float] | None) -> list[float]:
    """Each adapter's weight: those given (-10 to 10, one per adapter), or 1 each."""
    weights = checks.reals("adapter_weights", weights, -10, 10)
    weights = [1.0] * len(adapters) if weights is None else weights
    if len(weights) != len(adapters):
        raise UserError(
            f"adapter_weights has {len(weights)} weights for {len(adapters)} adapters: give one "
            "per adapter, or none (each 1)."
        )
    return weights


def with_adapters(
    spec: ModelSpec, model: DiffusionModel, path: Path, adapters: list, weights: list[float]
) -> ModelSpec:
    """Folds each adapter, scaled by its weight, into ``model`` (read from ``path``) and adds
    their classes and captions to its own; returns the spec of the model it makes. An adapter
    made for another model is refused in one line, before anything changes."""
    found = [read_adapter_folder(existing(p, "adapters", ADAPTER_HINT), spec) for p in adapters]
    own = content_hash(model.net)
    for adapter in found:
        if adapter.base_hash != own:
            raise UserError(
                f"{adapter.path} was made for the model {adapter.base_hash[:12]} "
                f"({adapter.base_path}), and {path} is {own[:12]}: pass that model as "
                "ckpt_path (with the same use_ema), or an adapter made for this one."
            )
    for i, (adapter, weight) in enumerate(zip(found, weights, strict=True)):
        lora = adapter.lora
        load_adapter(model.net, adapter.state, lora["rank"], lora["alpha"], lora["modules"],
                     f"adapter{i}", weight)  # fmt: skip
    merge_lora(model.net)
    names, table, _ = merged(
        [(spec.class_names, _table(spec)), *((a.class_names, _table(a)) for a in found)]
    )
    model.prompts = model.prompts.extended(
        names, table.class_prompts, lambda prompts: spec.build_text_encoder().encode(prompts)
    )
    links = [link for adapter in found for link in adapter.lineage[-1:]]
    return replace(
        spec, class_names=names, class_prompts=table.class_prompts,
        attributes=table.attributes, lineage=[*spec.lineage, *links],
    )  # fmt: skip


def _table(model: ModelSpec | Adapter) -> CaptionTable:
    return CaptionTable(model.class_prompts, attributes=model.attributes)
