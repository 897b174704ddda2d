"""LoRA adapters on a UNet's ``Conv2d`` and ``Linear`` layers, through peft (Hu et al. 2021):
added to a network in place (:func:`add_lora`), its adapter weights alone
(:func:`adapter_state`), an adapter's weights loaded back with a weight
(:func:`load_adapter`), and every adapter folded into the weights it adapts
(:func:`merge_lora`), which leaves the plain network, as fast as before."""

import warnings

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import set_peft_model_state_dict as _set_state
from peft.tuners.lora import LoraLayer
from torch import nn

from diffusion_lit.errors import BadValue

LAYER_TYPES = {"Conv2d": nn.Conv2d, "Linear": nn.Linear}


def target_modules(net: nn.Module, targets: list[str]) -> list[str]:
    """The names of the layers ``targets`` names: ``Conv2d`` and ``Linear`` stand for every
    layer of that type, any other name for the layers whose name is it or ends in ``.it``;
    only ``Conv2d`` and ``Linear`` layers can take an adapter."""
    found = []
    for target in targets:
        if target in LAYER_TYPES:
            named = [n for n, m in net.named_modules() if type(m) is LAYER_TYPES[target]]
        else:
            named = [n for n, m in net.named_modules()
                     if (n == target or n.endswith(f".{target}"))
                     and type(m) in LAYER_TYPES.values()]  # fmt: skip
        if not named:
            raise BadValue(
                "finetune.targets", target,
                "Conv2d, Linear or the name of one of the UNet's Conv2d or Linear layers",
                "[Conv2d, Linear]",
            )  # fmt: skip
        found += [n for n in named if n not in found]
    return found


def lora_config(rank: int, alpha: float, modules: list[str]) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(modules), lora_dropout=0.0)


def add_lora(net: nn.Module, rank: int, alpha: float, modules: list[str],
             name: str = "default") -> nn.Module:  # fmt: skip
    """Adds a LoRA adapter (``rank``, scaled by ``alpha / rank``) to the layers ``modules``
    of ``net``, in place, starting at zero (the network computes what it did); only the
    adapters' weights train."""
    with warnings.catch_warnings():  # a second adapter: peft notes it found the first
        warnings.filterwarnings("ignore", message=".*[Aa]lready found a `peft_config`.*")
        inject_adapter_in_model(lora_config(rank, alpha, modules), net, adapter_name=name)
    for param_name, param in net.named_parameters():
        param.requires_grad = "lora_" in param_name
    return net


def has_lora(net: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in net.modules())


def adapter_state(net: nn.Module, name: str = "default") -> dict:
    """The adapter's weights alone (peft's names, without the adapter's name)."""
    return {k: v.detach().cpu().contiguous()
            for k, v in get_peft_model_state_dict(net, adapter_name=name).items()}  # fmt: skip


def load_adapter(net: nn.Module, state: dict, rank: int, alpha: float, modules: list[str],
                 name: str, weight: float = 1.0) -> None:  # fmt: skip
    """Adds the adapter ``state`` (as :func:`adapter_state` gives it) to ``net`` as ``name``,
    scaled by ``weight``, and makes every adapter ``net`` has active."""
    add_lora(net, rank, alpha, modules, name)
    result = _set_state(net, state, adapter_name=name)
    missing = [k for k in result.missing_keys if f".{name}." in k]
    if result.unexpected_keys or missing:  # checked by the caller; this is a last guard
        raise ValueError(f"adapter {name}: {len(missing)} weights missing, "
                         f"{len(result.unexpected_keys)} unexpected")  # fmt: skip
    layers = [m for m in net.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.set_scale(name, weight)
    names = list(layers[0].lora_A) if layers else []
    for layer in layers:
        layer.set_adapter(names)


def merge_lora(net: nn.Module) -> nn.Module:
    """Folds every active adapter into the weights it adapts and puts the plain layers back:
    the network as it was built, with the adapted weights."""
    for name, module in list(net.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, module.get_base_layer())
    for param in net.parameters():
        param.requires_grad = True
    return net


def adapter_shapes(net: nn.Module, name: str = "default") -> dict[str, tuple[int, ...]]:
    """The names and shapes of an adapter's weights (works on the meta device)."""
    return {k: tuple(v.shape)
            for k, v in get_peft_model_state_dict(net, adapter_name=name).items()}  # fmt: skip
