"""The LightningModule's own behaviour on a tiny model: classifier-free guidance, the null prompt,
reproducible validation, and every rank drawing its own noise."""

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.training.module import DiffusionModule


def tiny_module(kind: str) -> DiffusionModule:
    net = {"kind": kind, "image_size": 8, "in_channels": 1, "text_dim": 16, "base_channels": 4,
           "time_dim": 8, "cond_drop_prob": 0.1}  # fmt: skip
    if kind == "simple":
        net["timesteps"] = 20
    spec = ModelSpec(
        net=net,
        schedule={"kind": "linear", "timesteps": 20},
        text_encoder={"kind": "minilm"},
        class_names=["a", "b"],
        class_prompts=[["A", "draw an a"], ["B", "draw a b"]],
    )
    torch.manual_seed(0)
    module = DiffusionModule(spec, spec.build(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    # two classes × two templates, four distinct prompts of 3 tokens, the last one padding
    module.prompts.pooled = torch.randn(4, 16)
    module.prompts.tokens = torch.randn(4, 3, 16)
    module.prompts.mask = torch.tensor([True, True, False]).expand(4, 3).clone()
    with torch.no_grad():  # a fresh UNet's output conv is not zero here, but make sure
        for p in module.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def guided_noise(module, x, t, text, scale, interval=(0.0, 1.0)):
    """The model's guided noise prediction."""
    return Guidance(scale, interval).noise(module.model.predict, module.schedule, x, t, text)


def inputs(module, n=4):
    x, t = torch.randn(n, 1, 8, 8), torch.randint(20, (n,))
    text = module.prompts.lookup(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 0]))
    return x, t, text


@pytest.mark.parametrize("kind", ["simple", "enhanced"])
def test_guidance_scale_zero_is_unconditional_and_one_conditional(kind):
    module = tiny_module(kind).eval()
    x, t, text = inputs(module)
    cond, uncond = module.model.predict(x, t, text), module.model.predict(x, t, text.null())
    assert not torch.allclose(cond, uncond)  # the prompt matters
    torch.testing.assert_close(guided_noise(module, x, t, text, 0.0), uncond)
    torch.testing.assert_close(guided_noise(module, x, t, text, 1.0), cond)
    w = 3.0
    torch.testing.assert_close(guided_noise(module, x, t, text, w), uncond + w * (cond - uncond))


def test_guidance_applies_only_within_its_interval_of_the_denoising():
    module = tiny_module("simple").eval()
    x, _, text = inputs(module)
    last = module.schedule.timesteps - 1
    # t = T − 1 is the start of the denoising (0), t = 0 its end (1)
    for t_value, guided in [(last, False), (last // 2, True), (0, False)]:
        t = torch.full((4,), t_value)
        cond, uncond = module.model.predict(x, t, text), module.model.predict(x, t, text.null())
        expected = uncond + 3.0 * (cond - uncond) if guided else cond
        torch.testing.assert_close(guided_noise(module, x, t, text, 3.0, (0.25, 0.75)), expected)


@pytest.mark.parametrize("kind", ["simple", "enhanced"])
def test_the_null_prompt_at_sampling_is_what_text_dropout_feeds_in_training(kind):
    module = tiny_module(kind)
    x, t, text = inputs(module)
    module.net.train()
    module.net.text_cond.dropout.p = 1.0  # every prompt dropped
    dropped = module.net(x, t, text.pooled, text.tokens, text.mask)
    module.net.eval()
    null = text.null()
    torch.testing.assert_close(dropped, module.net(x, t, null.pooled, null.tokens, null.mask))


def test_val_loss_depends_only_on_the_batch():
    """Validation draws t, ε and the prompt template per batch, not from the global RNG: with two
    templates per class (as flowers has) the same weights give the same val/loss whatever ran
    before."""
    module = tiny_module("simple")
    data = TensorDataset(torch.randn(16, 1, 8, 8).clamp(-1, 1), torch.arange(16) % 2)
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        [metrics] = trainer.validate(module, DataLoader(data, batch_size=4), verbose=False)
        losses.append(metrics["val/loss"])
    assert losses[0] == losses[1]


def test_each_rank_draws_its_own_noise_and_the_same_on_a_rerun(monkeypatch):
    module = tiny_module("simple")

    def draws(rank: int, batch_idx: int = 3) -> torch.Tensor:
        monkeypatch.setattr(DiffusionModule, "global_rank", property(lambda self: rank))
        module.on_train_batch_start(None, batch_idx)
        return torch.rand(4)

    assert not torch.equal(draws(0), draws(1))
    assert torch.equal(draws(1), draws(1)) and not torch.equal(draws(1), draws(1, batch_idx=4))


def test_min_snr_weights_cap_the_nearly_clean_steps():
    module = tiny_module("simple")
    module.min_snr_gamma = 5.0
    t = torch.tensor([0, 19])  # SNR ≈ 200 at t = 0, ≈ 0 at T
    snr = module.schedule.snr(t)
    torch.testing.assert_close(module.loss_weights(t), torch.stack([5.0 / snr[0], snr[1] / snr[1]]))


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_guidance_works_in_any_prediction_target(prediction):
    module = tiny_module("enhanced")
    module.schedule.prediction = prediction
    module.eval()
    x, t, text = inputs(module)
    out = module.model.predict(x, t, text)
    torch.testing.assert_close(
        guided_noise(module, x, t, text, 1.0), module.schedule.predict_noise(x, t, out)
    )


def test_warmup_then_cosine_learning_rate():
    from diffusion_lit.training.lr_schedule import warmup_cosine

    def rates(total, **kwargs):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = warmup_cosine(optimizer, total, **kwargs)
        out = []
        for _ in range(10):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return out

    up = rates(9, warmup_steps=4, min_lr_ratio=0.1)  # the cosine over steps 4..9
    assert up[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert up[4] == pytest.approx(1.0) and up[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(up[3:], up[4:], strict=False))  # falls after the warm-up
    assert rates(float("inf"), warmup_steps=2)[2:] == [1.0] * 8  # no step count: constant
    assert rates(10, cosine=False) == [1.0] * 10

    # a step count given as a function is asked only once training is under way: Lightning's
    # estimated_stepping_batches, asked earlier, would lose a mid-epoch resume's data position
    asked = []
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, lambda: asked.append(1) or 9, warmup_steps=4)
    for _ in range(4):  # the warm-up, up to the top of the cosine
        schedule.step()
    assert not asked
    schedule.step()
    assert asked == [1] and optimizer.param_groups[0]["lr"] < 1.0


def test_text_noise_jitters_prompts_in_training_only():
    module = tiny_module("simple")
    labels = torch.tensor([0, 1, 0, 1])

    def text(training: bool, sigma: float):
        module.train(training)
        module.text_noise = sigma
        return module.caption_text(labels, generator=torch.Generator().manual_seed(0))

    clean = text(True, 0.0)
    noisy = text(True, 0.5)
    # the same templates are drawn; only the vectors move, by ~σ × their norm
    ratio = (noisy.pooled - clean.pooled).norm(dim=-1) / clean.pooled.norm(dim=-1)
    assert 0.3 < ratio.mean() < 0.7
    assert torch.equal(noisy.mask, clean.mask) and not torch.equal(noisy.tokens, clean.tokens)
    evaluated = text(False, 0.5)  # validation and sampling see the prompts as they are
    assert torch.equal(evaluated.pooled, clean.pooled) and torch.equal(
        evaluated.tokens, clean.tokens
    )


def test_nested_guidance_scales_the_words_beyond_the_class_on_their_own():
    """ε = ε_u + w_c (ε_base − ε_u) + w_a (ε − ε_base) (InstructPix2Pix's nested form), the
    class at w_c = max(w, w_a) where the prompt says more than its class and plain guidance at w
    where it is its own base; w_a = w is plain guidance, and without a base prompt too."""
    module = tiny_module("simple").eval()
    x, t, text = inputs(module)
    base = module.prompts.lookup(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 0, 0]))
    alone = torch.tensor([True, False, False, True])  # the class prompts: their own base
    predict = module.model.predict
    cond, classed, uncond = predict(x, t, text), predict(x, t, base), predict(x, t, text.null())
    plain = guided_noise(module, x, t, text, 1.5)
    for w_a, w_c in ((4.0, 4.0), (1.0, 1.5)):  # words guided harder, and more weakly
        nested = Guidance(1.5, attribute_scale=w_a).noise(
            predict, module.schedule, x, t, text, base
        )
        expected = uncond + w_c * (classed - uncond) + w_a * (cond - classed)
        torch.testing.assert_close(nested[~alone], expected[~alone])
        torch.testing.assert_close(nested[alone], plain[alone])
    same = Guidance(1.5, attribute_scale=1.5).noise(predict, module.schedule, x, t, text, base)
    torch.testing.assert_close(same, plain)
    no_base = Guidance(1.5, attribute_scale=4.0).noise(predict, module.schedule, x, t, text)
    torch.testing.assert_close(no_base, plain)
