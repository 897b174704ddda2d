"""Where a model came from: the content hash that names a model's weights whatever file holds
them, and the chain of models it was trained from (``ModelSpec.lineage``, oldest first)."""

import hashlib

import torch
from torch import nn

from diffusion_lit.errors import UserError

# a chain this long is far beyond any real one; a file claiming more is refused
MAX_LINEAGE = 64
STEP_KEYS = {"hash": str, "path": str, "data": str, "classes": list, "how": str, "replay": str}


def content_hash(net: nn.Module) -> str:
    """The SHA-256 of the network's weights (names, shapes and float32 values, in name order):
    the same for a checkpoint's EMA weights and their export, different for any other
    weights."""
    digest = hashlib.sha256()
    for name, value in sorted(net.state_dict().items()):
        value = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}|{tuple(value.shape)}|".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def step(base_hash: str, base_path: str, data: str, classes: list[str], how: str,
         replay: str) -> dict:  # fmt: skip
    """One link of a lineage: the model trained from (its hash and path), on what data and
    classes, how (``full`` or ``lora``) and with what replay of the classes it knew."""
    return {"hash": base_hash, "path": base_path, "data": data, "classes": list(classes),
            "how": how, "replay": replay}  # fmt: skip


def read_lineage(given, source: str) -> list[dict]:
    """A model file's lineage, checked: a list of at most :data:`MAX_LINEAGE` links, each of
    exactly :data:`STEP_KEYS` with values of those types (strings, a list of strings)."""
    ok = isinstance(given, list) and len(given) <= MAX_LINEAGE
    for link in given if ok else []:
        ok = ok and isinstance(link, dict) and set(link) == set(STEP_KEYS)
        ok = ok and all(isinstance(link[k], t) for k, t in STEP_KEYS.items())
        ok = ok and all(isinstance(c, str) for c in link["classes"])
    if not ok:
        raise UserError(
            f"{source} is damaged or not a diffusion_lit model: its lineage is not a list of "
            f"at most {MAX_LINEAGE} links of {', '.join(STEP_KEYS)}."
        )
    return [dict(link) for link in given]


def describe(lineage: list[dict]) -> list[str]:
    """A line per link, oldest first: ``<path> (<hash>) → + <classes> on <data>, <how>, replay
    <replay>``."""
    return [
        f"from `{link['path']}` ({link['hash'][:12]}): {link['how']} on {link['data']}"
        + (f" ({', '.join(link['classes'])})" if link["classes"] else "")
        + f", replay {link['replay']}"
        for link in lineage
    ]
