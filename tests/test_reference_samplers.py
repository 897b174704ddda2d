"""This project's samplers side by side with diffusers' schedulers, the reference
implementation: the same noise predictor (the analytic optimum for Gaussian data), the same
timesteps, the same starting noise and, for the stochastic ones, the same random draws from one
CPU generator. They must agree to float32 tolerance, step by step to the final sample."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from diffusion_lit.diffusion.samplers import denoise, sampler_named, spaced_timesteps
from diffusion_lit.diffusion.schedule import NoiseSchedule

T, MU, S = 1000, 0.3, 0.5
SCHEDULE = NoiseSchedule(T)  # linear 1e-4..0.02 at T = 1000: diffusers' "linear"
LINEAR = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def optimal_eps(x, t):
    a = SCHEDULE.alphas_cumprod[t].view(-1, 1)
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def start(n=2000):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0))


def reference(scheduler, x, seed, **step_kwargs):
    """diffusers' own sampling loop."""
    g = torch.Generator().manual_seed(seed)
    for t in scheduler.timesteps:
        eps = optimal_eps(x, torch.full((len(x),), int(t)))
        x = scheduler.step(eps, t, x, generator=g, **step_kwargs).prev_sample
    return x


def ours(name, x, steps, spacing, seed, **kwargs):
    g = torch.Generator().manual_seed(seed)
    sampler = sampler_named(name, spacing=spacing, **kwargs)
    return denoise(sampler, optimal_eps, SCHEDULE, x, sampler.timesteps(T, steps), g, False)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timestep_grids_are_diffusers(spacing, steps):
    scheduler = DDPMScheduler(**LINEAR, timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    expected = scheduler.timesteps.flip(0)
    if expected[-1] == 0:  # one step at t = 0 would return the starting noise: refused
        with pytest.raises(Exception, match="visits only t=0"):
            spaced_timesteps(T, steps, spacing)
    else:
        assert spaced_timesteps(T, steps, spacing).tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("spacing", "steps"),
    [(s, n) for s in ("linspace", "leading", "trailing") for n in (10, 50)] + [("linspace", 1000)],
)
def test_ddpm_matches_diffusers_ddpm_scheduler(spacing, steps):
    scheduler = DDPMScheduler(**LINEAR, timestep_spacing=spacing, clip_sample=True)
    scheduler.set_timesteps(steps)
    expected = reference(scheduler, start(), seed=1)
    torch.testing.assert_close(ours("ddpm", start(), steps, spacing, seed=1), expected,
                               atol=2e-4, rtol=1e-4)  # fmt: skip


# diffusers' DDIM steps back a fixed T // steps from each timestep, so its grid must be one of
# uniform strides: leading or trailing spacing with steps dividing T (linspace rounds unevenly).
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler(spacing, steps, eta):
    scheduler = DDIMScheduler(
        **LINEAR, timestep_spacing=spacing, clip_sample=True, set_alpha_to_one=True
    )
    scheduler.set_timesteps(steps)
    # our DDIM recomputes ε from the clipped x̂_0: diffusers' use_clipped_model_output
    expected = reference(scheduler, start(), seed=2, eta=eta, use_clipped_model_output=True)
    got = ours("ddim", start(), steps, spacing, seed=2, eta=eta)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


# DPM-Solver++(2M): diffusers takes the second order on every step but the first and the last;
# ours takes the first order on the penultimate step too, by design (second order into t = 0 is
# unstable: see test_samplers). So the states entering each model call are compared up to that
# step, i.e. after the first-order start and every second-order step. Our grid is passed to
# diffusers (its own linspace grid skips t = 0); no x̂_0 clipping (diffusers clips only with
# dynamic thresholding).
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
@pytest.mark.parametrize("steps", [5, 20, 50])
@pytest.mark.parametrize(
    ("ours", "algorithm"),
    [("dpmpp_2m", "dpmsolver++"), ("dpmpp_2m_sde", "sde-dpmsolver++")],
    ids=["ode", "sde"],
)
def test_dpmpp_2m_matches_diffusers_dpm_solver_multistep(spacing, steps, ours, algorithm):
    """The SDE variant draws its noise from the same generator, one draw a step, as diffusers."""
    taus = spaced_timesteps(T, steps, spacing)
    scheduler = DPMSolverMultistepScheduler(
        **LINEAR, algorithm_type=algorithm, solver_order=2, final_sigmas_type="zero"
    )
    scheduler.set_timesteps(timesteps=taus.flip(0).tolist())
    theirs, mine = [], []
    x, g = start(), torch.Generator().manual_seed(3)
    for t in scheduler.timesteps:
        theirs.append(x)
        eps = optimal_eps(x, torch.full((len(x),), int(t)))
        x = scheduler.step(eps, t, x, generator=g).prev_sample

    def recording_eps(x, t):
        mine.append(x)
        return optimal_eps(x, t)

    g = torch.Generator().manual_seed(3)
    sampler = sampler_named(ours, eta=1.0, clip_x0=False)  # η = 1: diffusers' SDE
    denoise(sampler, recording_eps, SCHEDULE, start(), taus, g, progress=False)
    assert len(mine) == len(theirs) == steps
    for a, b in zip(mine[:-1], theirs[:-1], strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_one_trailing_step_is_a_real_sample_not_noise():
    x = ours("ddim", start(20000), 1, "trailing", seed=0)
    # one step from t = T − 1 lands on E[x_0 | x_T] ≈ μ: the data's mean, not the noise's 0
    assert x.mean().item() == pytest.approx(MU, abs=0.01) and x.std().item() < 0.05
