import csv
import logging
import math
import os
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from diffusion_lit.diffusion.precision import native_bf16
from diffusion_lit.errors import UserError
from diffusion_lit.pipeline import TextToImage, slugify
from diffusion_lit.sample import sample
from diffusion_lit.text import TextEncoderUnavailable
from diffusion_lit.train import train

from conftest import CONF_DIR, TINY, compose_train, finish, start_training


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_train_writes_checkpoints_logs_and_samples(trained_run):
    run_dir, metrics, _ = trained_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    lines = (run_dir / "accuracy_log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" : ")[0] for line in lines] == ["Epoch#0", "Epoch#1"]
    assert float(lines[-1].split("≈")[1]) == pytest.approx(metrics["train/pseudo_acc"], abs=1e-4)
    rows = read_csv(run_dir / "logs" / "metrics.csv")
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"train/loss", "train/pseudo_acc", "val/loss", "val/pseudo_acc"} <= logged
    assert (run_dir / "samples" / "final.png").is_file()


def test_checkpoint_holds_everything_sampling_needs(trained_run):
    run_dir, _, _ = trained_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["version"] == 5 and hp["net"]["kind"] == "simple"
    assert hp["schedule"]["timesteps"] == 20 and hp["schedule"]["kind"] == "cosine"
    assert hp["text_encoder"]["kind"] == "minilm" and hp["text_encoder"]["dim"] == 384
    assert set(hp) == {
        "version", "net", "schedule", "text_encoder", "class_names", "class_prompts",
        "attributes", "sampling", "lineage", "adapter", "synonyms",
    }  # fmt: skip
    assert hp["lineage"] == [] and hp["adapter"] is None  # trained from scratch, all its weights
    assert hp["sampling"] == {"guidance_scale": 1.5, "guidance_interval": [0.0, 1.0],
                              "nearest_prompt": True}  # fmt: skip
    assert hp["attributes"] == {}  # TINY trains on class prompts
    assert hp["class_prompts"][6][0] == "Draw a six" and hp["class_names"][6] == "six"
    assert "Draw a 6" in hp["class_prompts"][6]  # the vocabulary: templates × name and numeral
    assert ckpt["state_dict"]["prompts.pooled"].shape == (320, 384)  # every prompt, encoded once


@pytest.mark.slow
def test_overfitting_one_batch_drives_the_loss_down(tiny_cfg):
    cfg = tiny_cfg(
        "debug=overfit",
        "trainer.max_epochs=150",
        "optimizer.lr=5e-3",
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
    )
    train(cfg)
    rows = read_csv(cfg.paths.run_dir / Path("logs/metrics.csv"))
    losses = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    assert len(losses) == 150
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_sample_cli_writes_one_folder_per_prompt_and_a_grid(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "sample",
            overrides=[
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                'prompts=["Draw a six","Draw a one!"]',
                "num_images=3",
                "steps=20",
                "seed=0",
                "device=cpu",
                f"out_dir={tmp_path / 'samples'}",
            ],
        )
    grid = sample(cfg)
    assert grid == tmp_path / "samples" / "grid.png" and grid.is_file()
    for slug in ["draw_a_six", "draw_a_one"]:
        assert sorted(p.name for p in (tmp_path / "samples" / slug).iterdir()) == [
            "000.png",
            "001.png",
            "002.png",
        ]


def test_python_api_is_reproducible_and_takes_free_form_prompts(trained_run):
    run_dir, _, _ = trained_run
    pipe = TextToImage.from_checkpoint(run_dir / "checkpoints" / "last.ckpt", device="cpu")
    assert len(pipe.default_prompts) == 10
    a = pipe(
        ["Draw a six", "a hand-written 6"], num_images=2, steps=10, seed=1, progress=False
    ).images
    b = pipe(
        ["Draw a six", "a hand-written 6"], num_images=2, steps=10, seed=1, progress=False
    ).images
    c = pipe(
        ["Draw a six", "a hand-written 6"], num_images=2, steps=10, seed=2, progress=False
    ).images
    assert a.shape == (2, 2, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert pipe.to_pil(a)[1][0].size == (8, 8)
    with pytest.raises(UserError, match="empty"):
        pipe([], steps=2)


@pytest.mark.parametrize(
    ("sampler", "eta"),
    [
        ("ddpm", None),
        ("ddim", 0.0),
        ("ddim", 1.0),
        ("dpmpp_2m", None),
        ("dpmpp_2m_sde", None),
        ("dpmpp_2m_sde", 1.0),
    ],  # fmt: skip
)
def test_same_seed_gives_bit_identical_samples_on_cpu(trained_run, sampler, eta):
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    runs = [
        TextToImage.from_checkpoint(ckpt, device="cpu")(
            None, num_images=3, sampler=sampler, steps=8, eta=eta, seed=7, progress=False
        ).images
        for _ in range(2)  # two separate loads of the checkpoint
    ]
    assert torch.equal(runs[0], runs[1])


def test_bf16_sampling_draws_the_fp32_images_up_to_rounding(trained_run):
    pipe = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", device="cpu")
    kw = dict(num_images=4, steps=8, seed=3, progress=False)
    fp32 = pipe(None, **kw, precision="32").images
    bf16 = pipe(None, **kw, precision="bf16-mixed").images
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # it did run in bf16
    assert (fp32 - bf16).abs().mean() < 0.02  # of a [0, 1] range: the same pictures
    # the default, auto: bf16 where this CPU computes it natively
    assert torch.equal(pipe(None, **kw).images, bf16 if native_bf16("cpu") else fp32)


def test_pipeline_reports_steps_over_all_batches(trained_run):
    pipe = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", device="cpu")
    seen = []
    record = lambda done, total: seen.append((done, total))  # noqa: E731
    images = pipe(["Draw a six", "Draw a one"], 3, steps=4, batch_size=4, progress=False,
                  callback=record).images  # fmt: skip
    assert images.shape[:2] == (2, 3)
    assert seen == [(k, 8) for k in range(1, 9)]  # 6 images in batches of 4: two runs of 4 steps


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="ckpt_path="):
        TextToImage.from_checkpoint(tmp_path / "nope.ckpt")


def test_slugify():
    assert slugify("Draw a six") == "draw_a_six"
    assert slugify("  Orchids!! (pink)  ") == "orchids_pink"


def test_wandb_logger_goes_offline_without_an_api_key(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login either
    cfg = tiny_cfg("logger=wandb", "trainer.max_epochs=1", "callbacks.sample_grid.every_n_epochs=1")
    train(cfg)
    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs
    assert list(runs[0].glob("files/media/images/samples_*.png"))  # the grid went to wandb


def test_clip_unavailable_stops_training_before_any_work(tiny_cfg):
    cfg = tiny_cfg("text_encoder=clip")
    with pytest.raises(TextEncoderUnavailable, match="text_encoder=minilm"):
        train(cfg)
    assert not (cfg.paths.run_dir / Path("checkpoints")).exists()


def test_image_size_the_unet_cannot_take_is_refused_before_training(tiny_cfg):
    with pytest.raises(UserError, match=r"image_size=10 .*data.image_size"):
        train(tiny_cfg("data.image_size=10"))


@pytest.mark.parametrize("model", ["simple", "enhanced"])
def test_flowers_train_end_to_end_in_rgb(tmp_path, model):
    from PIL import Image

    root = tmp_path / "flowers"
    root.mkdir()
    for i in range(12):
        name = ["orchids", "tulips", "daisy"][i % 3]
        Image.new("RGB", (24, 20), (40 * i % 255, 90, 200)).save(root / f"{name}_{i}.jpg")
    overrides = [o for o in TINY if not o.startswith("data")]
    cfg = compose_train(
        [
            *overrides,
            "data=flowers",
            f"data.root={root}",
            "data.image_size=8",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.pin_memory=false",
            "data.val_fraction=0.25",
            f"data.measure_cache={tmp_path}",
            "debug=fdr",
            f"model={model}",
        ],
        run_dir=tmp_path / "run",
    )
    metrics, objects = train(cfg)
    spec = objects["module"].spec
    assert [prompts[:2] for prompts in spec.class_prompts] == [
        ["Daisy", "Draw a daisy"],
        ["Orchids", "Draw a orchids"],
        ["Tulips", "Draw a tulips"],
    ]
    # and captions naming each photo's colour, measured from it
    colours = spec.attributes["colour"]
    assert colours and set(colours) <= {"blue", "purple", "pink", "red"}
    assert f"a {colours[0]} daisy" in spec.class_prompts[0]
    assert objects["module"].net.in_channels == 3 and "train/loss" in metrics


def test_bf16_mixed_precision_trains_on_cpu(tiny_cfg):
    metrics, _ = train(tiny_cfg("trainer.precision=bf16-mixed", "trainer.max_epochs=1"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.slow
def test_multirun_gives_one_run_dir_per_value(tmp_path):
    args = [
        "-m",
        *[o for o in TINY if not o.startswith("model.base_channels=")],
        "model.base_channels=4,8",
        "trainer.max_epochs=1",
        "~callbacks.sample_grid",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    finish(start_training(args, cwd=tmp_path))
    runs = sorted(r for r in (tmp_path / "sweep").iterdir() if r.is_dir())
    assert [r.name for r in runs] == ["0", "1"]
    for run, width in zip(runs, [4, 8], strict=True):
        assert (run / "checkpoints" / "last.ckpt").is_file()
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["hyper_parameters"]["net"]["base_channels"] == width


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_the_recipe_options_train_sample_and_export(tiny_cfg, tmp_path, prediction):
    """v or x_0 prediction (v with a zero-terminal-SNR schedule), min-SNR-γ weighting, AdamW,
    warm-up and cosine decay, gradient clipping: a run trains, logs its learning rate, and its
    checkpoint and export sample the same finite images with every sampler."""
    from diffusion_lit.export import export

    cfg = tiny_cfg(
        f"schedule.prediction={prediction}", f"schedule.zero_terminal_snr={prediction == 'v'}",
        "min_snr_gamma=5", "lr_scheduler.warmup_steps=2", "lr_scheduler.cosine=true",
        "optimizer._target_=torch.optim.AdamW", "optimizer.weight_decay=0.01",
        "trainer.gradient_clip_val=1.0", "trainer.max_epochs=3",
    )  # fmt: skip
    metrics, _ = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    run_dir = Path(cfg.paths.run_dir)
    rates = [float(r["lr-AdamW"]) for r in read_csv(run_dir / "logs/metrics.csv") if r["lr-AdamW"]]
    assert rates[0] < rates[1] and rates[-1] < rates[1]  # up in the warm-up, then down
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    spec = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert spec["schedule"]["prediction"] == prediction
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        export_cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out_dir={tmp_path}/e"])
    folder = export(export_cfg)
    for sampler in ["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"]:
        images = [
            TextToImage.from_checkpoint(path, device="cpu")(
                None, num_images=1, sampler=sampler, steps=5, seed=0, progress=False
            ).images
            for path in (ckpt, folder)
        ]
        assert torch.isfinite(images[0]).all() and torch.equal(images[0], images[1])


def test_a_prompt_unlike_every_training_prompt_is_drawn_with_a_one_line_warning(
    trained_run, tmp_path, caplog
):
    run_dir, _, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    pipe = TextToImage.from_checkpoint(ckpt, device="cpu")
    kw = dict(num_images=1, steps=2, progress=False)
    # trained / a rephrasing
    assert not pipe(["Draw a six", "please sketch the number six"], **kw).unfamiliar
    out = pipe(["a red car"], **kw)
    assert out.images.shape[:2] == (1, 1)  # still drawn
    [note] = out.unfamiliar
    assert re.fullmatch(
        r"'a red car' is not like any training prompt; nearest: '.+' \(0\.\d\d\)", note
    )
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        overrides = [f"ckpt_path={ckpt}", "prompts=[a red car]", "num_images=1", "steps=2"]
        cfg = compose("sample", overrides=[*overrides, f"out_dir={tmp_path}"])
    with caplog.at_level(logging.WARNING, logger="diffusion_lit.sample"):
        sample(cfg)
    assert [r.getMessage() for r in caplog.records] == [note]  # the CLI's one warning line


def test_a_rephrasing_is_drawn_as_its_nearest_training_prompt_unless_told_otherwise(trained_run):
    run_dir, _, _ = trained_run
    pipe = TextToImage.from_checkpoint(run_dir / "checkpoints" / "last.ckpt", device="cpu")
    kw = dict(num_images=2, steps=3, seed=1, progress=False)
    rephrasing = "please sketch the number six"
    [found] = pipe.read([rephrasing])
    snapped = pipe([rephrasing, "Draw a one"], **kw)
    assert snapped.drawn_as == [found.nearest, "Draw a one"]
    assert snapped.substitutions == [
        f"{rephrasing!r} is drawn as the training prompt {found.nearest!r}"
    ]
    assert torch.equal(snapped.images, pipe([found.nearest, "Draw a one"], **kw).images)
    own = pipe([rephrasing, "Draw a one"], **kw, nearest_prompt=False)
    assert own.drawn_as == [rephrasing, "Draw a one"] and not own.substitutions
    assert (own.images[0] - snapped.images[0]).abs().max() > 1e-2
    # the training prompt, encoded in another batch: the same to rounding (bit-equal with
    # AVX-512 kernels, 2e-6 apart with AVX2 ones)
    torch.testing.assert_close(own.images[1], snapped.images[1], atol=1e-5, rtol=0)


def test_sample_cli_lists_what_the_model_can_draw(trained_run, capsys):
    run_dir, _, _ = trained_run
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        cfg = compose("sample", overrides=[f"ckpt_path={ckpt}", "prompts=list"])
    assert sample(cfg) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert lines[6].startswith("six: Draw a six | a handwritten six") and "| 6" in lines[6]


def test_a_list_of_many_captions_shows_a_few_of_each_class_and_searches_them(
    trained_run, capsys, monkeypatch
):
    """A model of thousands of captions (here: more than the bound, lowered) lists a few of
    each class, says how many it has, and finds the captions that say some words."""
    import diffusion_lit.pipeline as pipeline

    monkeypatch.setattr(pipeline, "LISTED", 50)
    run_dir, _, _ = trained_run
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        summary = compose("sample", overrides=[f"ckpt_path={ckpt}", "prompts=list"])
        search = compose("sample", overrides=[f"ckpt_path={ckpt}", "prompts=list",
                                              "search='6 Scribbled'"])  # fmt: skip
    sample(summary)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and lines[6].endswith("… (32 in all)") and "search=" in lines[-1]
    assert lines[6].count(" | ") == 2  # three of them
    sample(search)
    assert capsys.readouterr().out.splitlines() == ["six: a scribbled 6"]  # each word, any order
    pipe = TextToImage.from_checkpoint(ckpt, "cpu")
    assert pipe.vocabulary("zebra") == ["No training caption says 'zebra'."]


def test_the_run_says_how_long_it_will_take_a_few_steps_in(tiny_cfg, caplog):
    """Steps left × the measured seconds a step: 8 steps in all, measured over steps 2–4."""
    from diffusion_lit.train import train
    from diffusion_lit.training.callbacks import duration

    cfg = tiny_cfg("trainer.max_epochs=4", "callbacks.time_estimate.start=1",
                   "callbacks.time_estimate.steps=3")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="diffusion_lit.training.callbacks"):
        train(cfg)
    [line] = [r.getMessage() for r in caplog.records if "will take about" in r.getMessage()]
    assert "on this machine: 4 steps at " in line and "(measured over 3 steps)" in line
    assert duration(250) == "4 min 10 s" and duration(3900) == "1 h 5 min"
    assert duration(12.4) == "12 s"
