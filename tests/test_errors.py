"""Bad input from the command line: one line naming the problem and the fix, exit status 2, no
traceback, and nothing already saved lost."""

import errno
import os
import sys

import pytest
import torch
from PIL import Image

from diffusion_lit import pipeline, sample, train
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
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"  # a resume writes into the run's dir:
    ckpt.parent.mkdir(parents=True)  # a copy, so the shared run stays as it was
    ckpt.write_bytes((trained_run[0] / "checkpoints" / "last.ckpt").read_bytes())
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
    assert_one_line(status, stderr, "prompts=[] is not a list of non-empty texts")
    (tmp_path / "file").write_text("")
    status, stderr = run_cli(sample.main, [*base, f"out_dir={tmp_path}/file/x"])
    assert_one_line(status, stderr, "cannot be a folder", "file is a file")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pipeline, "save_image", disk_full)
    status, stderr = run_cli(sample.main, [*base, f"out_dir={tmp_path}/out"])
    assert_one_line(status, stderr, "Cannot write images", "No space left", "out_dir=")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
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


# the mistakes of issue 15, each through its command line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["ckpt_path={empty}"], ["is empty (0 bytes)"]),
        (["guidance_scale=nan"], ["guidance_scale=nan is not a finite number"]),
        (["device=cuda"], ["device='cuda' names a CUDA GPU", "device=cpu"]),
        (["num_images=0"], ["num_images=0 is not an integer from 1"]),
        (["steps=1"], ["visits only t=0", "timestep_spacing=trailing"]),
        (["precision=16"], ["precision=16 is not one of auto, 32, bf16-mixed"]),
        (["guidance_interval=[0.8,0.2]"], ["guidance_interval=[0.8, 0.2] is not [start, stop]"]),
    ],
    ids=[
        "zero-byte-ckpt",
        "nan-guidance",
        "cuda-without-gpu",
        "no-images",
        "one-step",
        "fp16",
        "reversed-interval",
    ],
)
def test_sampling_values_are_checked_first(
    trained_run, tmp_path, monkeypatch, run_cli, args, fragments
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    base = [f"ckpt_path={ckpt}", "steps=2", "num_images=1", f"out_dir={tmp_path}/out"]
    args = [a.format(empty=tmp_path / "empty.ckpt") for a in args]
    assert_one_line(*run_cli(sample.main, [*base, *args]), *fragments)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_one_prompt_as_a_string_is_a_one_prompt_list(trained_run, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)  # Hydra's job folder goes under outputs/ here, not in the repo
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "prompts=Draw a six", "steps=2", "num_images=2",
            f"out_dir={tmp_path}/out", "device=cpu"]  # fmt: skip
    status, _ = run_cli(sample.main, args)
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["draw_a_six", "grid.png"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["data.batch_size=0"], ["data.batch_size=0 is not an integer from 1"]),
        (["optimizer.lr=-0.001"], ["optimizer.lr=-0.001 is not a finite number > 0"]),
        (["trainer.accelerator=gpu"], ["The trainer refuses its settings", "trainer."]),
        (["data.prompt_templates='Draw a {nom}'"], ["{name} or {Name}"]),
        (["seed=-1"], ["seed=-1 is not an integer"]),
        (["data.class_synonyms={seven: [7]}"], ["data.class_synonyms", "lists of names"]),
        (["+data.class_synonyms.sixx=[VI]"], ["names ['sixx']", "classes are"]),
    ],
    ids=[
        "batch-size-0",
        "negative-lr",
        "gpu-without-gpu",
        "bad-template",
        "negative-seed",
        "synonym-not-text",
        "synonym-of-no-class",
    ],  # fmt: skip
)
def test_training_values_are_checked_first(tmp_path, monkeypatch, run_cli, args, fragments):
    monkeypatch.chdir(tmp_path)
    status, stderr = run_cli(train.main, [*TINY, f"hydra.run.dir={tmp_path}/run", *args])
    assert_one_line(status, stderr, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["model.cond_drop_prob=1"], ["model.cond_drop_prob=1 is not a finite number ≥ 0 and < 1"]),
        (["data.channels=2"], ["data.channels=2 is not 1 (grayscale) or 3 (RGB)"]),
        (["schedule.timesteps=1"], ["schedule.timesteps=1 is not an integer from 2"]),
        (["model=enhanced", "model.attention_heads=3"], ["model.attention_heads=3", "divisor"]),
        (["lr_scheduler.min_lr_ratio=2"], ["lr_scheduler.min_lr_ratio=2 is not"]),
        (["callbacks.sample_grid.sampler=euler"], ["callbacks.sample_grid.sampler='euler'"]),
    ],
    ids=["no-prompt-ever", "two-channels", "one-step", "heads", "lr-ratio", "grid-sampler"],
)
def test_a_value_its_owner_refuses_stops_the_run_before_the_text_encoder_loads(
    tmp_path, monkeypatch, run_cli, args, fragments
):
    """One owner for each value: the class that takes it checks it, as the command builds it,
    before anything slow; the command names it as the config does."""
    from diffusion_lit.text.encoders import TextEncoder

    def never(*args, **kwargs):
        raise AssertionError("the text encoder was loaded before the bad value was refused")

    monkeypatch.setattr(TextEncoder, "__init__", never)
    monkeypatch.chdir(tmp_path)
    status, stderr = run_cli(train.main, [*TINY, f"hydra.run.dir={tmp_path}/run", *args])
    assert_one_line(status, stderr, *fragments)


def test_unreadable_flowers_with_loader_workers_is_one_line(tmp_path, monkeypatch, run_cli):
    """Found in the main process at start-up, not as a worker's wrapped traceback."""
    monkeypatch.chdir(tmp_path)
    root = flowers(tmp_path, ["a_0.jpg", "b_0.jpg"], b"\xff\xd8 garbage")
    args = [*TINY, "data=flowers", f"data.root={root}", "data.num_workers=2"]
    assert_one_line(*run_cli(train.main, args), "None of the 2 images", "data.root")


def test_any_trainer_argument_is_a_plain_override(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    args = [*TINY, "trainer.limit_train_batches=3", "trainer.fast_dev_run=true",
            f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    status, stderr = run_cli(train.main, args)
    assert status == 0, stderr[-2000:]
