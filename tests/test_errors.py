"""Bad input from the command line: one line naming the problem and the fix, exit status 2, no
traceback, and nothing already saved lost."""

import errno
import os
import sys

import pytest
import torch
from PIL import Image

from diffusion_lit import sample, train
from diffusion_lit.data import FlowerFolder

from conftest import CONF_DIR, TINY, assert_one_line


def flowers(tmp_path, names, image=None):
    root = tmp_path / "flowers"
    root.mkdir(exist_ok=True)
    for name in names:
        if image is None:
            Image.new("RGB", (12, 12), (200, 30, 30)).save(root / name)
        else:
            (root / name).write_bytes(image)
    return root


FLOWERS = [*TINY, "data=flowers", "data.num_workers=0", "data.persistent_workers=false"]


@pytest.mark.parametrize(
    ("setup", "overrides", "fragments"),
    [
        (lambda p: p / "nope", [], ["does not exist", "data.root"]),
        (lambda p: flowers(p, []), [], ["No .jpg/.jpeg/.png images", "data.root"]),
        (lambda p: flowers(p, ["tulip_0.jpg", "daisy.jpg"]), [], ["daisy.jpg", "rename it"]),
        (lambda p: flowers(p, ["a_0.jpg", "b_0.jpg"], b"\xff\xd8 garbage"), [], ["can be read"]),
        (lambda p: flowers(p, ["a_0.jpg", "b_0.jpg"]), ["data.image_size=10"], ["multiple of 4"]),
    ],
    ids=["missing", "empty", "no-underscore", "all-corrupt", "size-not-divisible-by-4"],
)
def test_bad_data_is_one_clear_line(tmp_path, monkeypatch, run_cli, setup, overrides, fragments):
    monkeypatch.chdir(tmp_path)
    root = setup(tmp_path)
    args = [*FLOWERS, f"data.root={root}", *overrides]
    assert_one_line(*run_cli(train.main, args), *fragments)


def test_clip_offline_names_the_offline_encoder(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    status, stderr = run_cli(train.main, [*TINY, "text_encoder=clip"])
    assert_one_line(status, stderr, "text_encoder=minilm")


def test_unknown_config_option_gets_hydras_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prog", "--config-path", CONF_DIR, "model=nope"])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    stderr = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in stderr
    assert "Could not find 'model/nope'" in stderr and "simple" in stderr  # it lists the options


def test_resume_from_nothing_or_another_model(trained_run, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    args = [*TINY, "ckpt_path=last", f"paths.output_dir={tmp_path}"]
    assert_one_line(*run_cli(train.main, args), "ckpt_path=last", "train")
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    args = [*TINY, "model=enhanced", f"ckpt_path={ckpt}"]
    status, stderr = run_cli(train.main, args)
    assert_one_line(status, stderr, "holds another model", "model=simple in the checkpoint")


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("call", ["torch.save", "os.replace"], ids=["checkpoint", "any-file"])
def test_unwritable_run_folder_keeps_the_saved_checkpoint(
    trained_run, tmp_path, monkeypatch, run_cli, failure, call
):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes((trained_run[0] / "checkpoints" / "last.ckpt").read_bytes())
    before = ckpt.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(failure, os.strerror(failure))

    module, name = call.split(".")
    monkeypatch.setattr(torch if module == "torch" else os, name, fail)
    args = [*TINY, "trainer.max_epochs=3", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/run"]
    status, stderr = run_cli(train.main, args)
    assert_one_line(status, stderr, "Cannot write", os.strerror(failure), "untouched")
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]  # no temporary files


def test_sampling_bad_input(trained_run, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    base = [f"ckpt_path={ckpt}", "steps=2", "num_images=1", "device=cpu"]
    status, stderr = run_cli(sample.main, [*base, "prompts=[]"])
    assert_one_line(status, stderr, "prompt list is empty")
    (tmp_path / "file").write_text("")
    status, stderr = run_cli(sample.main, [*base, f"out_dir={tmp_path}/file/x"])
    assert_one_line(status, stderr, "Cannot write images", "out_dir=")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    status, stderr = run_cli(sample.main, [f"ckpt_path={foreign}"])
    assert_one_line(status, stderr, "not a diffusion_lit model")


@pytest.mark.parametrize(
    ("mode", "color", "suffix"),
    [
        ("L", 128, "png"),
        ("P", 3, "png"),
        ("RGBA", (10, 20, 30, 0), "png"),
        ("LA", (10, 0), "png"),
        ("CMYK", (0, 50, 100, 0), "jpg"),
        ("I;16", 3000, "png"),
    ],
)
def test_flower_images_of_any_mode_load_as_rgb(tmp_path, mode, color, suffix):
    root = tmp_path / "flowers"
    root.mkdir()
    Image.new(mode, (10, 12), color).save(root / f"aster_0.{suffix}")
    image, label = FlowerFolder(root)[0]
    assert image.mode == "RGB" and image.size == (10, 12) and label == 0
