"""Reverse-process samplers. Each needs only ε̂(x_t, t) and the schedule's ᾱ_t, and walks a
grid of training timesteps (:func:`spaced_timesteps`) from the noisiest down to the clean image."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import UserError

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int], None]  # (steps done, steps in all)
# the high_noise grid's exponent: 1 is linspace; bench/step_grids.py compared 1.5 and 2
HIGH_NOISE_POWER = 1.5
SPACINGS = ("linspace", "leading", "trailing", "quadratic", "high_noise")


def spaced_timesteps(timesteps: int, steps: int, spacing: str = "linspace") -> torch.Tensor:
    """The ``steps`` training timesteps a sampler visits, ascending, as diffusers'
    ``timestep_spacing`` (Lin et al. 2024, Table 2): ``linspace`` evenly from 0 to T − 1,
    rounded ("respacing", Nichol & Dhariwal 2021, §4); ``leading`` the multiples of ⌊T/steps⌋
    from 0; ``trailing`` evenly from T − 1 down in strides of T/steps, so that the first step is
    always at T − 1, where the starting noise is (which makes even one step meaningful).
    ``quadratic``: DDIM's other grid (Song et al. 2021, App. D.2), (i/(steps − 1))² (T − 1)
    rounded, from 0 to T − 1: short steps where the noise is low, long ones where it is high
    (a timestep two of them round to is visited once). ``high_noise``: the other way round,
    (1 − (1 − i/(steps − 1))^1.5) (T − 1): short steps where the noise is high, where an
    ε-predicting network's x̂_0 is least accurate and a few long stochastic steps carry its
    errors into the image (bench/RESULTS.md, where the steps matter). Hand-written: diffusers
    has neither, and its Karras σ (``use_karras_sigmas``) spends most steps at t > 0.98 T on
    the cosine schedule, whose σ at T − 1 is 2·10⁴."""
    if spacing not in SPACINGS:
        raise UserError(
            f"Unknown timestep_spacing={spacing!r}; choose one of {', '.join(SPACINGS)}."
        )
    if not 1 <= steps <= timesteps:
        raise UserError(
            f"steps must be between 1 and the schedule's T={timesteps}, got {steps}; pass "
            f"steps=<1..{timesteps}>."
        )
    if spacing == "linspace":
        taus = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round()
    elif spacing == "quadratic":
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        taus = (ramp**2 * (timesteps - 1)).round().unique_consecutive()
    elif spacing == "high_noise":
        taus = high_noise_grid(timesteps, steps)
    elif spacing == "leading":
        taus = torch.arange(steps, dtype=torch.float64) * (timesteps // steps)
    else:
        taus = (timesteps - torch.arange(steps, dtype=torch.float64) * timesteps / steps).round()
        taus = (taus - 1).flip(0)
    if taus[-1] == 0:
        raise UserError(
            f"steps={steps} with timestep_spacing={spacing} visits only t=0, so the sample would "
            "be the starting noise; use steps=2 or more, or timestep_spacing=trailing (its one "
            "step starts at t=T-1)."
        )
    return taus.long()


def high_noise_grid(timesteps: int, steps: int, power: float = HIGH_NOISE_POWER) -> torch.Tensor:
    """(1 − (1 − i/(steps − 1))^power) (T − 1) rounded, ascending, each timestep once: the
    ``high_noise`` spacing (``power`` 1 is linspace)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    return ((1 - (1 - ramp) ** power) * (timesteps - 1)).round().unique_consecutive()


def _walk(schedule: NoiseSchedule, x: torch.Tensor, taus: torch.Tensor, progress: bool, callback):
    """Yields (i, t, ᾱ_t, ᾱ_prev) from the noisiest step down; ᾱ_prev = 1 after the last. After
    each step, ``callback(steps done, steps in all)`` when given."""
    alphas = schedule.alphas_cumprod.to(x.device)[taus.to(x.device)]
    for i in tqdm(range(len(taus) - 1, -1, -1), desc="sampling", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), int(taus[i]), device=x.device, dtype=torch.long)
        yield i, t, alphas[i], alphas[i - 1] if i > 0 else alphas.new_tensor(1.0)
        if callback is not None:
            callback(len(taus) - i, len(taus))


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # drawn on the CPU so that a seed gives the same images on any device
    return torch.randn(x.shape, generator=generator).to(x)


def _predict_x0(x, eps, a_t, clip: bool):
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # DDPM eq. 15
    return x0.clamp(-1, 1) if clip else x0


@torch.no_grad()
def ddpm_sample(
    eps_fn, schedule, x, taus, generator=None, progress=True, clip_x0=True, callback=None
):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) from x_T = ``x``.

    With fewer steps than T each jump's β is recomputed from ᾱ (β_i = 1 − ᾱ_τi / ᾱ_τi−1); the step
    then samples the posterior q(x_prev | x_t, x̂_0) (eqs. 6–7)."""
    for i, t, a_t, a_prev in _walk(schedule, x, taus, progress, callback):
        x0 = _predict_x0(x, eps_fn(x, t).to(x.dtype), a_t, clip_x0)
        beta = 1 - a_t / a_prev
        x = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a_t)
        if i > 0:
            x = x + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * _noise(x, generator)
    return x


@torch.no_grad()
def ddim_sample(
    eps_fn, schedule, x, taus, generator=None, progress=True, clip_x0=True, callback=None, eta=0.0
):
    """DDIM (Song et al. 2021, eq. 12): x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z, with
    σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev). η = 0 is deterministic; η = 1 is DDPM."""
    for i, t, a_t, a_prev in _walk(schedule, x, taus, progress, callback):
        eps = eps_fn(x, t).to(x.dtype)
        x0 = _predict_x0(x, eps, a_t, clip_x0)
        if clip_x0:  # keep ε consistent with the clipped x̂_0
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if i > 0 and eta > 0:
            x = x + sigma * _noise(x, generator)
    return x


@torch.no_grad()
def dpmpp_2m_sample(
    eps_fn, schedule, x, taus, generator=None, progress=True, clip_x0=True, callback=None,
    piece=None,
):  # fmt: skip
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a deterministic second-order multistep
    solver of the probability-flow ODE in x̂_0 form, first order on the first and last steps.
    With λ = log(α/σ), α = √ᾱ, σ = √(1 − ᾱ) and h = λ_prev − λ_t:
    x_prev = (σ_prev/σ_t) x_t − α_prev (e^(−h) − 1) D, D = (1 + 1/2r) x̂_0 − (1/2r) x̂_0,last.
    Deterministic: ``generator`` is accepted for a uniform signature and not used.

    ``piece(t)``, when given, names the piece of a piecewise noise predictor that timestep t
    lies in (guidance in an interval: guided or not). The multistep D extrapolates from the last
    x̂_0, so across a change of piece it would extrapolate the jump between the two predictors
    (half of it again, for equal steps): the step after a change is first order instead."""
    return _dpmpp_2m(eps_fn, schedule, x, taus, None, progress, clip_x0, callback, piece=piece)


@torch.no_grad()
def dpmpp_2m_sde_sample(
    eps_fn, schedule, x, taus, generator=None, progress=True, clip_x0=True, callback=None,
    piece=None, eta=1.0,
):  # fmt: skip
    """DPM-Solver++(2M) SDE (Lu et al. 2022, §5; diffusers' ``sde-dpmsolver++``, midpoint) with
    a noise level η (k-diffusion's ``sample_dpmpp_2m_sde``): the same multistep D as
    :func:`dpmpp_2m_sample`, with φ = 1 − e^(−(1+η)h),
    x_prev = (σ_prev/σ_t) e^(−ηh) x_t + α_prev φ D + σ_prev √(1 − e^(−2ηh)) z.
    η = 1 solves the reverse SDE (its first-order step is exactly DDPM's ancestral step on the
    same grid); η = 0 is the ODE, :func:`dpmpp_2m_sample`; η > 1 adds more noise each step and
    pulls each step harder to its x̂_0 (Karras et al. 2022's churn; SA-Solver's τ², Xue et al.
    2023). The fresh noise is what keeps the network's errors at high noise from reaching the
    image (bench/RESULTS.md, the sampler diagnosis); at 25 steps η = 1.5 draws like DDPM at 100
    where η = 1 falls behind (bench/RESULTS.md, where the steps matter). ``piece``: as for
    :func:`dpmpp_2m_sample`."""
    return _dpmpp_2m(
        eps_fn, schedule, x, taus, generator, progress, clip_x0, callback, eta=eta, piece=piece
    )


def _dpmpp_2m(
    eps_fn, schedule, x, taus, generator, progress, clip_x0, callback, eta=0.0, piece=None
):
    x0_last, h_last, piece_last = None, None, None
    for i, t, a_t, a_prev in _walk(schedule, x, taus, progress, callback):
        x0 = _predict_x0(x, eps_fn(x, t).to(x.dtype), a_t, clip_x0)
        if piece is not None:  # a new piece of the predictor: no history from the last one
            piece_now = piece(int(taus[i]))
            x0_last = x0_last if piece_now == piece_last else None
            piece_last = piece_now
        if i == 0:  # the last jump lands on ᾱ = 1 (σ = 0): the clean image is x̂_0 itself
            x = x0
            continue
        lam_t = 0.5 * (a_t.log() - (1 - a_t).log())
        lam_prev = 0.5 * (a_prev.log() - (1 - a_prev).log())
        h = lam_prev - lam_t
        d = x0
        # first order into the grid's last timestep as well: second order there is unstable when
        # that timestep is t = 0 (a long jump in λ; the Gaussian test's spread is 25 % off)
        if x0_last is not None and i > 1:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
        sigma_ratio = ((1 - a_prev) / (1 - a_t)).sqrt()
        x = sigma_ratio * (-eta * h).exp() * x - a_prev.sqrt() * torch.expm1(-(1 + eta) * h) * d
        if eta > 0:
            x = x + (1 - a_prev).sqrt() * (-torch.expm1(-2 * eta * h)).sqrt() * _noise(x, generator)
        x0_last, h_last = x0, h
    return x


SAMPLERS = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
    "dpmpp_2m_sde": dpmpp_2m_sde_sample,
}


@dataclass(frozen=True)
class SamplerDefaults:
    """What a sampler draws with where the options leave it open: its timestep grid, its noise
    level η (None: it has none) and the largest η it takes."""

    spacing: str = "linspace"
    eta: float | None = None
    max_eta: float | None = None


# DDIM's η is deterministic by default; DPM-Solver++(2M) SDE's grid and η are those that draw
# at 25 steps as DDPM does at 100 on both bundled datasets (bench/RESULTS.md, where the steps
# matter)
DEFAULTS = {
    "ddpm": SamplerDefaults(),
    "ddim": SamplerDefaults(eta=0.0, max_eta=1.0),
    "dpmpp_2m": SamplerDefaults(),
    "dpmpp_2m_sde": SamplerDefaults("high_noise", eta=1.5, max_eta=3.0),
}


def noise_level(name: str, eta: float | None) -> float | None:
    """The η sampler ``name`` draws with: ``eta``, or its default where None; None for a
    sampler without one."""
    default = DEFAULTS[name].eta
    return None if default is None else default if eta is None else float(eta)


def grid_of(name: str, spacing: str | None) -> str:
    """The timestep spacing sampler ``name`` walks: ``spacing``, or its default where None."""
    return DEFAULTS[name].spacing if spacing is None else spacing


def run_sampler(
    name: str,
    eps_fn: NoisePredictor,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    progress: bool = True,
    clip_x0: bool = True,
    spacing: str | None = None,
    callback: StepCallback | None = None,
    piece: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Runs the sampler called ``name`` (ddpm | ddim | dpmpp_2m | dpmpp_2m_sde) from the noise
    ``x`` over ``steps`` timesteps (all T by default) spaced by ``spacing``; ``eta``: the noise
    level of DDIM and DPM-Solver++(2M) SDE (the others have none); None: the sampler's default
    (:data:`DEFAULTS`). ``clip_x0`` clamps each x̂_0 to the image range [−1, 1]. ``callback(done,
    total)`` runs after every step (as diffusers' ``callback_on_step_end``): to report
    progress, or to stop the sampling by raising. ``piece(t)``: which piece of a piecewise
    ``eps_fn`` timestep t is in, for the multistep samplers (see :func:`dpmpp_2m_sample`)."""
    if name not in SAMPLERS:
        raise UserError(f"Unknown sampler={name!r}; choose one of {', '.join(SAMPLERS)}.")
    taus = spaced_timesteps(schedule.timesteps, steps or schedule.timesteps, grid_of(name, spacing))
    eta = noise_level(name, eta)
    if name == "ddim":
        return ddim_sample(eps_fn, schedule, x, taus, generator, progress, clip_x0, callback, eta)
    if name == "dpmpp_2m_sde":
        return dpmpp_2m_sde_sample(
            eps_fn, schedule, x, taus, generator, progress, clip_x0, callback, piece, eta
        )
    if name == "dpmpp_2m":
        return dpmpp_2m_sample(
            eps_fn, schedule, x, taus, generator, progress, clip_x0, callback, piece
        )
    return SAMPLERS[name](eps_fn, schedule, x, taus, generator, progress, clip_x0, callback)
