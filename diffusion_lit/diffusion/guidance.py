"""Classifier-free guidance (Ho & Salimans 2022) in an interval of the denoising (Kynkäänniemi
et al. 2024), with a scale of its own for what a prompt says beyond its class (the nested
guidance of InstructPix2Pix, Brooks et al. 2023), and the guidance a model samples with unless
told otherwise."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffusion_lit import checks
from diffusion_lit.diffusion.schedule import NoiseSchedule


@dataclass(frozen=True)
class Guidance:
    """ε = ε_uncond + w · (ε_cond − ε_uncond) with w = ``scale`` (0: unconditional, 1: plain
    conditional), applied only within ``interval`` = (start, stop) of the way from noise (0) to
    image (1), the conditional prediction alone elsewhere (the start and stop of diffusers'
    guiders). With a ``base`` prompt for each prompt — what it says of its class alone ("a
    seven" for "a thick seven, slanted right"; a prompt of its class alone is its own base) —
    and an ``attribute_scale`` w_a, a prompt that says more than its class is guided as
    ε = ε_uncond + w_c · (ε_base − ε_uncond) + w_a · (ε_cond − ε_base) with w_c = max(w, w_a)
    (InstructPix2Pix's nested form; with the class guided more weakly than the words beyond
    it, the words won and the class was lost), and a prompt of its class alone at w: the words
    beyond the class have a scale of their own, at one network pass more; w_a = w (or None) is
    plain guidance. A model records its own (a guidance sweep chooses it); these
    defaults are for a model that records none."""

    scale: float = 1.5
    interval: tuple[float, float] = (0.0, 1.0)
    attribute_scale: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "scale", checks.real("guidance_scale", self.scale, 0, 100))
        object.__setattr__(self, "interval", checks.interval("guidance_interval", self.interval))
        attribute = checks.real("attribute_scale", self.attribute_scale, 0, 100, optional=True)
        object.__setattr__(self, "attribute_scale", attribute)

    @property
    def nested(self) -> bool:
        """Whether the words beyond the class have a scale of their own."""
        return self.attribute_scale is not None and self.attribute_scale != self.scale

    def over(self, scale=None, interval=None, attribute_scale=None) -> "Guidance":
        """This guidance with the values given in place of its own (None: its own)."""
        return Guidance(
            self.scale if scale is None else scale,
            self.interval if interval is None else interval,
            self.attribute_scale if attribute_scale is None else attribute_scale,
        )

    # its values by name, wherever they are given or recorded: the sampling options, a training
    # config's own_sampling, the export CLI, a model file's sampling, eval.json
    KEYS = ("guidance_scale", "guidance_interval", "attribute_scale")

    def over_config(self, given) -> "Guidance":
        """This guidance with the values ``given`` (a config node, a mapping or the sampling
        options) sets under :data:`KEYS` in place of its own; absent or None: its own."""
        get = given.get if hasattr(given, "get") else lambda key: getattr(given, key, None)
        return self.over(*(get(key) for key in self.KEYS))

    def to_dict(self) -> dict:
        """As a model file and eval.json record it."""
        values = (self.scale, list(self.interval), self.attribute_scale)
        # attribute_scale only when set: a model without one records what it always did
        return {key: v for key, v in zip(self.KEYS, values, strict=True) if v is not None}

    @classmethod
    def from_dict(cls, record: dict) -> "Guidance":
        """From what :meth:`to_dict` wrote (an eval.json written before intervals: the whole
        way)."""
        return cls().over_config(record)

    def __str__(self) -> str:
        """'guidance 3 on [0.4, 1]'; the interval only when it is not the whole way."""
        start, stop = self.interval
        interval = "" if (start, stop) == (0, 1) else f" on [{start:g}, {stop:g}]"
        attributes = (
            f", {self.attribute_scale:g} for the words beyond the class" if self.nested else ""
        )
        return f"guidance {self.scale:g}{interval}{attributes}"

    def guides(self, t: int, timesteps: int) -> bool:
        """Whether guidance applies at timestep ``t`` of ``timesteps``: within the interval."""
        done = 1 - t / (timesteps - 1)  # t = T − 1 is 0, t = 0 is 1
        return self.interval[0] <= done <= self.interval[1]

    def predictor(self, predict: Callable, schedule: NoiseSchedule, text, base=None) -> Callable:
        """The guided ε̂ as a function of (x_t, t) alone, what a sampler's walk calls."""
        return lambda x, t: self.noise(predict, schedule, x, t, text, base)

    def noise(
        self,
        predict: Callable,
        schedule: NoiseSchedule,
        x: torch.Tensor,
        t: torch.Tensor,
        text,
        base=None,
    ) -> torch.Tensor:
        """The guided ε̂ at (x_t, t) for the prompts ``text`` (a TextEmbedding; ``base``: their
        class-only prompts, for nested guidance, a row equal to its prompt's for a prompt of its
        class alone), from the network's output
        ``predict(x, t, text)``: the passes batched together, in fp32 from there on."""
        if self.interval != (0.0, 1.0):  # reads t on the host: no sync for the default
            if not self.guides(int(t[0].item()), schedule.timesteps):
                return schedule.predict_noise(x, t, predict(x, t, text).float())
        # ε, v and x_0 are affine in each other for a given x_t: guiding any of them is the same
        if base is None or not self.nested:
            out = predict(torch.cat([x, x]), torch.cat([t, t]), text.cat(text.null()))
            cond, uncond = out.float().chunk(2)
            return schedule.predict_noise(x, t, uncond + self.scale * (cond - uncond))
        passes = text.cat(base).cat(text.null())
        out = predict(torch.cat([x, x, x]), torch.cat([t, t, t]), passes)
        cond, classed, uncond = out.float().chunk(3)
        # a prompt that says more than its class (its base another prompt) has its class guided
        # as strongly as those words, at least: with w_a = 3 over w = 1.25, the words outweighed
        # the class and the judge missed the digit in 44 % of the quickstart's slant requests,
        # 1 % at 3 over 3 (bench/RESULTS.md, 2026-12-08)
        beyond = (text.pooled != base.pooled).flatten(1).any(1)
        class_scale = self.scale + max(self.attribute_scale - self.scale, 0) * beyond.float()
        class_scale = class_scale.view(-1, *[1] * (x.dim() - 1))
        guided = uncond + class_scale * (classed - uncond) + self.attribute_scale * (cond - classed)
        return schedule.predict_noise(x, t, guided)
