import pytest
import torch

from diffusion_lit.samplers import ddpm_sample, spaced_timesteps
from diffusion_lit.schedule import NoiseSchedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_falls_from_one_to_near_zero(kind):
    s = NoiseSchedule(1000, kind)
    a = s.alphas_cumprod
    assert a.shape == (1000,) and (a > 0).all() and (a < 1).all()
    assert (a[1:] < a[:-1]).all()
    assert a[0] > 0.99 and a[-1] < 1e-3


def test_linear_schedule_matches_ddpm():
    s = NoiseSchedule(1000, "linear")
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_add_noise_then_predict_x0_round_trips():
    s = NoiseSchedule(1000)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    x_t = s.add_noise(x0, noise, t)
    expected = s.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1) * x0
    expected = expected + (1 - s.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1) * noise
    torch.testing.assert_close(x_t, expected)
    torch.testing.assert_close(s.predict_x0(x_t, t, noise), x0, atol=1e-3, rtol=1e-3)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule.kind"):
        NoiseSchedule(10, "quadratic")


def test_spaced_timesteps():
    assert spaced_timesteps(1000, 1000).tolist() == list(range(1000))
    taus = spaced_timesteps(1000, 50)
    assert len(taus) == 50 and taus[0] == 0 and taus[-1] == 999
    with pytest.raises(ValueError, match="steps"):
        spaced_timesteps(10, 11)


# Strided DDPM plugs E[x_0 | x_t] into the posterior and so loses a little spread per long jump.
@pytest.mark.parametrize("steps,std_tol", [(1000, 0.01), (100, 0.03)])
def test_ddpm_sampler_recovers_a_gaussian_with_the_optimal_noise_predictor(steps, std_tol):
    """For x_0 ~ N(μ, σ²) the optimal ε̂ is analytic: x_t ~ N(√ᾱ μ, ᾱσ² + 1 − ᾱ) and
    ε̂ = √(1 − ᾱ) (x_t − √ᾱ μ) / (ᾱσ² + 1 − ᾱ). Sampling with it must give back μ and σ."""
    mu, sigma = 0.3, 0.2
    s = NoiseSchedule(1000)

    def eps_fn(x, t):
        a = s.alphas_cumprod[t].view(-1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * sigma**2 + 1 - a)

    g = torch.Generator().manual_seed(0)
    x = ddpm_sample(eps_fn, s, torch.randn(20000, 1, generator=g), steps, g, progress=False)
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(sigma, abs=std_tol)
