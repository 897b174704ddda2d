"""The samplers against an analytic optimum: for x_0 ~ N(μ, s²), x_t ~ N(√ᾱ μ, ᾱs² + 1 − ᾱ) and
the optimal noise predictor is ε̂(x_t, t) = √(1 − ᾱ) (x_t − √ᾱ μ) / (ᾱs² + 1 − ᾱ). Sampling with
it must give back μ and s. No network is involved, so this checks the sampler maths alone."""

import pytest
import torch

from diffusion_lit.diffusion.samplers import dpmpp_2m_sde_sample, run_sampler, spaced_timesteps
from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import UserError

MU, S = 0.3, 0.5
SCHEDULE = NoiseSchedule(1000)


def optimal_eps(x, t):
    a = SCHEDULE.alphas_cumprod[t].view(-1, 1)
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def sample(name, steps, eta=0.0, seed=0, n=20000, spacing="linspace"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    # no clipping to [-1, 1]: it would cut the Gaussian's tails
    return run_sampler(name, optimal_eps, SCHEDULE, x, steps, g, eta, progress=False,
                       clip_x0=False, spacing=spacing)  # fmt: skip


# (sampler, steps, eta, relative tolerance on s). Few steps cost a little spread (a first-order
# step across the low-noise end is long); second-order DPM-Solver++ needs the fewest, its SDE
# form (fresh noise every step) a few more.
CASES = [
    ("ddpm", 1000, 0.0, 0.02),
    ("ddim", 1000, 1.0, 0.02),
    ("ddim", 1000, 0.0, 0.02),
    ("ddpm", 250, 0.0, 0.04),
    ("ddim", 100, 0.0, 0.04),
    ("dpmpp_2m", 50, 0.0, 0.02),
    ("dpmpp_2m", 20, 0.0, 0.05),
    ("dpmpp_2m_sde", 50, 0.0, 0.05),  # measured +3.8 % (DDPM at 50: −11 %)
    ("dpmpp_2m_sde", 20, 0.0, 0.05),  # −4.4 % (DDPM at 20: −23 %)
]


@pytest.mark.parametrize("name,steps,eta,rel", CASES)
def test_sampler_recovers_the_gaussian(name, steps, eta, rel):
    x = sample(name, steps, eta)
    assert x.mean().item() == pytest.approx(MU, abs=0.015)
    assert x.std().item() == pytest.approx(S, rel=rel)


# measured spread error at 20 steps, quadratic (linspace): DDPM −15.9 % (−22.6 %), DPM-Solver++
# 2M +2.5 % (−4.3 %), its SDE +5.9 % (−4.5 %)
@pytest.mark.parametrize(
    ("name", "rel"), [("ddpm", 0.17), ("dpmpp_2m", 0.03), ("dpmpp_2m_sde", 0.07)]
)
def test_the_quadratic_grid_recovers_the_gaussian_at_20_steps(name, rel):
    x = sample(name, 20, spacing="quadratic")
    assert x.mean().item() == pytest.approx(MU, abs=0.015)
    assert x.std().item() == pytest.approx(S, rel=rel)


def test_ddim_at_eta_one_with_all_steps_is_ddpm():
    # the same maths in another order: float32 rounding over 1,000 steps, no more
    ddim, ddpm = sample("ddim", 1000, eta=1.0, n=500), sample("ddpm", 1000, n=500)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


def test_the_first_order_sde_step_is_ddpm():
    """DPM-Solver++ SDE's first-order step (the first of every walk; with two steps the only
    one before the last jump to x̂_0) is DDPM's ancestral step: the same mean, variance and
    noise draw."""
    taus = spaced_timesteps(1000, 2)
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    sde = dpmpp_2m_sde_sample(optimal_eps, SCHEDULE, x, taus, g, progress=False, clip_x0=False)
    ddpm = run_sampler("ddpm", optimal_eps, SCHEDULE, x, 2, torch.Generator().manual_seed(5),
                       progress=False, clip_x0=False)  # fmt: skip
    torch.testing.assert_close(sde, ddpm, atol=1e-5, rtol=1e-5)


def test_the_multistep_solvers_keep_no_history_across_a_change_of_guidance():
    """Where the noise predictor changes (guidance switching on or off at an interval's edge),
    DPM-Solver++ takes a first-order step: with a new piece at every timestep every step is
    first order, so the SDE walk is DDPM's; with one piece it is the usual second-order walk."""
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(4))

    def walk(name, piece=None):
        return run_sampler(name, optimal_eps, SCHEDULE, x, 10, torch.Generator().manual_seed(5),
                           progress=False, clip_x0=False, piece=piece)  # fmt: skip

    ddpm, second_order = walk("ddpm"), walk("dpmpp_2m_sde")
    torch.testing.assert_close(walk("dpmpp_2m_sde", piece=lambda t: t), ddpm)
    torch.testing.assert_close(walk("dpmpp_2m_sde", piece=lambda t: 0), second_order)
    assert not torch.allclose(second_order, ddpm)


def test_deterministic_samplers_ignore_the_seed_after_the_start():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 1, generator=g)
    for name in ["dpmpp_2m", "ddim"]:
        a = run_sampler(
            name, optimal_eps, SCHEDULE, x, 10, torch.Generator().manual_seed(1), progress=False
        )
        b = run_sampler(
            name, optimal_eps, SCHEDULE, x, 10, torch.Generator().manual_seed(2), progress=False
        )
        torch.testing.assert_close(a, b)


def test_unknown_sampler_is_refused():
    with pytest.raises(UserError, match="ddpm, ddim, dpmpp_2m, dpmpp_2m_sde"):
        run_sampler("euler", optimal_eps, SCHEDULE, torch.zeros(1, 1))


def test_spaced_timesteps():
    assert spaced_timesteps(1000, 1000).tolist() == list(range(1000))
    taus = spaced_timesteps(1000, 50)
    assert len(taus) == 50 and taus[0] == 0 and taus[-1] == 999
    with pytest.raises(UserError, match="steps"):
        spaced_timesteps(10, 11)
    assert spaced_timesteps(1000, 1, "trailing").tolist() == [999]
    for spacing in ["linspace", "leading"]:  # one step at t = 0 would return the noise itself
        with pytest.raises(UserError, match="steps=1 .* visits only t=0.*trailing"):
            spaced_timesteps(1000, 1, spacing)
    quadratic = spaced_timesteps(1000, 25, "quadratic")
    assert quadratic[:4].tolist() == [0, 2, 7, 16] and quadratic[-1] == 999  # (i/24)² · 999
    assert (quadratic.diff().diff() >= -1).all()  # ever longer steps towards the noise
    assert spaced_timesteps(1000, 100, "quadratic").unique().numel() == 98  # each t once
    with pytest.raises(UserError, match="timestep_spacing='middle'"):
        spaced_timesteps(1000, 10, "middle")


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"])
def test_callback_sees_every_step_and_can_stop_the_sampling(name):
    seen = []
    run_sampler(name, optimal_eps, SCHEDULE, torch.randn(4, 1), 7, progress=False,
                callback=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen == [(k, 7) for k in range(1, 8)]

    class Stop(Exception):
        pass

    def stop_after_three(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        run_sampler(name, optimal_eps, SCHEDULE, torch.randn(4, 1), 7, progress=False,
                    callback=stop_after_three)  # fmt: skip
