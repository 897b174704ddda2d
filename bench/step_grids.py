"""Where a 25-step sampler needs its steps (issue 27): side by side on one checkpoint at its own
guidance, the same starting noise in every row of a seed. DDPM with the density of 100 steps
on one part of the way from noise (0) to image (1) and of 25 elsewhere; DPM-Solver++(2M) SDE
at 25 steps on each timestep grid; with more noise per step than the reverse SDE's (η > 1, as
Karras et al. 2022's churn); with a second-order corrector (SA-Solver's, Xue et al. 2023, with
the exact exponential integral: the same step again with x̂_0 at both of its ends, no extra
network pass). The reference rows (DDPM 100, and 25 DPM-Solver++(2M) SDE steps on linspace
and on the high_noise grid, at η = 1 and 1.5) are drawn with every seed, then averaged over
the seeds; the others with the first seed (none with ``--reference-only``).

    python bench/step_grids.py [ckpt_path] [--images-per-class 100] [--seeds 0,1]
                               [--reference-only] [overrides ...] [--smoke]

The grids and variants beyond diffusion_lit.diffusion.samplers are written here, for the
diagnosis; the measures are the evaluation's (accuracy, FID ÷ real-vs-real, diversity in the
judge's texture + shape features and in its penultimate layer, precision, recall).
"""

import sys
import time
from pathlib import Path

import torch
from common import OUT, SMOKE, config, option, record
from sampling import newest_checkpoint

from diffusion_lit.diffusion import samplers
from diffusion_lit.diffusion.samplers import spaced_timesteps
from diffusion_lit.evaluate import model_data_judge
from diffusion_lit.evaluation.metrics import evaluate_samples, real_sets

OPTIONS = ("--images-per-class", "--seeds")
FLAGS = ("--smoke", "--reference-only")
ARGS = [a for i, a in enumerate(sys.argv[1:], 1) if a not in FLAGS and a not in OPTIONS
        and sys.argv[i - 1] not in OPTIONS]  # fmt: skip
MEASURES = ("conditional_accuracy", "fid_ratio", "diversity", "penultimate_diversity",
            "precision", "recall")  # fmt: skip
COARSE, FINE = (4, 8) if SMOKE else (25, 100)
PARTS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.7), (0.7, 1.0)]  # of the way from noise to image


def dense_on(T: int, start: float, stop: float) -> torch.Tensor:
    """The COARSE-step linspace grid with the FINE-step grid's timesteps on [start, stop) of
    the way from noise (0) to image (1) instead of its own."""

    def inside(t: torch.Tensor) -> torch.Tensor:
        done = 1 - t / (T - 1)
        return (done >= start) & ((done < stop) if stop < 1 else (done <= stop))

    coarse, fine = spaced_timesteps(T, COARSE), spaced_timesteps(T, FINE)
    return torch.cat([coarse[~inside(coarse)], fine[inside(fine)]]).unique()


def alpha_uniform(schedule, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced in the signal scale α = √ᾱ, from 1 down to its value at T − 1."""
    alpha = schedule.alphas_cumprod.sqrt()
    targets = torch.linspace(alpha[0].item(), alpha[-1].item(), steps)
    return torch.stack([(alpha - a).abs().argmin() for a in targets]).unique()


class WithCorrector(samplers.DPMSolver2MSDE):
    """DPM-Solver++(2M) SDE (midpoint) at noise level η, as the package's, with a second-order
    corrector: each step is taken again, from where it started, with x̂_0 at both of its ends
    (no extra network pass). Its state: the last step's start and draw, and the multistep
    history; the walk drops it across a change of guidance, as the package's."""

    def step(self, x, eps, jump, state, generator):
        eta, a_t, a_prev = self.eta, jump.a_t, jump.a_prev
        x0 = self.x0(x, eps, a_t)
        last, x0_last, lam_last = state or (None, None, None)
        if last is not None:  # the last step again, x̂_0 at both its ends
            x_s, x0_s, h_s, a_s, z = last
            u = (1 + eta) * h_s
            d = -torch.expm1(-u) * x0_s + (1 + torch.expm1(-u) / u) * (x0 - x0_s)
            x = _step(x_s, a_s, a_t, h_s, eta, d, z)
        if not jump.left:
            return x0, None
        lam = samplers._lam(a_t)
        h = samplers._lam(a_prev) - lam
        phi = -torch.expm1(-(1 + eta) * h)
        d = phi * x0
        if x0_last is not None and jump.left > 1:
            d = d + 0.5 * phi * (x0 - x0_last) * h / (lam - lam_last)
        z = samplers._noise(x, generator)
        return _step(x, a_t, a_prev, h, eta, d, z), ((x, x0, h, a_t, z), x0, lam)


def _step(x, a_t, a_prev, h, eta, d, z):
    """x_prev = (σ_prev/σ_t) e^(−ηh) x_t + α_prev d + σ_prev √(1 − e^(−2ηh)) z."""
    ratio = ((1 - a_prev) / (1 - a_t)).sqrt()
    noise = (1 - a_prev).sqrt() * (-torch.expm1(-2 * eta * h)).sqrt()
    return ratio * (-eta * h).exp() * x + a_prev.sqrt() * d + noise * z


def walk(sampler: samplers.Sampler):
    """A sampler's walk, called as the rows call it."""

    def sample(eps_fn, schedule, x, taus, generator, piece):
        return samplers.denoise(sampler, eps_fn, schedule, x, taus, generator, False, piece=piece)

    return sample


def package(name: str, eta: float | None = None):
    """One of the package's samplers (η: its noise level; None: its default)."""
    return walk(samplers.sampler_named(name, eta=eta))


def with_corrector(eta: float = 1.0):
    return walk(WithCorrector(eta))


def main() -> None:
    ckpt = Path(ARGS[0]) if ARGS and "=" not in ARGS[0] else newest_checkpoint()
    n = int(option("--images-per-class", "2" if SMOKE else "100"))
    seeds = [int(s) for s in option("--seeds", "0" if SMOKE else "0,1").split(",")]
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    cfg = config([f"ckpt_path={ckpt}", "data.num_workers=0", *judge_dir,
                  *[a for a in ARGS if "=" in a]], name="evaluate")  # fmt: skip
    pipe, datamodule, judge, _, _ = model_data_judge(cfg)
    model, classes = pipe.model, datamodule.class_names
    model.net.eval()  # as generate() samples: no conditional dropout
    text = model.prompts.stored(model.prompts.default_prompts)
    text = text.map(lambda z: z.repeat_interleave(n, dim=0))
    labels = torch.arange(len(classes)).repeat_interleave(n)
    heldout, reference = real_sets(datamodule, len(labels))
    T, own, schedule = model.schedule.timesteps, pipe.spec.guidance, model.schedule
    bf16 = torch.autocast("cpu", torch.bfloat16)  # as the CLIs sample on a CPU with bf16

    def eps_fn(x, t, prompts):
        with bf16:
            return own.noise(model.predict, schedule, x, t, prompts)

    def piece(t: int) -> bool:
        return own.guides(t, T)

    def grid(steps, spacing="linspace"):
        return spaced_timesteps(T, steps, spacing)

    sde, sde15 = package("dpmpp_2m_sde", 1.0), package("dpmpp_2m_sde", 1.5)  # η = 1: diffusers'
    reference_rows = [
        (f"DDPM {FINE}", package("ddpm"), grid(FINE)),
        (f"dpmpp_2m_sde {COARSE} η = 1", sde, grid(COARSE)),
        (f"dpmpp_2m_sde {COARSE} η = 1.5", sde15, grid(COARSE)),
        (f"dpmpp_2m_sde {COARSE} η = 1, high_noise", sde, grid(COARSE, "high_noise")),
        (f"dpmpp_2m_sde {COARSE} η = 1.5, high_noise", sde15, grid(COARSE, "high_noise")),
    ]
    dense = [(a, b, f"{FINE}-step density on [{a:g}, {b:g}) of the way") for a, b in PARTS]
    rows = [
        (f"DDPM {COARSE}", package("ddpm"), grid(COARSE)),
        *[(f"DDPM, {what}, {COARSE} elsewhere", package("ddpm"), dense_on(T, a, b))
          for a, b, what in dense + [(0.0, 0.4, f"{FINE}-step density on [0, 0.4)")]],
        (f"dpmpp_2m_sde {COARSE} η = 1, quadratic", sde, grid(COARSE, "quadratic")),
        (f"dpmpp_2m_sde {COARSE} η = 1, high_noise with exponent 2", sde,
         samplers.high_noise_grid(T, COARSE, power=2).long()),
        (f"dpmpp_2m_sde {COARSE} η = 1, uniform in √ᾱ", sde, alpha_uniform(schedule, COARSE)),
        (f"dpmpp_2m_sde {COARSE} η = 1 + corrector", with_corrector(), grid(COARSE)),
        (f"dpmpp_2m_sde {COARSE} η = 1, high_noise + corrector", with_corrector(),
         grid(COARSE, "high_noise")),
    ]  # fmt: skip
    header = ["| seed | sampler, grid | steps | s | accuracy | FID ÷ real | diversity "
              "| penultimate diversity | precision | recall |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines = list(header)
    pooled = {name: [] for name, _, _ in reference_rows}
    diagnosis = [] if "--reference-only" in sys.argv else rows
    for k, seed in enumerate(seeds):
        noise = torch.randn((len(labels), *model.image_shape),
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
        for name, sample, taus in reference_rows + (diagnosis if k == 0 else []):
            generator = torch.Generator().manual_seed(seed + 1)
            start = time.perf_counter()
            images = []
            for i in range(0, len(labels), 250):  # the CLIs' batches, about
                part = slice(i, i + 250)
                prompts = text.map(lambda z, part=part: z[part])
                images.append(sample(lambda x, t, p=prompts: eps_fn(x, t, p), schedule,
                                     noise[part].clone(), taus, generator, piece))  # fmt: skip
            seconds = time.perf_counter() - start
            images = torch.cat(images).float().clamp(-1, 1)
            r = evaluate_samples(judge, images, labels, heldout, reference, classes)
            lines.append(
                f"| {seed} | {name} | {len(taus)} | {seconds:.0f} "
                f"| {r['conditional_accuracy']:.1%} | {r['fid_ratio']:.2f} "
                f"| {r['diversity']:.2f} | {r['penultimate_diversity']:.2f} "
                f"| {r['precision']:.2f} | {r['recall']:.2f} |"
            )
            print(lines[-1], flush=True)
            if name in pooled:
                pooled[name].append(r)
    lines += ["", "| sampler, grid (mean of the seeds) | " + " | ".join(
        ["accuracy", "FID ÷ real", "diversity", "penultimate diversity", "precision", "recall"]
    ) + " | accuracy − DDPM's | FID ÷ DDPM's | diversity − DDPM's |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    means = {name: {m: sum(r[m] for r in rs) / len(rs) for m in MEASURES}
             for name, rs in pooled.items()}  # fmt: skip
    ddpm = means[reference_rows[0][0]]
    for name, m in means.items():
        lines.append(
            f"| {name} | {m['conditional_accuracy']:.1%} | {m['fid_ratio']:.2f} "
            f"| {m['diversity']:.2f} | {m['penultimate_diversity']:.2f} | {m['precision']:.2f} "
            f"| {m['recall']:.2f} "
            f"| {100 * (m['conditional_accuracy'] - ddpm['conditional_accuracy']):+.1f} pt "
            f"| {m['fid_ratio'] / ddpm['fid_ratio']:.2f} "
            f"| {m['diversity'] - ddpm['diversity']:+.2f} |"
        )
    print("\n".join(lines[-len(means) - 2 :]), flush=True)
    record(
        f"Where the steps matter: 25-step samplers against DDPM 100 ({n} images per class, "
        f"{own}, seeds {', '.join(map(str, seeds))})",
        "\n".join(lines),
        notes=f"Checkpoint: `{ckpt}`. Steps: the timesteps the grid visits; s: seconds to draw "
        "them (bf16 autocast, batches of 250). FID ÷ real-vs-real of as many training images "
        "(the ratio grows with the number of images).",
    )


if __name__ == "__main__":
    main()
