"""The sampling options: one owner for what the sample and evaluate CLIs, the web page, the
training's sample grids and the Python API share, and for their defaults."""

import dataclasses
from dataclasses import dataclass

from diffusion_lit import checks
from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.diffusion.precision import SAMPLING_PRECISIONS
from diffusion_lit.diffusion.samplers import SAMPLERS, SPACINGS, Sampler
from diffusion_lit.errors import BadValue

# image-to-image's strength where none is given: the one bench/edit.py measured to follow an
# attribute word while the picture keeps its class (bench/RESULTS.md, editing)
STRENGTH = 0.75


@dataclass(frozen=True)
class SamplingOptions:
    """How images are drawn. Hydra's config group ``sampling`` is these fields with these
    defaults (the commands put it at their top level: ``sampler=ddim steps=50``). The defaults
    are what bench/sampling.py measured best on this project's models (bench/RESULTS.md):
    DPM-Solver++(2M) SDE at 25 steps (η = 1.5) draws as well as DDPM at 100, which draws as
    well as DDPM at 1000, at a quarter of DDPM 100's network passes. Each value is checked here,
    so a bad one is refused before any work, by whichever way it came in."""

    sampler: str = "dpmpp_2m_sde"  # ddpm | ddim | dpmpp_2m | dpmpp_2m_sde
    steps: int | None = 25  # timesteps visited (of T, checked once T is known); None: all T
    # linspace | leading | trailing (for 1–4 steps) | quadratic | high_noise; None: the
    # sampler's default (high_noise for dpmpp_2m_sde, linspace for the others)
    timestep_spacing: str | None = None
    # the noise each step adds, for ddim (0: deterministic, its default; 1: DDPM's) and
    # dpmpp_2m_sde (0: the ODE; 1: the reverse SDE; 1.5, its default: more, up to 3); None:
    # the sampler's default; the other samplers have none
    eta: float | None = None
    # None: the model's own (what its training config or export chose; see Guidance)
    guidance_scale: float | None = None  # 0: unconditional, 1: conditional, > 1: guided
    guidance_interval: tuple[float, float] | None = None  # [start, stop], noise (0) to image (1)
    # the scale of what a prompt says beyond its class ("thick", "slanted right"): equal to
    # guidance_scale, plain guidance; None: the model's own
    attribute_scale: float | None = None
    # auto: the network's passes in bfloat16 autocast where the device computes bf16 natively
    # (the sampler's arithmetic stays fp32), else 32-bit; or 32 | bf16-mixed
    precision: str = "auto"
    # a prompt never trained on: true, drawn as its nearest training caption; false, from its
    # own text embedding; None: the model's own choice (bench/RESULTS.md measures both)
    nearest_prompt: bool | None = None
    # image-to-image: how far the given image is noised before it is denoised with the prompt,
    # (0, 1]: 1 is drawing from noise, small keeps the picture; None: STRENGTH (an inpainting
    # mask: 1). Only with an init image
    strength: float | None = None
    # inpainting: each step taken this many times more, from its result noised back up
    # (RePaint's resampling), so the redrawn part agrees with the kept one; costs as many
    # network passes more
    resample_jumps: int = 0
    seed: int = 0  # the same seed, options and batch_size give the same images
    batch_size: int = 256  # images denoised at once

    def __post_init__(self):
        checked = {
            "sampler": checks.one_of("sampler", self.sampler, list(SAMPLERS)),
            "steps": checks.integer("steps", self.steps, 1, 100_000, optional=True),
            "timestep_spacing": None
            if self.timestep_spacing is None
            else checks.one_of("timestep_spacing", self.timestep_spacing, SPACINGS),
            # a sampler without η ignores it (a sweep over samplers may set one for all)
            "eta": checks.real(
                "eta", self.eta, 0, SAMPLERS[self.sampler].max_eta or 3.0, optional=True
            ),
            "guidance_scale": checks.real(
                "guidance_scale", self.guidance_scale, 0, 100, optional=True
            ),
            "guidance_interval": checks.interval(
                "guidance_interval", self.guidance_interval, optional=True
            ),
            "attribute_scale": checks.real(
                "attribute_scale", self.attribute_scale, 0, 100, optional=True
            ),
            "precision": _precision(self.precision),
            "nearest_prompt": None
            if self.nearest_prompt is None
            else checks.flag("nearest_prompt", self.nearest_prompt),
            "strength": checks.real("strength", self.strength, 0, 1, above=True, optional=True),
            "resample_jumps": checks.integer("resample_jumps", self.resample_jumps, 0, 20),
            "seed": checks.integer("seed", self.seed, 0, checks.MAX_SEED),
            "batch_size": checks.integer("batch_size", self.batch_size, 1, 1_000_000),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_config(cls, node) -> "SamplingOptions":
        """The options a config node (a command's, a callback's) sets; the others default."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: node[name] for name in names if name in node})

    def guidance(self, own: Guidance) -> Guidance:
        """The guidance to sample with: the given scales and interval, the model's ``own``
        where they are None."""
        return own.over_config(self)

    @property
    def chosen_sampler(self) -> Sampler:
        """The sampler it names, with its η and grid (the sampler's defaults where None)."""
        return SAMPLERS[self.sampler](self.eta, self.timestep_spacing)

    @property
    def spacing(self) -> str:
        """The timestep spacing the sampler walks (its default where ``timestep_spacing`` is
        None)."""
        return self.chosen_sampler.spacing

    @property
    def noise_level(self) -> float | None:
        """The η the sampler draws with (its default where ``eta`` is None); None for a
        sampler without one."""
        return self.chosen_sampler.eta

    def start_strength(self, inpainting: bool) -> float:
        """How far an init image is noised: ``strength``, or where None, 1 for an inpainting
        (RePaint starts from noise) and :data:`STRENGTH` for image-to-image."""
        if self.strength is not None:
            return self.strength
        return 1.0 if inpainting else STRENGTH

    def replace(self, **changes) -> "SamplingOptions":
        return dataclasses.replace(self, **changes)


def _precision(x) -> str:
    """auto, 32 or bf16-mixed; on the command line, 32 arrives as a number."""
    if str(x) not in SAMPLING_PRECISIONS or isinstance(x, bool | float):
        raise BadValue("precision", x, f"one of {', '.join(SAMPLING_PRECISIONS)}")
    return str(x)


def config_group() -> dict:
    """The defaults as a plain config node (Hydra's ``sampling`` group)."""
    return dataclasses.asdict(SamplingOptions())
