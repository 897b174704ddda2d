"""A model's own sampling: the guidance its training config (or an export) chose is saved with it
and is what every way of sampling it uses unless told otherwise — the Python API, the sample
and evaluate CLIs, the page and the training grids. Files that record none sample as before."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diffusion_lit import cli, export, sample
from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.page.actions import Limits, Models, Page
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.train import train

from conftest import CONF_DIR, TINY, assert_one_line, compose_train

CHOSEN = {"guidance_scale": 3.0, "guidance_interval": [0.4, 1.0]}
OPTIONS = ["own_sampling.guidance_scale=3", "own_sampling.guidance_interval=[0.4,1]"]


@pytest.fixture(scope="module")
def chosen_run(tmp_path_factory):
    """A tiny run trained with guidance 3 on [0.4, 1] as the model's own."""
    run_dir = tmp_path_factory.mktemp("chosen") / "run"
    train(compose_train([*TINY, *OPTIONS], run_dir=run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def draw(pipe: TextToImage, **guidance) -> torch.Tensor:
    return pipe(["Draw a six"], num_images=2, steps=5, seed=0, progress=False, **guidance).images


def test_the_checkpoint_samples_with_the_guidance_its_training_chose(chosen_run, trained_run):
    pipe = TextToImage.from_checkpoint(chosen_run, device="cpu")
    assert pipe.spec.guidance.to_dict() == CHOSEN
    by_default = draw(pipe)
    torch.testing.assert_close(by_default, draw(pipe, **CHOSEN), rtol=0, atol=0)
    assert not torch.equal(by_default, draw(pipe, guidance_scale=1.5))
    # the interval alone is the model's when only the scale is given
    torch.testing.assert_close(
        draw(pipe, guidance_scale=2.0), draw(pipe, guidance_scale=2.0, guidance_interval=(0.4, 1))
    )
    # a model trained without a choice samples with the project's defaults
    plain = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")
    assert plain.spec.guidance == Guidance() == Guidance(1.5, (0, 1))


def test_the_sample_cli_draws_the_models_guidance_unless_told(
    chosen_run, tmp_path, monkeypatch, run_cli
):
    monkeypatch.chdir(tmp_path)  # Hydra's job folders go under outputs/ here, not in the repo
    common = [f"ckpt_path={chosen_run}", "prompts=[Draw a six]", "num_images=2", "steps=5"]
    for name, extra in [
        ("default", []),
        ("explicit", ["guidance_scale=3", "guidance_interval=[0.4,1]"]),
        ("other", ["guidance_scale=1.5"]),
    ]:
        status, stderr = run_cli(sample.main, [*common, *extra, f"out_dir={tmp_path / name}"])
        assert status == 0, stderr[-2000:]
    grid = {name: (tmp_path / name / "grid.png").read_bytes() for name in ("default", "explicit")}
    assert grid["default"] == grid["explicit"]
    assert (tmp_path / "other" / "grid.png").read_bytes() != grid["default"]


def test_an_export_records_the_guidance_chosen_for_it(trained_run, tmp_path):
    """The way to give a finished model its guidance after a sweep: export it with the choice."""
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "export",
            overrides=[f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'export'}", "grid_steps=2",
                       "guidance_scale=3", "guidance_interval=[0.4,1]"],
        )  # fmt: skip
    folder = export.export(cfg)
    recorded = json.loads((folder / "config.json").read_text())["spec"]["sampling"]
    assert recorded == CHOSEN | {"nearest_prompt": True}  # a class-prompt model's reading
    assert "guidance 3 on [0.4, 1]" in (folder / "README.md").read_text()
    exported = TextToImage.from_checkpoint(folder, device="cpu")
    original = TextToImage.from_checkpoint(ckpt, device="cpu")
    torch.testing.assert_close(draw(exported), draw(original, **CHOSEN), rtol=0, atol=0)
    # the page's guidance slider starts at the model's own
    models = Models("cpu", tmp_path, ckpt, allow_any_path=True)  # the export lies in no run
    page = Page(models, tmp_path, tmp_path / "demo", Limits(), cli.compose("sample"))
    assert page.describe_model(str(folder), True, 5)[2].value == 3.0
    assert page.describe_model(str(ckpt), True, 5)[2].value == 1.5


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["own_sampling.guidance_scale=-1"],
            ["own_sampling.guidance_scale=-1 is not a finite number ≥ 0"],
        ),
        (["own_sampling.guidance_interval=[0.5]"], ["own_sampling.guidance_interval=[0.5] is not"]),
    ],
    ids=["negative-scale", "one-number-interval"],
)
def test_a_bad_sampling_choice_stops_training_before_it_starts(
    tmp_path, monkeypatch, run_cli, args, fragments
):
    from diffusion_lit.train import main

    monkeypatch.chdir(tmp_path)
    status, stderr = run_cli(main, [*TINY, f"hydra.run.dir={tmp_path}/run", *args])
    assert_one_line(status, stderr, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "sampling",
    [
        {"guidance_scale": "3"},
        {"guidance_scale": float("inf")},
        {"steps": 5},
        [1.5, [0, 1]],
        {"guidance_scale": "${canary:}"},
    ],
    ids=["text", "infinite", "unknown-key", "not-a-mapping", "interpolation"],
)
def test_a_model_file_with_damaged_sampling_settings_is_one_line(
    trained_run, tmp_path, monkeypatch, run_cli, sampling
):
    monkeypatch.chdir(tmp_path)
    called = []  # a file's text is never resolved as an OmegaConf interpolation
    OmegaConf.register_new_resolver("canary", lambda: called.append(1) or 3.0, replace=True)
    ckpt = torch.load(trained_run[0] / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["sampling"] = sampling
    torch.save(ckpt, tmp_path / "model.ckpt")
    status, stderr = run_cli(sample.main, [f"ckpt_path={tmp_path / 'model.ckpt'}", "device=cpu"])
    assert_one_line(status, stderr, "model.ckpt is damaged", "sampling settings")
    assert not called
