"""The samplers against an analytic optimum: for x_0 ~ N(μ, s²), x_t ~ N(√ᾱ μ, ᾱs² + 1 − ᾱ) and
the optimal noise predictor is ε̂(x_t, t) = √(1 − ᾱ) (x_t − √ᾱ μ) / (ᾱs² + 1 − ᾱ). Sampling with
it must give back μ and s. No network is involved, so this checks the sampler maths alone."""

import pytest
import torch

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.diffusion.samplers import denoise, sampler_named, spaced_timesteps
from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import BadValue, UserError

MU, S = 0.3, 0.5
SCHEDULE = NoiseSchedule(1000)


def run_sampler(name, eps_fn, schedule, x, steps=None, generator=None, eta=None, progress=False,
                clip_x0=True, spacing=None, callback=None, piece=None):  # fmt: skip
    """A sampler by name on its grid of ``steps``, as the model's walk runs it."""
    sampler = sampler_named(name, eta=eta, spacing=spacing, clip_x0=clip_x0)
    taus = sampler.timesteps(schedule.timesteps, steps)
    return denoise(sampler, eps_fn, schedule, x, taus, generator, progress, callback, piece)


def optimal_eps(x, t):
    a = SCHEDULE.alphas_cumprod[t].view(-1, 1)
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def sample(name, steps, eta=None, seed=0, n=20000, spacing="linspace"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    # no clipping to [-1, 1]: it would cut the Gaussian's tails
    return run_sampler(name, optimal_eps, SCHEDULE, x, steps, g, eta, progress=False,
                       clip_x0=False, spacing=spacing)  # fmt: skip


# (sampler, steps, eta, relative tolerance on s). Few steps cost a little spread (a first-order
# step across the low-noise end is long); second-order DPM-Solver++ needs the fewest, its SDE
# form (fresh noise every step) a few more.
CASES = [
    ("ddpm", 1000, None, 0.02),
    ("ddim", 1000, 1.0, 0.02),
    ("ddim", 1000, 0.0, 0.02),
    ("ddpm", 250, None, 0.04),
    ("ddim", 100, 0.0, 0.04),
    ("dpmpp_2m", 50, None, 0.02),
    ("dpmpp_2m", 20, None, 0.05),
    ("dpmpp_2m_sde", 50, 1.0, 0.05),  # measured +3.8 % (DDPM at 50: −11 %)
    ("dpmpp_2m_sde", 20, 1.0, 0.05),  # −4.4 % (DDPM at 20: −23 %)
    ("dpmpp_2m_sde", 50, None, 0.06),  # η = 1.5, its default: +5.2 %
    ("dpmpp_2m_sde", 25, None, 0.03),  # +1.2 %
    ("dpmpp_2m_sde", 20, None, 0.05),  # −4.0 %
    ("dpmpp_2m_sde", 25, 3.0, 0.05),  # the most it takes: +2.9 %
]


@pytest.mark.parametrize("name,steps,eta,rel", CASES)
def test_sampler_recovers_the_gaussian(name, steps, eta, rel):
    x = sample(name, steps, eta)
    assert x.mean().item() == pytest.approx(MU, abs=0.015)
    assert x.std().item() == pytest.approx(S, rel=rel)


# measured spread error at 20 steps, quadratic (linspace): DDPM −15.9 % (−22.6 %), DPM-Solver++
# 2M +2.5 % (−4.3 %), its SDE at η = 1 +5.9 % (−4.5 %), at η = 1.5 +8.1 % (−4.0 %); at 25
# steps, high_noise (long steps at low noise, where this test's errors arise): DDPM −23.7 %,
# DPM-Solver++ 2M −6.5 %, its SDE −6.5 % at either η
@pytest.mark.parametrize(
    ("name", "eta", "spacing", "steps", "rel"),
    [("ddpm", None, "quadratic", 20, 0.17), ("dpmpp_2m", None, "quadratic", 20, 0.03),
     ("dpmpp_2m_sde", 1.0, "quadratic", 20, 0.07), ("dpmpp_2m_sde", None, "quadratic", 20, 0.09),
     ("ddpm", None, "high_noise", 25, 0.25), ("dpmpp_2m", None, "high_noise", 25, 0.07),
     ("dpmpp_2m_sde", None, "high_noise", 25, 0.07)],
)  # fmt: skip
def test_the_other_grids_recover_the_gaussian(name, eta, spacing, steps, rel):
    x = sample(name, steps, eta, spacing=spacing)
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
    sde = denoise(sampler_named("dpmpp_2m_sde", eta=1.0, clip_x0=False), optimal_eps, SCHEDULE,
                  x, taus, g, progress=False)  # fmt: skip
    ddpm = run_sampler("ddpm", optimal_eps, SCHEDULE, x, 2, torch.Generator().manual_seed(5),
                       progress=False, clip_x0=False)  # fmt: skip
    torch.testing.assert_close(sde, ddpm, atol=1e-5, rtol=1e-5)


def test_the_multistep_solvers_keep_no_history_across_a_change_of_guidance():
    """Where the noise predictor changes (guidance switching on or off at an interval's edge),
    DPM-Solver++ takes a first-order step: with a new piece at every timestep every step is
    first order, so the SDE walk is DDPM's; with one piece it is the usual second-order walk."""
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(4))

    def walk(name, piece=None):  # the SDE at η = 1, whose first-order step is DDPM's
        return run_sampler(name, optimal_eps, SCHEDULE, x, 10, torch.Generator().manual_seed(5),
                           1.0, progress=False, clip_x0=False, spacing="linspace",
                           piece=piece)  # fmt: skip

    ddpm, second_order = walk("ddpm"), walk("dpmpp_2m_sde")
    torch.testing.assert_close(walk("dpmpp_2m_sde", piece=lambda t: t), ddpm)
    torch.testing.assert_close(walk("dpmpp_2m_sde", piece=lambda t: 0), second_order)
    assert not torch.allclose(second_order, ddpm)


def test_the_sde_at_eta_zero_is_the_ode_and_its_defaults_are_its_grid_and_eta():
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(4))

    def walk(name, eta, spacing="linspace"):
        return run_sampler(name, optimal_eps, SCHEDULE, x, 10, torch.Generator().manual_seed(5),
                           eta, progress=False, spacing=spacing)  # fmt: skip

    torch.testing.assert_close(walk("dpmpp_2m_sde", 0.0), walk("dpmpp_2m", None))
    torch.testing.assert_close(walk("dpmpp_2m_sde", None), walk("dpmpp_2m_sde", 1.5))
    assert not torch.allclose(walk("dpmpp_2m_sde", 1.5), walk("dpmpp_2m_sde", 1.0))
    # left open, DPM-Solver++(2M) SDE walks the high_noise grid; the others linspace
    torch.testing.assert_close(walk("dpmpp_2m_sde", None, None), walk("dpmpp_2m_sde", 1.5,
                                                                      "high_noise"))  # fmt: skip
    torch.testing.assert_close(walk("ddpm", None, None), walk("ddpm", None))
    assert SamplingOptions().spacing == "high_noise"
    assert SamplingOptions(sampler="ddim").spacing == "linspace"
    # more noise each step pulls each step harder to its x̂_0: the same Gaussian either way
    assert sample("dpmpp_2m_sde", 25, 1.5).std().item() == pytest.approx(S, rel=0.03)


def test_a_noise_level_beyond_the_samplers_range_is_refused_before_any_work():
    assert SamplingOptions(sampler="dpmpp_2m_sde", eta=3).noise_level == 3.0
    assert SamplingOptions(sampler="ddpm").noise_level is None
    with pytest.raises(BadValue, match=r"eta=1\.5.* ≤ 1"):
        SamplingOptions(sampler="ddim", eta=1.5)
    with pytest.raises(BadValue, match=r"eta=4.* ≤ 3"):
        SamplingOptions(eta=4)


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
    high = spaced_timesteps(1000, 25, "high_noise")  # (1 − (1 − i/24)^1.5) · 999
    assert high[:3].tolist() == [0, 62, 122] and high[-3:].tolist() == [975, 991, 999]
    assert (high.diff().diff() <= 1).all()  # ever shorter steps towards the noise
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


def test_a_sample_request_enters_each_module_at_most_twice(trained_run, tmp_path):
    """The walk of a request is layered: along every call chain from the sample CLI down, each
    of the package's modules is entered at most twice (counting the runs of its frames on the
    stack); a module called back and forth would own a piece of another's job."""
    import sys

    from diffusion_lit import cli
    from diffusion_lit.sample import sample

    run_dir, _, _ = trained_run
    cfg = cli.compose("sample", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "steps=3",
                          "prompts=[a one]", "num_images=1", f"out_dir={tmp_path}"])  # fmt: skip
    worst: dict[str, int] = {}

    def entries(frame) -> dict[str, int]:
        chain = []
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if name.startswith("diffusion_lit.") and (not chain or chain[-1] != name):
                chain.append(name)
            frame = frame.f_back
        return {m: chain.count(m) for m in set(chain)}

    def watch(frame, event, arg):
        if event == "call":
            for module, count in entries(frame).items():
                worst[module] = max(worst.get(module, 0), count)

    sys.setprofile(watch)
    try:
        sample(cfg)
    finally:
        sys.setprofile(None)
    assert "diffusion_lit.diffusion.samplers" in worst
    assert max(worst.values()) <= 2, {m: n for m, n in worst.items() if n > 2}
