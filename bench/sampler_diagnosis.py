"""Why the deterministic samplers draw worse than DDPM on this project's models: one
measurement for each hypothesis, side by side in one run on one checkpoint, at the model's own
guidance, the same starting noise for every row.

    python bench/sampler_diagnosis.py [ckpt_path] [--steps 20] [--images-per-class 30]
                                      [overrides ...] [--smoke]

Every row is DDIM (Song et al. 2021) generalised as far as the hypotheses need: η per step
(η = 1 is DDPM's ancestral step exactly, 0 the probability-flow ODE), x̂_0 clipping on or off,
the timestep grid, where the grid starts, whether the last step returns the denoised x̂_0 or x
at the grid's last timestep, and the guidance scale. The measures: the judge's accuracy, FID
÷ real-vs-real, diversity (texture + shape and penultimate), precision, and the samples'
high-frequency energy (mean squared Laplacian) ÷ the held-out digits': noise left in the image.
The samplers themselves are diffusion_lit.diffusion.samplers; this loop is for the diagnosis.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import OUT, SMOKE, config, option, record
from sampling import newest_checkpoint

from diffusion_lit.diffusion.samplers import spaced_timesteps
from diffusion_lit.evaluate import model_data_judge
from diffusion_lit.evaluation.metrics import evaluate_samples, real_sets

OPTIONS = ("--steps", "--images-per-class")
ARGS = [a for i, a in enumerate(sys.argv[1:], 1) if a != "--smoke" and a not in OPTIONS
        and sys.argv[i - 1] not in OPTIONS]  # fmt: skip
LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])


def high_frequency(images: torch.Tensor) -> float:
    """Mean squared Laplacian of images in [−1, 1]: pixel-level noise and speckle."""
    kernel = LAPLACIAN.expand(images.shape[1], 1, 3, 3)
    return F.conv2d(images, kernel, groups=images.shape[1]).pow(2).mean().item()


@torch.no_grad()
def sample(model, text, guidance, x, taus, eta, clip=True, denoise_last=True, generator=None):
    """DDIM from ``x`` over ``taus`` with ``eta(i)`` at each step (i counts down to 0); with
    ``denoise_last`` the last step lands on ᾱ = 1 (x̂_0), else the walk stops at x_τ0."""
    alphas = model.schedule.alphas_cumprod[taus]
    for i in range(len(taus) - 1, -1, -1):
        t = torch.full((len(x),), int(taus[i]), dtype=torch.long)
        a_t = alphas[i]
        if i == 0 and not denoise_last:
            return x
        a_prev = alphas[i - 1] if i > 0 else a_t.new_tensor(1.0)
        eps = guidance.noise(model.predict, model.schedule, x, t, text)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        sigma = eta(i) * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if i > 0 and sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator)
    return x


@torch.no_grad()
def x0_by_noise_level(model, guidance, text, heldout, real_hf, levels) -> list[str]:
    """Table rows: at each t, the guided x̂_0 (clipped, as the samplers use it) of held-out
    digits noised to t: its RMSE to the digit and its high-frequency energy ÷ the digits'. An
    ideal x̂_0 at high noise is the blurred mean of the digits it could be (high frequency ≪ 1);
    more is speckle the network adds, which an ODE carries to the image."""
    images, labels = heldout
    text = text.map(lambda z: z[labels])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    rows = []
    for t_value in levels:
        t = torch.full((len(images),), t_value, dtype=torch.long)
        x_t = model.schedule.add_noise(images, noise, t)
        a_t = model.schedule.alphas_cumprod[t_value]
        eps = guidance.noise(model.predict, model.schedule, x_t, t, text)
        x0 = ((x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        rmse = (x0 - images).pow(2).mean().sqrt().item()
        eps_error = ((eps - noise).pow(2).sum() / noise.pow(2).sum()).item()
        rows.append(
            f"| {t_value} | {a_t.item():.2e} | {eps_error:.4f} | {rmse:.3f} "
            f"| {high_frequency(x0) / real_hf:.2f} |"
        )
    return rows


def main() -> None:
    ckpt = Path(ARGS[0]) if ARGS and "=" not in ARGS[0] else newest_checkpoint()
    steps = int(option("--steps", "4" if SMOKE else "20"))
    n = int(option("--images-per-class", "2" if SMOKE else "30"))
    judge_dir = [f"classifier.dir={OUT / 'classifiers'}"] if SMOKE else []  # else the usual cache
    cfg = config([f"ckpt_path={ckpt}", "data.num_workers=0", *judge_dir,
                  *[a for a in ARGS if "=" in a]], name="evaluate")  # fmt: skip
    pipe, datamodule, judge, _, _ = model_data_judge(cfg)
    model, classes = pipe.model, datamodule.class_names
    model.net.eval()
    text_of_classes = model.prompts.stored(model.prompts.default_prompts)
    text = text_of_classes.map(lambda z: z.repeat_interleave(n, dim=0))
    labels = torch.arange(len(classes)).repeat_interleave(n)
    heldout, reference = real_sets(datamodule, len(labels))
    real_hf = high_frequency(heldout[0])
    start = torch.Generator().manual_seed(0)
    noise = torch.randn((len(labels), *model.image_shape), generator=start)
    T, own = model.schedule.timesteps, pipe.spec.guidance
    grid = spaced_timesteps(T, steps)
    ddpm, ode = (lambda i: 1.0), (lambda i: 0.0)
    half = steps // 2  # i counts down: i ≥ half is the noisier half of the walk

    rows = [
        ("DDPM 100 (the default)", dict(taus=spaced_timesteps(T, min(100, T)), eta=ddpm)),
        (f"DDPM {steps}", dict(taus=grid, eta=ddpm)),
        (f"DDIM {steps} η=0 (ODE)", dict(taus=grid, eta=ode)),
        ("H1 ε errors at low noise: DDPM on the noisier half, ODE after",
         dict(taus=grid, eta=lambda i: float(i >= half))),
        ("H1: ODE on the noisier half, DDPM after", dict(taus=grid, eta=lambda i: float(i < half))),
        ("H1: η = 0.5 throughout", dict(taus=grid, eta=lambda i: 0.5)),
        ("H2 last step: x at the grid's last t, not x̂_0",
         dict(taus=grid, eta=ode, denoise_last=False)),
        ("H3 grid: trailing", dict(taus=spaced_timesteps(T, steps, "trailing"), eta=ode)),
        ("H3 grid: leading", dict(taus=spaced_timesteps(T, steps, "leading"), eta=ode)),
        ("H3 grid: from t = 0.97 T (skip ᾱ ≈ 0)",
         dict(taus=torch.linspace(0, int(0.97 * (T - 1)), steps).round().long(), eta=ode)),
        ("H4 clipping: x̂_0 not clipped", dict(taus=grid, eta=ode, clip=False)),
        ("H4: DDPM with x̂_0 not clipped", dict(taus=grid, eta=ddpm, clip=False)),
        ("H5 guidance 1 (none): ODE", dict(taus=grid, eta=ode, scale=1.0)),
        ("H5 guidance 1 (none): DDPM", dict(taus=grid, eta=ddpm, scale=1.0)),
        ("H5 guidance 3: ODE", dict(taus=grid, eta=ode, scale=3.0)),
        ("H5 guidance 3: DDPM", dict(taus=grid, eta=ddpm, scale=3.0)),
    ]  # fmt: skip
    header = ["| sampler | accuracy | FID ÷ real | diversity | penultimate diversity "
              "| precision | high-frequency ÷ real |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines = list(header)
    for name, kw in rows:
        guidance = own.over(kw.pop("scale", None))
        g = torch.Generator().manual_seed(1)
        images = sample(model, text, guidance, noise.clone(), generator=g, **kw).clamp(-1, 1)
        r = evaluate_samples(judge, images, labels, heldout, reference, classes)
        lines.append(
            f"| {name} | {r['conditional_accuracy']:.1%} | {r['fid_ratio']:.2f} "
            f"| {r['diversity']:.2f} | {r['penultimate_diversity']:.2f} | {r['precision']:.2f} "
            f"| {high_frequency(images) / real_hf:.2f} |"
        )
        print(lines[-1], flush=True)
    levels = [int(t) for t in grid.flip(0)[:: max(1, steps // 8)]]
    lines += ["", "| t | ᾱ_t | ε error ÷ ‖ε‖² | x̂_0 RMSE | x̂_0 high-frequency ÷ real |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += x0_by_noise_level(model, own, text_of_classes, heldout, real_hf, levels)
    # the first step of the linspace grid: how much of x̂_0 is clipped where ᾱ ≈ 0
    t = torch.full((len(labels),), int(grid[-1]), dtype=torch.long)
    a_t = model.schedule.alphas_cumprod[grid[-1]]
    with torch.no_grad():
        eps = own.noise(model.predict, model.schedule, noise, t, text)
    x0 = (noise - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    clipped = (x0.abs() > 1).float().mean().item()
    record(
        f"Why the deterministic samplers fall behind: one measurement per hypothesis ({steps} "
        f"steps, {n} images per class, {own})",
        "\n".join(lines),
        notes=f"Checkpoint: `{ckpt}`. At the first step of the grid (t = {int(grid[-1])}, "
        f"ᾱ = {a_t.item():.2e}) {clipped:.0%} of x̂_0's pixels lie outside [−1, 1] and are "
        "clipped.",
    )


if __name__ == "__main__":
    main()
