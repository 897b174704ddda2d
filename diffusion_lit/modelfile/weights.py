"""A model file's tensors checked against its spec before any of them is used: every name and
shape against the model the spec describes (built on the meta device, so nothing is allocated
for a spec that claims a huge model), and every value finite. A file that passes holds exactly
the tensors its model has, so loading it allocates no more than the file's own size."""

import torch
from torch import nn

from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.spec import ModelSpec

Shapes = dict[str, tuple[int, ...]]


def expected_net(spec: ModelSpec, source: str) -> Shapes:
    """The names and shapes of the UNet's weights, from a build on the meta device (``source``:
    the file that holds the spec, named when a value is not one the UNet takes)."""
    with torch.device("meta"):
        net: nn.Module = spec.build_net(source)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_net(expected: Shapes, found: Shapes, source: str) -> None:
    """Refuses, naming what differs, weights that are not the UNet's the spec describes
    (``expected``: :func:`expected_net`)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = [
        f"{k} {found[k]} vs {v}" for k, v in expected.items() if k in found and found[k] != v
    ]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(missing)} weights missing ({', '.join(missing[:3])})" if missing else "",
            f"{len(unexpected)} unknown ({', '.join(unexpected[:3])})" if unexpected else "",
            f"{len(reshaped)} of another shape, file vs model ({'; '.join(reshaped[:3])})"
            if reshaped
            else "",
        ]
        raise UserError(
            f"{source} does not fit the model its configuration describes: "
            f"{', '.join(p for p in problems if p)}. The weights come from another model or "
            "configuration: use the config and weights written together by one training run or "
            "export."
        )


def check_prompts(spec: ModelSpec, found: Shapes, source: str) -> None:
    """Refuses encoded prompts that are not one per distinct training prompt of the spec, in
    the UNet's text width: pooled (N, D), and tokens (N, L, D) with mask (N, L) where saved
    (:mod:`diffusion_lit.text.prompt_bank`); up to format 4, one per cell of the classes ×
    prompts table: pooled (C, K, D), tokens (C, K, L, D), mask (C, K, L)."""
    width = spec.net.get("text_dim")
    length = found.get("mask", (0,))[-1]
    if len(found.get("pooled", ())) == 3:
        table = (len(spec.class_prompts), len(spec.class_prompts[0]))
    else:
        table = (len({p for row in spec.class_prompts for p in row}),)
    expected = {"pooled": (*table, width)}
    if "tokens" in found or "mask" in found or len(table) == 2:
        expected |= {"tokens": (*table, length, width), "mask": (*table, length)}
    if found != expected or ("mask" in expected and not 0 < length <= 4096):
        raise UserError(
            f"{source}: the encoded prompts have shapes {found}, where the spec's "
            f"{' × '.join(map(str, table))} prompts in {width} dimensions need {expected}; the "
            "file is damaged or its parts come from different models."
        )


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuses a NaN or an infinite value in any tensor (weights, prompt encodings)."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise UserError(
            f"{source} holds NaN or infinite values ({len(bad)} tensors: "
            f"{', '.join(bad[:3])}); the model cannot draw with them. Use a checkpoint from "
            "before the training diverged (e.g. another checkpoints/*.ckpt of its run)."
        )


def shapes(tensors: dict[str, torch.Tensor]) -> Shapes:
    return {k: tuple(v.shape) for k, v in tensors.items()}
