"""The learning-rate schedule: a linear warm-up, then constant or a cosine decay."""

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: float,
    warmup_steps: int = 0,
    cosine: bool = True,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """The optimizer's learning rate × a factor rising linearly from 1/warmup_steps to 1 over
    ``warmup_steps``, then constant, or falling along half a cosine to ``min_lr_ratio`` at
    ``total_steps`` (Loshchilov & Hutter 2017, without restarts). A run without a step count
    (``max_epochs=-1``, a time limit) keeps the rate constant after the warm-up.

    Hand-written: torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` needs the step count
    when the config is written, and Lightning only knows it when training starts."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine or not math.isfinite(total_steps) or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
