"""β schedules, the DDPM forward process q(x_t | x_0) (Ho et al. 2020), and what the network
predicts: the noise ε, the velocity v (Salimans & Ho 2022) or the clean image x_0."""

import math

import torch
from torch import nn

from diffusion_lit import checks
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


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Algorithm 1: shift and scale √ᾱ so that √ᾱ_T = 0 (the last training
    step sees pure noise, as sampling starts from) while √ᾱ_1 is kept. ᾱ_T is then set to half
    of ᾱ_T−1 rather than 0 (diffusers uses 2⁻²⁴, which can exceed ᾱ_T−1), so the schedule
    still decreases and x̂_0 stays finite; use it with v-prediction."""
    s = alphas_cumprod.sqrt()
    s = (s - s[-1]) * s[0] / (s[0] - s[-1])
    alphas_cumprod = s**2
    alphas_cumprod[-1] = alphas_cumprod[-2] / 2
    return alphas_cumprod


KINDS = ("linear", "cosine")
PREDICTIONS = ("eps", "v", "x0")


def start_from_noise(x_t, eps, sqrt_a, sqrt_1ma):
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15), given √ᾱ_t and √(1 − ᾱ_t): the one
    place x̂_0 is made from ε̂ (the schedule's conversions and the samplers' steps)."""
    return (x_t - sqrt_1ma * eps) / sqrt_a


def noise_from_start(x_t, x0, sqrt_a, sqrt_1ma):
    """ε̂ = (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t): eq. 4 solved for the noise."""
    return (x_t - sqrt_a * x0) / sqrt_1ma


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
        prediction: str = "eps",
        zero_terminal_snr: bool = False,
    ):
        super().__init__()
        checks.integer("timesteps", timesteps, 2, 100_000)
        checks.one_of("kind", kind, KINDS)
        for key, value in {
            "beta_start": beta_start,
            "beta_end": beta_end,
            "cosine_s": cosine_s,
        }.items():
            checks.real(key, value, 0, 1, above=True)
        checks.one_of("prediction", prediction, PREDICTIONS)
        if checks.flag("zero_terminal_snr", zero_terminal_snr) and prediction != "v":
            raise UserError(
                "schedule.zero_terminal_snr=true needs schedule.prediction=v: at ᾱ_T = 0 the "
                "noise says nothing about the image, so ε-prediction cannot be turned into x_0."
            )
        if kind == "linear":
            betas = linear_beta_schedule(timesteps, beta_start, beta_end)
        else:
            betas = cosine_beta_schedule(timesteps, cosine_s)
        self.timesteps, self.kind, self.prediction = timesteps, kind, prediction
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
            betas = 1 - alphas_cumprod / torch.cat(
                [alphas_cumprod.new_ones(1), alphas_cumprod[:-1]]
            )
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

    def _coefficients(self, t: torch.Tensor, shape: torch.Size):
        return (
            extract(self.sqrt_alphas_cumprod, t, shape),
            extract(self.sqrt_one_minus_alphas_cumprod, t, shape),
        )

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict: ε; x_0; or v = √ᾱ_t ε − √(1 − ᾱ_t) x_0
        (Salimans & Ho 2022, eq. 10)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        a, s = self._coefficients(t, x0.shape)
        return a * noise - s * x0

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x̂_0 from the network's output: (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15) for ε;
        √ᾱ_t x_t − √(1 − ᾱ_t) v̂ for v; the output itself for x_0."""
        if self.prediction == "x0":
            return out
        a, s = self._coefficients(t, x_t.shape)
        return a * x_t - s * out if self.prediction == "v" else start_from_noise(x_t, out, a, s)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """ε̂ from the network's output: itself for ε; √ᾱ_t v̂ + √(1 − ᾱ_t) x_t for v;
        (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t) for x_0. The samplers take ε̂."""
        if self.prediction == "eps":
            return out
        a, s = self._coefficients(t, x_t.shape)
        return a * out + s * x_t if self.prediction == "v" else noise_from_start(x_t, out, a, s)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """The signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at each t."""
        a = self.alphas_cumprod[t]
        return a / (1 - a)
