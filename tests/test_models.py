import pytest
import torch

from diffusion_lit.models import SimpleUNet
from diffusion_lit.models.layers import ConditionalDropout


def tiny_unet(image_size=8, channels=1, **kw):
    return SimpleUNet(
        image_size=image_size,
        in_channels=channels,
        text_dim=12,
        timesteps=20,
        base_channels=4,
        time_dim=8,
        **kw,
    )


@pytest.mark.parametrize("image_size,channels", [(8, 1), (16, 3), (28, 1), (56, 3)])
def test_simple_unet_predicts_noise_of_the_input_shape(image_size, channels):
    net = tiny_unet(image_size, channels)
    x = torch.randn(2, channels, image_size, image_size)
    out = net(x, torch.tensor([0, 19]), torch.randn(2, 12))
    assert out.shape == x.shape


def test_text_conditioning_changes_the_prediction():
    torch.manual_seed(0)
    net = tiny_unet(cond_drop_prob=0.0).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    a, b = net(x, t, torch.randn(2, 12)), net(x, t, torch.randn(2, 12))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, net(x, t, None))


def test_timestep_changes_the_prediction():
    net = tiny_unet().eval()
    x, text = torch.randn(1, 1, 8, 8), torch.randn(1, 12)
    assert not torch.allclose(net(x, torch.tensor([1]), text), net(x, torch.tensor([15]), text))


def test_null_text_is_the_zero_embedding():
    net = tiny_unet().eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.zeros(2, 12)))


def test_every_parameter_gets_a_gradient():
    net = tiny_unet(cond_drop_prob=0.0)
    net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.randn(2, 12)).pow(2).mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_image_size_not_divisible_by_4_is_refused_with_a_fix():
    with pytest.raises(ValueError, match=r"image_size=30 .*multiple of 4"):
        tiny_unet(image_size=30)


def test_conditional_dropout_drops_whole_embeddings_in_training_only():
    torch.manual_seed(0)
    drop, emb = ConditionalDropout(0.5), torch.randn(1000, 6) + 3
    out = drop.train()(emb)
    dropped = (out == 0).all(dim=1)
    assert 0.4 < dropped.float().mean() < 0.6
    torch.testing.assert_close(out[~dropped], emb[~dropped])
    assert torch.equal(drop.eval()(emb), emb)
    assert torch.equal(ConditionalDropout(0.0).train()(emb), emb)
