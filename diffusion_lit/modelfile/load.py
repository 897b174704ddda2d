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
# adapters drawn at once, and their weights' sum of magnitudes: far above any useful blend,
# low enough that no request multiplies the work or the weights without bound
MAX_ADAPTERS, MAX_TOTAL_WEIGHT = 8, 10.0
# the captions adapters add are encoded as they load (a text encoder's pass each): bounded
MAX_ADAPTER_CAPTIONS = 1_024


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
    weights = check_adapters(adapters, adapter_weights)
    if adapters:
        spec = with_adapters(spec, model, path, adapters, weights)
    return spec, model


def check_adapters(adapters: list, weights: list[float] | None) -> list[float]:
    """Each adapter's weight: those given (one per adapter, their magnitudes summing to at
    most :data:`MAX_TOTAL_WEIGHT`), or 1 each; at most :data:`MAX_ADAPTERS` adapters, each
    once."""
    if len(adapters) > MAX_ADAPTERS:
        raise UserError(
            f"{len(adapters)} adapters at once is more than {MAX_ADAPTERS}: pass fewer, or "
            "export a merged model (python -m diffusion_lit.export adapters=[...]) and add more "
            "over it."
        )
    folders = [_resolved(a) for a in adapters]
    twice = next((a for a, f in zip(adapters, folders, strict=True) if folders.count(f) > 1), None)
    if twice is not None:
        raise UserError(
            f"adapters lists {twice} more than once: list each adapter once, with the weight "
            "you want in adapter_weights."
        )
    weights = checks.reals("adapter_weights", weights, -MAX_TOTAL_WEIGHT, MAX_TOTAL_WEIGHT)
    weights = [1.0] * len(adapters) if weights is None else weights
    if len(weights) != len(adapters):
        raise UserError(
            f"adapter_weights has {len(weights)} weights for {len(adapters)} adapters: give one "
            "per adapter, or none (each 1)."
        )
    if sum(map(abs, weights)) > MAX_TOTAL_WEIGHT:
        raise UserError(
            f"adapter_weights {weights} add up to {sum(map(abs, weights)):g} in magnitude, more "
            f"than {MAX_TOTAL_WEIGHT:g}: pass smaller weights."
        )
    return weights


def _resolved(path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path)


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
    names, table, _ = merged(
        [(spec.class_names, _table(spec)), *((a.class_names, _table(a)) for a in found)]
    )
    new = {t for row in table.class_prompts for t in row} - set(model.prompts.index)
    if len(new) > MAX_ADAPTER_CAPTIONS:
        raise UserError(
            f"{', '.join(map(str, adapters))} bring {len(new):,} captions {path} does not have, "
            f"more than the {MAX_ADAPTER_CAPTIONS:,} encoded when adapters are loaded: export "
            "the fine-tune merged (merge=true) and draw from that."
        )
    for i, (adapter, weight) in enumerate(zip(found, weights, strict=True)):
        lora = adapter.lora
        load_adapter(model.net, adapter.state, lora["rank"], lora["alpha"], lora["modules"],
                     f"adapter{i}", weight)  # fmt: skip
    merge_lora(model.net)
    bad = [k for k, v in model.net.state_dict().items() if not v.isfinite().all()]
    if bad:  # finite adapter values whose products overflow
        raise UserError(
            f"{', '.join(map(str, adapters))} over {path} make non-finite weights ({len(bad)} "
            f"tensors, e.g. {bad[0]}): an adapter is damaged or its weight too large; pass "
            "another adapter or a smaller adapter_weights."
        )
    model.prompts = model.prompts.extended(names, table.class_prompts, model.prompts.encode)
    links = [link for adapter in found for link in adapter.lineage[-1:]]
    return replace(
        spec, class_names=names, class_prompts=table.class_prompts,
        attributes=table.attributes, lineage=[*spec.lineage, *links],
    )  # fmt: skip


def _table(model: ModelSpec | Adapter) -> CaptionTable:
    return CaptionTable(model.class_prompts, attributes=model.attributes)
