import pytest
import torch

from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.errors import UserError


@pytest.mark.parametrize("timesteps", [20, 100, 1000, 4000])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_falls_from_one_to_near_zero_for_any_T(kind, timesteps):
    """Sampling starts from N(0, I): ᾱ_T must be ~0 for every T, or the model is asked to
    denoise a distribution it never saw (unscaled linear β at T = 100 ended at ᾱ ≈ 0.36)."""
    a = NoiseSchedule(timesteps, kind).alphas_cumprod
    assert a.shape == (timesteps,) and (a > 0).all() and (a < 1).all()
    assert (a[1:] < a[:-1]).all()
    assert a[0] > 0.99 and a[-1] < 1e-3


def test_linear_beta_is_scaled_by_1000_over_T():
    betas = NoiseSchedule(100, "linear").betas
    assert betas[0].item() == pytest.approx(1e-3) and betas[-1].item() == pytest.approx(0.2)


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
    with pytest.raises(UserError, match="kind=.quadratic. is not one of linear, cosine"):
        NoiseSchedule(10, "quadratic")


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_each_prediction_target_converts_back_to_x0_and_noise(prediction):
    s = NoiseSchedule(1000, prediction=prediction)
    x0, noise = torch.randn(4, 1, 4, 4).double(), torch.randn(4, 1, 4, 4).double()
    t = torch.tensor([0, 10, 500, 999])
    s = s.double()
    x_t = s.add_noise(x0, noise, t)
    out = s.target(x0, noise, t)  # a perfect network's output
    torch.testing.assert_close(s.predict_x0(x_t, t, out), x0)
    torch.testing.assert_close(s.predict_noise(x_t, t, out), noise)


def test_v_is_salimans_and_hos_velocity():
    s = NoiseSchedule(1000, prediction="v")
    x0, noise, t = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([100, 900])
    a = s.alphas_cumprod[t].view(-1, 1)
    torch.testing.assert_close(s.target(x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0)


def test_zero_terminal_snr_ends_at_pure_noise_and_keeps_the_start():
    plain = NoiseSchedule(1000, "linear", prediction="v")
    rescaled = NoiseSchedule(1000, "linear", prediction="v", zero_terminal_snr=True)
    a = rescaled.alphas_cumprod
    assert 0 < a[-1].item() < 1e-8 and (a[1:] < a[:-1]).all()
    assert a[0].item() == pytest.approx(plain.alphas_cumprod[0].item())
    assert plain.alphas_cumprod[-1] > 4e-5  # what it fixes: √ᾱ_T ≈ 0.006, not 0
    with pytest.raises(UserError, match="needs schedule.prediction=v"):
        NoiseSchedule(1000, zero_terminal_snr=True)
    with pytest.raises(UserError, match="prediction=.noise. is not one of eps, v, x0"):
        NoiseSchedule(1000, prediction="noise")
