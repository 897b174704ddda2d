"""Reverse-process samplers and the one walk that drives them. Each sampler needs only
ε̂(x_t, t) and the schedule's ᾱ_t; :func:`denoise` walks a grid of training timesteps
(:func:`spaced_timesteps`) from the noisiest down to the clean image, from pure noise, from an
image noised part of the way (image-to-image), or keeping known pixels (inpainting)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from tqdm.auto import tqdm

from diffusion_lit.diffusion.schedule import NoiseSchedule, noise_from_start, start_from_noise
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


class Jump(NamedTuple):
    """One step of a walk: from timestep ``t`` (ᾱ_t = ``a_t``) to the grid's next one (ᾱ =
    ``a_prev``; 1 after the last step), with ``left`` steps after it."""

    t: torch.Tensor  # (B,) the timestep, for the network
    a_t: torch.Tensor
    a_prev: torch.Tensor
    left: int


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # drawn on the CPU so that a seed gives the same images on any device
    return torch.randn(x.shape, generator=generator).to(x)


@dataclass(frozen=True)
class Sampler:
    """A reverse-process step in the shape of diffusers' schedulers: :meth:`timesteps` gives
    the grid it walks and :meth:`step` one jump down it, from ε̂(x_t, t) and ᾱ alone; the walk
    itself is :func:`denoise`. An instance holds its settings resolved: ``eta`` and
    ``spacing`` left None are the sampler's defaults (its class's ``default_eta``,
    ``default_spacing``); ``clip_x0`` clamps each x̂_0 to the image range [−1, 1]."""

    eta: float | None = None
    spacing: str | None = None
    clip_x0: bool = True

    default_spacing: ClassVar[str] = "linspace"
    default_eta: ClassVar[float | None] = None  # None: the sampler has no noise level
    max_eta: ClassVar[float | None] = None

    def __post_init__(self):
        eta = None if self.default_eta is None else self.eta
        object.__setattr__(self, "eta", self.default_eta if eta is None else float(eta))
        object.__setattr__(self, "spacing", self.spacing or self.default_spacing)

    def timesteps(self, timesteps: int, steps: int | None = None, strength: float = 1.0):
        """The training timesteps it visits, ascending: ``steps`` of the ``timesteps`` (all by
        default) spaced by its grid (:func:`spaced_timesteps`), and of those, for an
        image-to-image ``strength`` below 1, only the ones at or below strength · (T − 1)
        (SDEdit, Meng et al. 2022: the walk starts from the image noised to the highest of
        them; at least the grid's lowest is kept)."""
        taus = spaced_timesteps(timesteps, steps or timesteps, self.spacing)
        if strength < 1:
            kept = taus[taus <= strength * (timesteps - 1)]
            taus = kept if len(kept) else taus[:1]
        return taus

    def x0(self, x: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        x0 = start_from_noise(x, eps, a_t.sqrt(), (1 - a_t).sqrt())
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def step(self, x, eps, jump: Jump, state, generator):
        """x at the next timestep of the grid, and the state the next step needs (None for a
        single-step sampler)."""
        raise NotImplementedError


class DDPM(Sampler):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2). With fewer steps than T each
    jump's β is recomputed from ᾱ (β_i = 1 − ᾱ_τi / ᾱ_τi−1); the step then samples the
    posterior q(x_prev | x_t, x̂_0) (eqs. 6–7)."""

    def step(self, x, eps, jump, state, generator):
        a_t, a_prev = jump.a_t, jump.a_prev
        x0 = self.x0(x, eps, a_t)
        beta = 1 - a_t / a_prev
        x = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a_t)
        if jump.left:
            x = x + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * _noise(x, generator)
        return x, None


class DDIM(Sampler):
    """DDIM (Song et al. 2021, eq. 12): x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z,
    with σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev). η = 0, its default, is
    deterministic; η = 1 is DDPM."""

    default_eta, max_eta = 0.0, 1.0

    def step(self, x, eps, jump, state, generator):
        a_t, a_prev = jump.a_t, jump.a_prev
        x0 = self.x0(x, eps, a_t)
        if self.clip_x0:  # keep ε consistent with the clipped x̂_0
            eps = noise_from_start(x, x0, a_t.sqrt(), (1 - a_t).sqrt())
        sigma = self.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if jump.left and self.eta > 0:
            x = x + sigma * _noise(x, generator)
        return x, None


class DPMSolver2M(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a deterministic second-order multistep
    solver of the probability-flow ODE in x̂_0 form, first order on the first and last steps.
    With λ = log(α/σ), α = √ᾱ, σ = √(1 − ᾱ) and h = λ_prev − λ_t:
    x_prev = (σ_prev/σ_t) x_t − α_prev (e^(−h) − 1) D, D = (1 + 1/2r) x̂_0 − (1/2r) x̂_0,last.
    Its state is (x̂_0, h) of the last step; the walk drops it where the noise predictor
    changes (guidance switching on or off at an interval's edge), since D would extrapolate
    the jump between the two predictors, so the step after a change is first order."""

    def step(self, x, eps, jump, state, generator):
        a_t, a_prev, eta = jump.a_t, jump.a_prev, self.eta or 0.0
        x0 = self.x0(x, eps, a_t)
        if not jump.left:  # the last jump lands on ᾱ = 1 (σ = 0): the clean image is x̂_0
            return x0, None
        h = _lam(a_prev) - _lam(a_t)
        d = x0
        # first order into the grid's last timestep as well: second order there is unstable when
        # that timestep is t = 0 (a long jump in λ; the Gaussian test's spread is 25 % off)
        if state is not None and jump.left > 1:
            x0_last, h_last = state
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
        sigma_ratio = ((1 - a_prev) / (1 - a_t)).sqrt()
        x = sigma_ratio * (-eta * h).exp() * x - a_prev.sqrt() * torch.expm1(-(1 + eta) * h) * d
        if eta > 0:
            x = x + (1 - a_prev).sqrt() * (-torch.expm1(-2 * eta * h)).sqrt() * _noise(x, generator)
        return x, (x0, h)


class DPMSolver2MSDE(DPMSolver2M):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, §5; diffusers' ``sde-dpmsolver++``, midpoint) with
    a noise level η (k-diffusion's ``sample_dpmpp_2m_sde``): the same multistep D as
    :class:`DPMSolver2M`, with φ = 1 − e^(−(1+η)h),
    x_prev = (σ_prev/σ_t) e^(−ηh) x_t + α_prev φ D + σ_prev √(1 − e^(−2ηh)) z.
    η = 1 solves the reverse SDE (its first-order step is exactly DDPM's ancestral step on the
    same grid); η = 0 is the ODE; η > 1 adds more noise each step and pulls each step harder to
    its x̂_0 (Karras et al. 2022's churn; SA-Solver's τ², Xue et al. 2023). The fresh noise is
    what keeps the network's errors at high noise from reaching the image (bench/RESULTS.md,
    the sampler diagnosis). Its defaults, the high_noise grid and η = 1.5, draw at 25 steps as
    DDPM does at 100 on both bundled datasets (bench/RESULTS.md, where the steps matter)."""

    default_spacing, default_eta, max_eta = "high_noise", 1.5, 3.0


def _lam(a: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) = ½ (log ᾱ − log(1 − ᾱ))."""
    return 0.5 * (a.log() - (1 - a).log())


SAMPLERS: dict[str, type[Sampler]] = {
    "ddpm": DDPM,
    "ddim": DDIM,
    "dpmpp_2m": DPMSolver2M,
    "dpmpp_2m_sde": DPMSolver2MSDE,
}


def sampler_named(name: str, **settings) -> Sampler:
    """The sampler called ``name`` (ddpm | ddim | dpmpp_2m | dpmpp_2m_sde) with ``settings``
    (eta, spacing, clip_x0)."""
    if name not in SAMPLERS:
        raise UserError(f"Unknown sampler={name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name](**settings)


@dataclass(frozen=True)
class Known:
    """The pixels of an inpainting that are kept (RePaint, Lugmayr et al. 2022): ``image`` in
    [−1, 1] where ``mask`` is 0 (1: redraw), both broadcastable against the batch."""

    image: torch.Tensor
    mask: torch.Tensor

    def paste(self, x: torch.Tensor, a: torch.Tensor | None, generator) -> torch.Tensor:
        """x with the kept pixels replaced by the image noised to ᾱ = ``a`` (DDPM eq. 4, fresh
        noise); ``a`` None (the walk's end, ᾱ = 1): the image itself. Decided on the host from
        the walk's position, not by reading ᾱ back from the device every step."""
        image = (
            self.image
            if a is None
            else a.sqrt() * self.image + (1 - a).sqrt() * _noise(x, generator)
        )
        return torch.where(self.mask > 0.5, x, image.to(x))


@torch.no_grad()
def denoise(
    sampler: Sampler,
    eps_fn: NoisePredictor,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    taus: torch.Tensor,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
    piece: Callable[[int], object] | None = None,
    known: Known | None = None,
    resample_jumps: int = 0,
) -> torch.Tensor:
    """The walk: x, at the noisiest of ``taus`` (ascending, :meth:`Sampler.timesteps`), down
    the grid to the clean image, one ``sampler.step`` each. ``callback(done, total)`` runs
    after every step (as diffusers' ``callback_on_step_end``): to report progress, or to stop
    the sampling by raising. ``piece(t)``: which piece of a piecewise ``eps_fn`` timestep t is
    in (guidance in an interval); a multistep sampler keeps no history across pieces.
    ``known``: pixels to keep (inpainting), pasted in noised to each step's level; with
    ``resample_jumps`` r, each step is taken r times more, from x noised back up to its
    timestep (RePaint's resampling, with jumps of one step), so that the redrawn pixels agree
    with the kept ones."""
    alphas = schedule.alphas_cumprod.to(x.device)[taus.to(x.device)]
    state, piece_last = None, None
    if known is not None:
        x = known.paste(x, alphas[-1], generator)
    for i in tqdm(range(len(taus) - 1, -1, -1), desc="sampling", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), int(taus[i]), device=x.device, dtype=torch.long)
        jump = Jump(t, alphas[i], alphas[i - 1] if i > 0 else alphas.new_tensor(1.0), i)
        if piece is not None:  # a new piece of the predictor: no history from the last one
            piece_now = piece(int(taus[i]))
            state = state if piece_now == piece_last else None
            piece_last = piece_now
        x_t, state_t = x, state
        for repeat in range(resample_jumps + 1 if known is not None and i > 0 else 1):
            if repeat:  # back up to t: q(x_t | x_prev), fresh noise
                ratio = jump.a_t / jump.a_prev
                x_t = ratio.sqrt() * x + (1 - ratio).sqrt() * _noise(x, generator)
            x, state = sampler.step(x_t, eps_fn(x_t, t).to(x_t.dtype), jump, state_t, generator)
            if known is not None:
                x = known.paste(x, jump.a_prev if jump.left else None, generator)
        if callback is not None:
            callback(len(taus) - i, len(taus))
    return x
