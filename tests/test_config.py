"""Every config option composes, interpolates consistently and instantiates."""

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from diffusion_lit.data.datamodule import ImageDataModule
from diffusion_lit.diffusion.precision import for_training as fast_precision
from diffusion_lit.training.config import model_spec

from conftest import CONF_DIR, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_default_config_is_the_offline_quickstart_stack(tmp_path):
    cfg = compose_train([], run_dir=tmp_path)
    assert cfg.data.dataset._target_ == "diffusion_lit.data.Digits"
    assert cfg.model._target_ == "diffusion_lit.models.SimpleUNet"
    assert cfg.text_encoder._target_ == "diffusion_lit.text.MiniLMEncoder"


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("model", options("model"))
def test_model_follows_the_data(data, model, tmp_path):
    cfg = compose_train([f"data={data}", f"model={model}"], run_dir=tmp_path)
    assert cfg.model.image_size == cfg.data.image_size
    assert cfg.model.in_channels == cfg.data.channels
    assert cfg.model.text_dim == cfg.text_encoder.dim
    assert isinstance(instantiate(cfg.data), ImageDataModule)  # lazy: reads no files yet
    net = instantiate(cfg.model)
    assert net.image_size == cfg.data.image_size


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_compose(trainer, tmp_path):
    cfg = compose_train([f"trainer={trainer}"], run_dir=tmp_path)
    assert {"accelerator", "devices", "precision", "strategy", "num_nodes"} <= set(cfg.trainer)
    if trainer != "gpu":  # needs a GPU to instantiate
        over = {"accelerator": "cpu"} if trainer == "ddp" else {}
        trainer_obj = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, **over)
        assert isinstance(trainer_obj, L.Trainer)


def test_every_trainer_argument_is_a_plain_override(tmp_path):
    """conf/trainer/default.yaml lists each Trainer argument (callbacks and logger come from
    their groups), so trainer.<arg>=... works without Hydra's + and Lightning's new arguments
    show up here."""
    arguments = set(inspect.signature(L.Trainer.__init__).parameters)
    assert set(compose_train([], run_dir=tmp_path).trainer) == arguments - {
        "self", "callbacks", "logger"
    } | {"_target_"}  # fmt: skip
    cfg = compose_train(["trainer.limit_train_batches=3", "trainer.fast_dev_run=true"])
    assert cfg.trainer.limit_train_batches == 3 and cfg.trainer.fast_dev_run is True


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_precision_is_a_plain_flag(precision, tmp_path):
    cfg = compose_train([f"trainer.precision={precision}", "trainer.num_nodes=1"], run_dir=tmp_path)
    assert str(cfg.trainer.precision) == precision


def test_fast_precision_is_bf16_only_where_the_hardware_computes_it(monkeypatch, tmp_path):
    """The CPU experiments train in bf16-mixed where oneDNN has native bf16 (1.8× on this
    project's CPU) and in 32-bit elsewhere, where emulated bf16 would be slower."""
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda n=native: n)
        expected = "bf16-mixed" if native else "32"
        assert fast_precision("cpu") == expected
        cfg = compose_train(["experiment=fashion_mnist"], run_dir=tmp_path)
        assert cfg.trainer.precision == expected
    if not torch.cuda.is_available():
        assert fast_precision("gpu") == "32"


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_instantiate(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train([f"logger={logger}"], run_dir=tmp_path)
    assert all(isinstance(instantiate(c), L.pytorch.loggers.Logger) for c in cfg.logger.values())


def test_callbacks_instantiate(tmp_path):
    cfg = compose_train([], run_dir=tmp_path)
    assert all(isinstance(instantiate(c), L.Callback) for c in cfg.callbacks.values())


def test_text_encoders(tmp_path):
    minilm = compose_train(["text_encoder=minilm"], run_dir=tmp_path).text_encoder
    assert instantiate(minilm).dim == 384
    clip = compose_train(["text_encoder=clip"], run_dir=tmp_path)
    assert clip.model.text_dim == 512
    with pytest.raises(InstantiationException, match="text_encoder=minilm"):
        instantiate(clip.text_encoder)  # no CLIP weights offline


def test_schedule_and_optimizer_instantiate(tmp_path):
    cfg = compose_train(["schedule.kind=cosine"], run_dir=tmp_path)
    spec = model_spec(cfg, ["six"], [["Draw a six"]])
    assert spec.build().schedule.alphas_cumprod.shape == (1000,)
    net = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)


@pytest.mark.parametrize("experiment", ["seed_flowers", "seed_mnist"])
def test_seed_experiments_reproduce_the_seed_configuration(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], run_dir=tmp_path)
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 45
    assert cfg.optimizer.lr == pytest.approx(2e-4)
    assert cfg.data.image_size == 56 and cfg.data.channels == 3
    assert cfg.schedule.timesteps == 1000 and cfg.schedule.kind == "linear"
    assert cfg.model.time_dim == 128 and cfg.model.text_dim == 512
    assert cfg.model.cond_drop_prob == pytest.approx(0.1)
    assert cfg.text_encoder._target_ == "diffusion_lit.text.CLIPEncoder"
    assert cfg.data.num_workers == 2
    # the seed's training, whatever the defaults become
    assert cfg.schedule.prediction == "eps" and not cfg.schedule.zero_terminal_snr
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.weight_decay == 0
    assert cfg.lr_scheduler is None and cfg.min_snr_gamma is None
    assert cfg.trainer.gradient_clip_val is None


def test_the_emoji_experiment_is_the_seeds_enhanced_unet_in_rgb_with_its_held_out_pairs(
    tmp_path,
):
    cfg = compose_train(["experiment=emoji"], run_dir=tmp_path)
    assert cfg.model._target_ == "diffusion_lit.models.TextGuidedUNet" and cfg.model.cross_attention
    assert cfg.data.channels == 3 and cfg.data.image_size == 32 and not cfg.data.hflip
    assert cfg.data.dataset._target_ == "diffusion_lit.data.emoji.Emoji"
    assert "thumbs up sign" in cfg.data.heldout.dark and "tulip" in cfg.data.heldout.twitter
    assert cfg.trainer.max_time == "00:01:00:00"
    seed_size = compose_train(["experiment=emoji_56"], run_dir=tmp_path)  # the seed's 56 px
    assert seed_size.data.image_size == seed_size.model.image_size == 56
    assert seed_size.model.base_channels == cfg.model.base_channels
    assert seed_size.data.heldout == cfg.data.heldout
    assert seed_size.trainer.max_time == "00:02:00:00"


def test_quickstart_experiment_runs_on_cpu_with_digits(tmp_path):
    from diffusion_lit.diffusion.guidance import Guidance
    from diffusion_lit.training.config import own_guidance

    cfg = compose_train(["experiment=quickstart"], run_dir=tmp_path)
    assert cfg.data.dataset._target_ == "diffusion_lit.data.Digits"
    assert cfg.trainer.accelerator == "cpu"
    # its models sample with the guidance its sweep chose (bench/RESULTS.md)
    assert own_guidance(cfg) == Guidance(1.25, (0.0, 0.7), attribute_scale=5.0)


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_compose(debug, tmp_path):
    cfg = compose_train([f"debug={debug}"], run_dir=tmp_path)
    assert cfg.trainer.accelerator == "cpu"


def test_unknown_option_is_refused():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="nope"):
        compose_train(["model=nope"])


def test_the_sampling_defaults_agree_everywhere(tmp_path):
    """DPM-Solver++(2M) SDE, 25 steps at its η = 1.5 (chosen in bench/step_grids.py and
    bench/sampling.py) and the model's own guidance (null/None:
    its spec's guidance, 1.5 over the whole denoising unless its training chose other), from one
    owner: the sample and evaluate CLIs and the training grids get SamplingOptions' fields."""
    import dataclasses

    from hydra import compose, initialize_config_dir

    from diffusion_lit.diffusion.guidance import Guidance
    from diffusion_lit.diffusion.options import SamplingOptions
    from diffusion_lit.training.config import own_guidance

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        clis = [compose(name, overrides=["ckpt_path=x"]) for name in ("sample", "evaluate")]
    cfg = compose_train([], run_dir=tmp_path)
    defaults = dataclasses.asdict(SamplingOptions())
    for source in [*clis, cfg.callbacks.sample_grid]:
        assert {k: source[k] for k in defaults} == defaults
        assert SamplingOptions.from_config(source) == SamplingOptions()
    assert (defaults["sampler"], defaults["steps"], defaults["eta"]) == ("dpmpp_2m_sde", 25, None)
    assert SamplingOptions().noise_level == 1.5 and defaults["guidance_scale"] is None
    assert defaults["guidance_interval"] is None
    assert own_guidance(cfg) == Guidance() == Guidance(1.5, (0, 1))
