"""The web page (python -m diffusion_lit.demo), used as a person would: through Gradio's own
client, and in a real headless browser. Offline: analytics off, bound to 127.0.0.1."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from diffusion_lit import cli, demo  # noqa: E402
from diffusion_lit.page.actions import Limits, Models, Page  # noqa: E402
from diffusion_lit.pipeline import TextToImage  # noqa: E402
from diffusion_lit.sample import sample  # noqa: E402

import browser_page  # noqa: E402
from conftest import CONF_DIR, assert_one_line  # noqa: E402

PROMPTS = "Draw a six\nDraw a one"
# ckpt, prompts, images per prompt, guidance, sampler, steps, seed, EMA weights
SETTINGS = (PROMPTS, 3, 1.5, "ddim", 5, 7, True)


@pytest.fixture(scope="module")
def page(trained_run, tmp_path_factory):
    """The page serving the tiny run, the Runs tab on the folder holding it."""
    run_dir = trained_run[0]
    cfg = cli.compose("demo")
    cfg.merge_with(
        {
            "ckpt_path": str(run_dir / "checkpoints" / "last.ckpt"),
            "runs_dir": str(run_dir.parent),
            "out_dir": str(tmp_path_factory.mktemp("demo_out")),
            "device": "cpu",
            "max_images": 512,  # room for a job long enough to stop
        }
    )
    app = demo.demo(cfg, block=False)
    yield app, cfg
    app.close()


@pytest.fixture(scope="module")
def client(page):
    return Client(page[0].local_url, verbose=False)


def make_page(runs_dir: Path, start: Path, out_dir: Path, **models) -> Page:
    """The page's actions over the runs under ``runs_dir``, started with ``start``."""
    return Page(Models("cpu", runs_dir, start, **models), runs_dir, out_dir, Limits(),
                cli.compose("sample"))  # fmt: skip


def pixels(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in paths])


def generate(client, ckpt, *settings):
    gallery, grid, info = client.predict(ckpt, *settings, api_name="/generate")
    return [item["image"] for item in gallery], [item["caption"] for item in gallery], grid, info


def test_generate_gives_the_sample_clis_images(page, client, tmp_path):
    app, cfg = page
    images, captions, grid, info = generate(client, cfg.ckpt_path, *SETTINGS)
    assert captions == ["Draw a six"] * 3 + ["Draw a one"] * 3
    got = pixels(images)
    assert got.shape == (6, 8, 8, 3)  # 8×8 images (grey, saved as RGB), three per prompt
    assert "6 images in" in info and Path(grid).is_file()
    # what Gradio copies to serve lies in the page's own folder, not the system's temporary one
    assert len(list((Path(cfg.out_dir) / ".gradio").rglob("*.png"))) >= 6

    again, *_ = generate(client, cfg.ckpt_path, *SETTINGS)
    np.testing.assert_array_equal(pixels(again), got)  # a seed gives the same images
    other, *_ = generate(client, cfg.ckpt_path, *SETTINGS[:-2], 8, True)
    assert not np.array_equal(pixels(other), got)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cli = compose(
            "sample",
            overrides=[
                f"ckpt_path={cfg.ckpt_path}", "prompts=[Draw a six,Draw a one]", "num_images=3",
                "sampler=ddim", "steps=5", "seed=7", "device=cpu", f"out_dir={tmp_path}",
            ],
        )  # fmt: skip
    sample(cli)
    files = sorted(tmp_path.glob("draw_a_six/*.png")) + sorted(tmp_path.glob("draw_a_one/*.png"))
    np.testing.assert_array_equal(pixels(files), got)
    np.testing.assert_array_equal(pixels([grid]), pixels([tmp_path / "grid.png"]))


def test_the_page_says_how_it_reads_prompts_it_never_trained_on(page, client):
    _, cfg = page
    prompts = "please sketch the number six\na red car"
    _, captions, _, info = generate(client, cfg.ckpt_path, prompts, 1, 1.5, "ddim", 2, 0, True)
    assert captions == ["please sketch the number six", "a red car"]  # both drawn
    assert "⚠️ 'a red car' is not like any training prompt; nearest: '" in info
    assert "'please sketch the number six' is drawn as the training prompt '" in info


def test_bad_input_is_answered_in_the_page_and_the_server_keeps_running(page, client, tmp_path):
    app, cfg = page
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    cases = [
        ((cfg.ckpt_path, "  \n ", *SETTINGS[1:]), "prompt box is empty"),
        ((cfg.ckpt_path, *SETTINGS[:4], 0, *SETTINGS[5:]), "minimum value 1"),  # by Gradio
        ((cfg.ckpt_path, *SETTINGS[:4], 999, *SETTINGS[5:]), "maximum value 20"),  # its T
        # any path but the page's own models gets the same answer: nothing to probe the disk with
        *(
            ((str(path), *SETTINGS), "Choose one of this page's models")
            for path in (broken, tmp_path / "missing.ckpt", tmp_path, Path("/etc/hostname"))
        ),
    ]
    for args, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/generate")
    images, *_ = generate(client, cfg.ckpt_path, *SETTINGS)
    assert len(images) == 6


def test_two_requests_at_once_get_their_own_images(page, client):
    app, cfg = page
    pipe = TextToImage.from_checkpoint(cfg.ckpt_path, device="cpu")
    jobs = {
        seed: client.submit(cfg.ckpt_path, "Draw a two", 2, 1.5, "ddpm", 10, seed, True,
                            api_name="/generate")
        for seed in (1, 2)
    }  # fmt: skip
    for seed, job in jobs.items():
        images = pipe(["Draw a two"], num_images=2, sampler="ddpm", steps=10, seed=seed,
                      progress=False).images  # fmt: skip
        expected = (images[0, :, 0] * 255 + 0.5).clamp(0, 255).byte().numpy()  # as save_image
        got = pixels([item["image"] for item in job.result()[0]])[..., 0]
        np.testing.assert_array_equal(got, expected)


def test_stop_ends_a_long_sampling_job(page, client):
    app, cfg = page
    # 2 × 512 images: 4 batches of 20 steps, seconds even for the tiny model
    job = client.submit(cfg.ckpt_path, PROMPTS, 512, 1.5, "ddpm", 20, 0, True, api_name="/generate")
    for _ in range(600):  # until the sampler reports its first step
        if job.status().progress_data:
            break
        threading.Event().wait(0.05)
    client.predict(api_name="/stop")
    with pytest.raises(AppError, match="Stopped after"):
        job.result()


def test_demo_cli_refuses_a_missing_checkpoint_in_one_line(run_cli, tmp_path):
    assert_one_line(*run_cli(demo.main, [f"ckpt_path={tmp_path}/x.ckpt"]), "does not exist")
    assert_one_line(*run_cli(demo.main, [f"runs_dir={tmp_path}"]), "no run under")


@pytest.mark.slow
def test_the_page_in_a_real_browser(page, tmp_path):
    """Type prompts, press Generate, see the images; open Runs and see the run's grids; nothing
    is fetched from outside this machine. Screenshots go to $DEMO_SCREENSHOTS (default: tmp)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not browser_page.CHROMIUM.exists():
        pytest.skip(f"no Chromium at {browser_page.CHROMIUM} (apt-get install chromium)")
    shots = Path(os.environ.get("DEMO_SCREENSHOTS", tmp_path))
    app, cfg = page
    outside = browser_page.drive(app.local_url, shots, ["Draw a six", "Draw a seven"], 4)
    assert outside == []
    assert (shots / "demo-generate.png").is_file() and (shots / "demo-runs.png").is_file()


def test_runs_tab_shows_compares_and_exports_a_run(trained_run, tmp_path):
    import shutil

    run_dir = trained_run[0]
    twin = tmp_path / "runs" / "twin"  # a copy of the run, with the config Hydra writes
    shutil.copytree(run_dir, twin)
    (twin / ".hydra").mkdir()
    (twin / ".hydra" / "config.yaml").write_text("trainer:\n  max_epochs: 2\n")
    page = make_page(tmp_path / "runs", twin / "checkpoints" / "last.ckpt", tmp_path / "out")
    table, run, to_compare = page.runs_table()
    assert [row[0] for row in table.value["data"]] == [str(twin)]  # the runs list rows
    assert run.value == str(twin) and [c[0] for c in to_compare.choices] == [str(twin)]

    curves, grids, accuracy, evaluations, config, ckpts = page.show_run(str(twin))
    assert curves.size == Image.open(twin / "curves.png").size  # shown as pictures, not files
    assert [caption for _, caption in grids][-1] == "final"
    assert accuracy == (run_dir / "accuracy_log.txt").read_text()
    assert config == "trainer:\n  max_epochs: 2\n"
    assert ckpts.value == str(twin / "checkpoints" / "last.ckpt")
    assert evaluations.startswith("(no evaluations")

    with pytest.raises(gr.Error, match="two or more"):
        page.compare([str(twin)])
    shutil.copytree(run_dir, tmp_path / "runs" / "other")
    assert "best val/loss" in page.compare([str(twin), str(tmp_path / "runs" / "other")])

    ckpt = twin / "checkpoints" / "last.ckpt"
    assert page.use_checkpoint(str(ckpt))[0].value == str(ckpt)
    assert "Exported to" in page.export(str(ckpt), True, False)
    assert (twin / "checkpoints" / "export-last" / "model.safetensors").is_file()
    with pytest.raises(gr.Error, match="already exists"):
        page.export(str(ckpt), True, False)  # nothing is replaced unless asked


def test_a_request_beyond_the_pages_limits_is_answered_and_others_are_served(page, client):
    app, cfg = page
    many = "\n".join(f"Draw a {i}" for i in range(cfg.max_prompts + 1))
    too_long = "Draw a six " * 100
    cases = [
        ((cfg.ckpt_path, many, *SETTINGS[1:]), "more than this page takes"),
        ((cfg.ckpt_path, too_long, *SETTINGS[1:]), "longer than 500 characters"),
        # 11 × 512 images × 20 steps × 2 passes: more work than one request may ask for
        (
            (cfg.ckpt_path, "\n".join(["Draw a six"] * 11), 512, 1.5, "ddpm", 20, 0, True),
            "network passes",
        ),
    ]
    for args, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/generate")
    images, *_ = generate(client, cfg.ckpt_path, *SETTINGS)
    assert len(images) == 6


def test_the_page_serves_only_its_own_outputs_and_bounds_uploads(page, trained_run):
    import httpx

    app, cfg = page
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    for path in (ckpt, trained_run[0] / "accuracy_log.txt", Path("/etc/hostname")):
        got = httpx.get(f"{app.local_url}gradio_api/file={path}")
        assert got.status_code == 403, (path, got.status_code)
    too_large = b"PK" * (cfg.max_upload_bytes // 2 + 1)
    upload = httpx.post(f"{app.local_url}gradio_api/upload", files={"files": ("x.png", too_large)})
    assert upload.status_code >= 400
    # what it generated it serves
    images, *_ = generate(client_of(app), cfg.ckpt_path, *SETTINGS)
    assert Path(images[0]).is_file()


def test_the_page_edits_an_uploaded_picture_and_keeps_no_upload(page, client, tmp_path):
    from gradio_client import handle_file

    app, cfg = page
    [first], *_ = generate(client, cfg.ckpt_path, "Draw a six", 1, 1.5, "ddim", 5, 7, True)
    picture = np.asarray(Image.open(first).convert("L"))
    mask = np.zeros_like(picture)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    gallery, _, info = client.predict(
        cfg.ckpt_path, "Draw a one", 2, 1.5, "ddim", 5, 7, True, [], "",
        handle_file(first), handle_file(str(tmp_path / "mask.png")), 0.6, api_name="/generate",
    )  # fmt: skip
    assert "inpainting the white of the mask" in info
    for item in gallery:  # the black part of the mask: the picture's own pixels
        drawn = np.asarray(Image.open(item["image"]).convert("L"))
        assert np.array_equal(drawn[:, :4], picture[:, :4])
    uploads = Path(cfg.out_dir) / ".gradio"
    assert not [p for p in uploads.rglob("*") if p.is_file() and p.suffix == ".png"
                and "mask" in p.name]  # fmt: skip
    with pytest.raises(Exception, match="not black and white only"):
        client.predict(cfg.ckpt_path, "Draw a one", 1, 1.5, "ddim", 5, 7, True, [], "",
                       handle_file(first), handle_file(first), 0.6,
                       api_name="/generate")  # fmt: skip


def client_of(app) -> Client:
    return Client(app.local_url, verbose=False)


def test_prompts_that_make_the_same_folder_name_each_show_their_own_images(page, client):
    app, cfg = page
    images, captions, _, _ = generate(client, cfg.ckpt_path, "!!!\n???\nDraw a six\nDraw a six",
                                      2, 1.5, "ddpm", 5, 0, True)  # fmt: skip
    assert captions == ["!!!"] * 2 + ["???"] * 2 + ["Draw a six"] * 4
    assert len({pixels([p]).tobytes() for p in images}) == 8  # eight images, none shown twice
