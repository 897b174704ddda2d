"""The learning-rate schedule: a linear warm-up, then constant or a cosine decay."""

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from diffusion_lit import checks


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: float | Callable[[], float],
    warmup_steps: int = 0,
    cosine: bool = True,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """The optimizer's learning rate × a factor rising linearly from 1/warmup_steps to 1 over
    ``warmup_steps``, then constant, or falling along half a cosine to ``min_lr_ratio`` at
    ``total_steps`` (Loshchilov & Hutter 2017, without restarts). A run without a step count
    (``max_epochs=-1``, a time limit) keeps the rate constant after the warm-up.

    ``total_steps`` may be a function, asked once, after the first step past the warm-up: a
    LightningModule passes ``lambda: trainer.estimated_stepping_batches``, which must not be
    asked in ``configure_optimizers`` — it loads the training data before Lightning restores a
    mid-epoch checkpoint's data-loader position, and the resumed epoch would start over.

    Hand-written: torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` needs the step count
    when the config is written, and Lightning only knows it when training starts."""
    checks.integer("warmup_steps", warmup_steps, 0, 10**9)
    checks.flag("cosine", cosine)
    checks.real("min_lr_ratio", min_lr_ratio, 0, 1)
    known: list[float] = []

    def total() -> float:
        if not known:
            known.append(float(total_steps() if callable(total_steps) else total_steps))
        return known[0]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine or step == warmup_steps:  # the top of the cosine: 1 whatever the total
            return 1.0
        if not math.isfinite(total()) or total() <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total() - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
