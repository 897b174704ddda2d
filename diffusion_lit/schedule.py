"""β schedules and the DDPM forward process q(x_t | x_0) (Ho et al. 2020)."""

import math

import torch
from torch import nn

from diffusion_lit.errors import UserError


def linear_beta_schedule(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
    """Linearly spaced β_t, the DDPM paper's schedule (Ho et al. 2020, §4), whose β ∈ [1e-4, 0.02]
    are for T = 1000: scaled by 1000/T, so that ᾱ_T ≈ 0 for any T (Nichol & Dhariwal 2021, the
    "linear" schedule of their code), and clipped at 0.999 as the cosine one."""
    scale = 1000 / timesteps
    betas = torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)
    return betas.clamp(max=0.999)


def cosine_beta_schedule(timesteps: int, s: float = 0.008):
    """ᾱ_t = cos²((t/T + s)/(1 + s) · π/2), β clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=0.999)


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
    """a[t] reshaped to (B, 1, 1, ...) so it broadcasts against a batch of shape ``x_shape``."""
    return a.gather(0, t).view(t.shape[0], *([1] * (len(x_shape) - 1)))


class NoiseSchedule(nn.Module):
    """Holds β_t and the coefficients derived from it as buffers (computed in float64, stored
    float32), so they move with the model between devices. ``beta_start`` and ``beta_end`` are
    the linear schedule's β at T = 1000 (scaled for other T)."""

    def __init__(
        self,
        timesteps: int = 1000,
        kind: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
    ):
        super().__init__()
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 2:
            raise UserError(
                f"schedule.timesteps must be an integer of at least 2, got {timesteps!r}."
            )
        if kind == "linear":
            betas = linear_beta_schedule(timesteps, beta_start, beta_end)
        elif kind == "cosine":
            betas = cosine_beta_schedule(timesteps, cosine_s)
        else:
            raise UserError(f"Unknown schedule.kind={kind!r}; choose 'linear' or 'cosine'.")
        self.timesteps, self.kind = timesteps, kind
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        for name, value in {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε (DDPM eq. 4)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t, eq. 4 solved for x_0 (DDPM eq. 15)."""
        return (x_t - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * noise) / extract(
            self.sqrt_alphas_cumprod, t, x_t.shape
        )
