"""The enhanced model, EMA weights, the fast samplers and training pictures, end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_idx

from diffusion_lit.pipeline import TextToImage
from diffusion_lit.train import train
from diffusion_lit.training.ema import WarmupEMAModel

from conftest import TINY, compose_train

ENHANCED = [*TINY, "model=enhanced", "model.attention_heads=2", "model.base_channels=4"]


@pytest.fixture(scope="module")
def enhanced_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("enhanced") / "run"
    cfg = compose_train(
        [*ENHANCED, "callbacks.sample_grid.every_n_epochs=1", "callbacks.ema.decay=0.5"],
        run_dir=run_dir,
    )
    metrics, objects = train(cfg)
    return run_dir, metrics, objects


def test_enhanced_training_writes_grids_curves_and_checkpoints(enhanced_run):
    run_dir, metrics, _ = enhanced_run
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "epoch_000.png",
        "epoch_001.png",
        "final.png",
    ]
    assert (run_dir / "curves.png").stat().st_size > 10_000
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert np.isfinite(metrics["val/loss"])


def test_ema_weights_differ_from_the_raw_ones_and_are_what_sampling_uses(enhanced_run):
    run_dir, _, objects = enhanced_run
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    name = "net.out.weight"
    assert not torch.equal(ema[name], raw[name])

    ema_pipe = TextToImage.from_checkpoint(ckpt_path, device="cpu")
    raw_pipe = TextToImage.from_checkpoint(ckpt_path, device="cpu", use_ema=False)
    assert torch.equal(ema_pipe.model.net.out.weight, ema[name])
    assert torch.equal(raw_pipe.model.net.out.weight, raw[name])
    kw = dict(prompts=["Draw a six"], num_images=2, sampler="ddim", steps=5, seed=0, progress=False)
    assert not torch.equal(ema_pipe(**kw).images, raw_pipe(**kw).images)
    # training ended with the EMA weights copied into the model, as sampling sees them
    trained = objects["module"].state_dict()[name]
    torch.testing.assert_close(trained, ema[name])


def test_ema_decay_warms_up():
    model = torch.nn.Linear(2, 1)
    model.register_buffer("count", torch.tensor(7))
    ema = WarmupEMAModel(model, decay=0.999, use_buffers=True)

    def update_to(value: float) -> torch.Tensor:
        with torch.no_grad():
            model.weight.fill_(value)
            model.count += 1
        ema.update_parameters(model)
        return ema.module.weight

    torch.testing.assert_close(update_to(1.0), torch.ones(1, 2))  # the first update copies
    torch.testing.assert_close(update_to(0.0), torch.full((1, 2), 2 / 11))  # n = 1: 2/11 kept
    assert ema.module.count == model.count == 9  # integer buffers follow the model
    ema.n_averaged.fill_(10**6)
    torch.testing.assert_close(update_to(1.0), torch.full((1, 2), 2 / 11 * 0.999 + 0.001))


@pytest.mark.parametrize(
    "sampler,steps", [("ddpm", 20), ("ddim", 5), ("dpmpp_2m", 5), ("dpmpp_2m_sde", 5)]
)
def test_every_sampler_generates_reproducible_images(enhanced_run, sampler, steps):
    run_dir, _, _ = enhanced_run
    pipe = TextToImage.from_checkpoint(run_dir / "checkpoints" / "last.ckpt", device="cpu")
    kw = dict(num_images=2, sampler=sampler, steps=steps, seed=3, progress=False)
    a = pipe(["Draw a six", "a drawing of a seven"], **kw).images
    assert a.shape == (2, 2, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, pipe(["Draw a six", "a drawing of a seven"], **kw).images)


@pytest.mark.parametrize("option", ["trainer.precision=bf16-mixed", "channels_last=true"])
def test_enhanced_trains_in_bf16_mixed_and_channels_last_on_cpu(tmp_path, option):
    cfg = compose_train([*ENHANCED, option, "trainer.max_epochs=1"], run_dir=tmp_path / "run")
    metrics, objects = train(cfg)
    assert np.isfinite(metrics["train/loss"])
    if option == "channels_last=true":
        weight = objects["module"].net.down1.res1.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last)


def test_seed_mnist_experiment_runs_a_fast_dev_run(tmp_path):
    from clip_fixture import save_tiny_clip

    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in [("train", 40), ("t10k", 10)]:
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    clip = save_tiny_clip(tmp_path / "clip", hidden_size=32)
    cfg = compose_train(
        [
            "experiment=seed_mnist",
            "debug=fdr",
            f"data.root={tmp_path / 'data'}",
            "data.download=false",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.pin_memory=false",
            "data.batch_size=4",
            f"text_encoder.name_or_path={clip}",
            "text_encoder.dim=32",
            "model.base_channels=4",
            "model.attention_heads=2",
            "callbacks.sample_grid.steps=2",
            "callbacks.sample_grid.num_per_class=1",
        ],
        run_dir=tmp_path / "run",
    )
    assert cfg.data.image_size == 56 and cfg.data.channels == 3  # the seed's size, kept
    metrics, objects = train(cfg)
    assert type(objects["module"].net).__name__ == "TextGuidedUNet"
    prompts = objects["module"].spec.class_prompts[6]
    assert prompts[0] == "Draw a six"  # the seed's prompt first, then the measured captions
    assert all("six" in prompt for prompt in prompts)
    assert np.isfinite(metrics["train/loss"])
    assert Path(tmp_path / "run" / "samples" / "final.png").is_file()
