"""Export folders: pickle-free files that sample exactly like the checkpoint, a model card, and
clear errors for files of another model."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from diffusion_lit.errors import UserError
from diffusion_lit.export import export
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.sample import sample

from conftest import CONF_DIR


def export_cfg(**overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("export", overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    run_dir = trained_run[0]
    out_dir = tmp_path_factory.mktemp("export") / "model"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert export(export_cfg(ckpt_path=ckpt, out_dir=out_dir)) == out_dir
    return ckpt, out_dir


def samples(path, **kwargs):
    pipe = TextToImage.from_checkpoint(path, device="cpu", **kwargs)
    return pipe(None, num_images=2, steps=6, seed=3, progress=False).images


def test_export_writes_weights_prompts_config_and_model_card(exported):
    ckpt, out_dir = exported
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "grid.png",
        "model.safetensors",
        "prompts.safetensors",
    ]
    config = json.loads((out_dir / "config.json").read_text())
    spec = config["spec"]
    assert config["image_size"] == 8 and config["channels"] == 1 and config["version"] == 5
    assert spec["net"]["kind"] == "simple" and spec["text_encoder"]["kind"] == "minilm"
    assert spec["schedule"]["timesteps"] == 20
    assert spec["class_prompts"][6][:2] == ["Draw a six", "a handwritten six"]
    assert config["source"]["weights"] == "EMA" and config["source"]["epochs"] == 2
    card = (out_dir / "README.md").read_text()
    assert "after 2 epochs" in card and "2 epochs in `accuracy_log.txt`" in card
    assert "Best val/loss" in card and "![samples](grid.png)" in card
    assert not list(out_dir.parent.glob(".model.*"))  # the staging folder is gone


def test_export_samples_exactly_like_the_checkpoint(exported, tmp_path):
    ckpt, out_dir = exported
    assert torch.equal(samples(out_dir), samples(ckpt))  # EMA weights by default
    raw_dir = export(export_cfg(ckpt_path=ckpt, out_dir=tmp_path / "raw", use_ema=False))
    assert torch.equal(samples(raw_dir), samples(ckpt, use_ema=False))
    assert not torch.equal(samples(raw_dir), samples(out_dir))
    # and the sampling CLI takes the folder
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[f"ckpt_path={out_dir}", "steps=4", "num_images=1", f"out_dir={tmp_path}/s"],
        )
    assert sample(cfg).is_file()


def test_export_never_overwrites_unless_asked(exported):
    ckpt, out_dir = exported
    with pytest.raises(UserError, match="already exists: pass overwrite=true"):
        export(export_cfg(ckpt_path=ckpt, out_dir=out_dir))
    (out_dir / "README.md").write_text("edited")
    export(export_cfg(ckpt_path=ckpt, out_dir=out_dir, overwrite=True))
    assert (out_dir / "README.md").read_text() != "edited"


def test_weights_of_another_shape_name_what_does_not_match(exported, tmp_path):
    _, out_dir = exported
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in out_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["spec"]["net"]["base_channels"] = 8  # the weights are for 4
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"does not fit .* of another shape, file vs model"):
        TextToImage.from_checkpoint(broken)
    with pytest.raises(UserError, match="is not a diffusion_lit export: it needs"):
        TextToImage.from_checkpoint(tmp_path)


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/diffusion_lit_pwned"),))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"state_dict": {}}, "not a diffusion_lit model"),  # someone else's checkpoint
        (torch.nn.Linear(2, 2), "not a readable diffusion_lit checkpoint"),  # a pickled module
        (Payload(), "not a readable diffusion_lit checkpoint"),  # code that would run on load
    ],
)
def test_foreign_checkpoints_are_refused_without_running_their_code(tmp_path, content, message):
    Path("/tmp/diffusion_lit_pwned").unlink(missing_ok=True)
    path = tmp_path / "foreign.ckpt"
    torch.save(content, path, pickle_module=pickle)
    with pytest.raises(UserError, match=message):
        TextToImage.from_checkpoint(path)
    assert not Path("/tmp/diffusion_lit_pwned").exists()
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="not a readable diffusion_lit checkpoint"):
        TextToImage.from_checkpoint(path)
