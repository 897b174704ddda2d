"""Reverse-process samplers. A sampler only needs ε̂(x_t, t) and the schedule's ᾱ_t."""

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from diffusion_lit.schedule import NoiseSchedule

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def spaced_timesteps(timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced training timesteps from 0 to T − 1, ascending (all of them if
    steps = T), as in "respacing" (Nichol & Dhariwal 2021, §4)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be between 1 and the schedule's T={timesteps}, got {steps}")
    return torch.linspace(0, timesteps - 1, steps).round().long()


@torch.no_grad()
def ddpm_sample(
    eps_fn: NoisePredictor,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """DDPM ancestral sampling from x_T = ``x`` (pure noise) down to x_0.

    With ``steps`` < T it walks a sub-sequence τ of the training steps, with the β of each jump
    recomputed from ᾱ (β_i = 1 − ᾱ_τi / ᾱ_τi−1); steps = T is exactly Ho et al.'s Algorithm 2.
    Fresh noise is drawn on the CPU from ``generator``, so a seed gives the same images anywhere.
    """
    taus = spaced_timesteps(schedule.timesteps, steps or schedule.timesteps)
    alphas_cumprod = schedule.alphas_cumprod[taus.to(schedule.alphas_cumprod.device)].to(x.device)
    for i in tqdm(range(len(taus) - 1, -1, -1), desc="sampling", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), int(taus[i]), device=x.device, dtype=torch.long)
        eps = eps_fn(x, t).to(x.dtype)
        a_t = alphas_cumprod[i]
        a_prev = alphas_cumprod[i - 1] if i > 0 else x.new_tensor(1.0)
        beta = 1 - a_t / a_prev
        # x̂_0 from eq. 15, then the posterior q(x_prev | x_t, x̂_0) mean and variance (eqs. 6–7)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        x = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a_t)
        if i > 0:
            var = beta * (1 - a_prev) / (1 - a_t)
            x = x + var.sqrt() * torch.randn(x.shape, generator=generator).to(x)
    return x
