"""Editing a picture with a prompt: image-to-image (SDEdit) and inpainting (RePaint), through the
one sampling walk, from the Python API and the sample CLI; bad and hostile pictures refused in
one line before any work."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lit.diffusion.options import STRENGTH, SamplingOptions
from diffusion_lit.diffusion.samplers import Known, denoise, sampler_named
from diffusion_lit.diffusion.schedule import NoiseSchedule
from diffusion_lit.edit_images import MAX_IMAGES
from diffusion_lit.errors import BadValue, UserError
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.sample import main as sample_main

from conftest import assert_one_line


@pytest.fixture(scope="module")
def pipe(trained_run):
    return TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")


@pytest.fixture(scope="module")
def digits(pipe):
    """Four pictures at the model's size (8×8 grayscale), in [0, 1] on the 8-bit grid."""
    images = pipe(["Draw a six", "Draw a one"], 2, seed=3, steps=10, progress=False).images.flatten(
        0, 1
    )
    return (images * 255).round() / 255


def save_png(array: np.ndarray, path) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def right_half(size: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2 :] = 1
    return mask


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde"])
def test_a_strength_walks_the_samplers_grid_from_that_far_down(name):
    sampler = sampler_named(name)
    full = sampler.timesteps(1000, 25)
    assert torch.equal(sampler.timesteps(1000, 25, strength=1.0), full)
    part = sampler.timesteps(1000, 25, strength=0.6)
    assert part.tolist() == [t for t in full.tolist() if t <= 0.6 * 999]  # the same grid, cut
    assert len(sampler.timesteps(1000, 25, strength=1e-6)) == 1  # at least its lowest step


def test_known_pixels_are_kept_exactly_and_the_rest_is_drawn():
    """RePaint on a schedule alone: with an ε that ignores the image, the kept pixels come out
    as given and the others are a sample."""
    schedule = NoiseSchedule(50)
    image = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    mask = right_half(4)
    sampler = sampler_named("dpmpp_2m_sde")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=g)
    for jumps in (0, 2):
        out = denoise(sampler, lambda x, t: torch.zeros_like(x), schedule, x,
                      sampler.timesteps(50, 10), g, False, known=Known(image, mask),
                      resample_jumps=jumps)  # fmt: skip
        assert torch.equal(out[..., :2], image.expand(3, -1, -1, -1)[..., :2])
        assert not torch.allclose(out[..., 2:], image[..., 2:].expand(3, -1, -1, -1))


def test_strength_one_draws_from_noise_and_a_small_one_keeps_the_picture(pipe, digits):
    drawn = pipe(["Draw a six"], 4, seed=5, steps=10, progress=False).images[0]
    edited = pipe(
        ["Draw a six"], init_images=digits, strength=1.0, seed=5, steps=10, progress=False
    )
    assert edited.images.shape == (1, 4, 1, 8, 8)
    assert torch.equal(edited.images[0], drawn)  # the same noise, the same walk
    moved = {}
    for strength in (0.1, 0.5, 0.9):
        out = pipe(
            ["Draw a one"], init_images=digits, strength=strength, seed=5, steps=10, progress=False
        )
        moved[strength] = float((out.images[0] - digits).abs().mean())
    assert moved[0.1] < moved[0.5] < moved[0.9]
    assert moved[0.1] < 0.05


def test_each_prompt_edits_every_picture_in_their_order(pipe, digits):
    out = pipe(
        ["Draw a six", "Draw a one"], 2, init_images=digits, strength=0.3, steps=10, progress=False
    )
    assert out.images.shape == (2, 8, 1, 8, 8)  # 4 pictures × 2 images each, per prompt
    closest = [(out.images[0, k] - digits).abs().mean((1, 2, 3)).argmin() for k in range(8)]
    assert [int(c) for c in closest] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_inpainting_keeps_every_pixel_outside_the_mask(pipe, digits):
    mask = right_half(8)
    for jumps in (0, 1):
        out = pipe(["Draw a one"], init_images=digits, mask=mask, resample_jumps=jumps,
                   steps=10, progress=False).images[0]  # fmt: skip
        assert torch.equal(out[..., :4], digits[..., :4])
        assert not torch.equal(out[..., 4:], digits[..., 4:])


def test_the_sample_cli_edits_a_folder_and_inpaints_with_a_mask(run_cli, tmp_path, digits,
                                                                trained_run):  # fmt: skip
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, d in enumerate(digits[:3]):  # at the model's size: no conversion
        save_png((d[0].numpy() * 255).round(), pictures / f"{'cba'[i]}.png")
    mask = np.zeros((8, 8))
    mask[:, 4:] = 255
    mask_path = save_png(mask, tmp_path / "mask.png")
    out = tmp_path / "out"
    status, err = run_cli(sample_main, [f"ckpt_path={ckpt}", f"init_image={pictures}",
                                        f"mask={mask_path}", "prompts=[Draw a six,Draw a one]",
                                        f"out_dir={out}", "device=cpu", "steps=10"])  # fmt: skip
    assert status == 0, err
    for folder in ("draw_a_six", "draw_a_one"):
        made = sorted((out / folder).glob("*.png"))
        assert [p.name for p in made] == ["000.png", "001.png", "002.png"]  # one per picture
        for made_png, given in zip(made, ["a.png", "b.png", "c.png"], strict=True):  # by name
            kept = np.asarray(Image.open(made_png).convert("L"))[:, :4]
            assert np.array_equal(kept, np.asarray(Image.open(pictures / given))[:, :4])


def test_a_picture_of_another_size_is_converted_with_one_note(pipe):
    photo = Image.new("RGBA", (40, 20), (255, 0, 0, 128))
    out = pipe(["Draw a six"], init_images=[photo], strength=0.5, steps=10, progress=False)
    assert out.images.shape == (1, 1, 1, 8, 8)
    [note] = [n for n in out.substitutions if "converted" in n]
    assert "8×8 grayscale, cropped to their centre square" in note and "40×20 RGBA" in note


def bomb_png(path, width=30_000, height=30_000) -> str:
    """A PNG whose header declares ``width`` × ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))  # fmt: skip
    return str(path)


def test_bad_and_hostile_pictures_are_refused_in_one_line_before_any_work(pipe, tmp_path):
    good = save_png(np.zeros((8, 8)), tmp_path / "good.png")
    (tmp_path / "text.png").write_text("not an image")
    gray_mask = save_png(np.full((8, 8), 128), tmp_path / "gray.png")
    small_mask = save_png(np.full((4, 4), 255), tmp_path / "small.png")
    black_mask = save_png(np.zeros((8, 8)), tmp_path / "black.png")
    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_IMAGES + 1):  # empty files: refused by their count, none is opened
        (many / f"{i:05d}.png").touch()
    cases = [
        ({"init_images": str(tmp_path / "text.png")}, "not a picture that can be read"),
        ({"init_images": bomb_png(tmp_path / "bomb.png")}, "larger than a picture to edit"),
        ({"init_images": bomb_png(tmp_path / "big.png", 5000, 5000)}, r"\(5000×5000 pixels"),
        ({"init_images": str(many)}, f"more than {MAX_IMAGES:,} images"),
        ({"init_images": str(tmp_path / "missing.png")}, "does not exist"),
        ({"init_images": good, "mask": gray_mask}, "not black and white only"),
        ({"init_images": good, "mask": small_mask}, "4×4 pixels and an init image 8×8"),
        ({"init_images": good, "mask": black_mask}, "nothing would be redrawn"),
        ({"mask": good}, "mask is for an edit"),
        ({"strength": 0.5}, "strength is for an edit"),
        ({"init_images": good, "resample_jumps": 2}, "resample_jumps is for an inpainting"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(UserError, match=fragment):
            pipe(["Draw a six"], steps=10, progress=False, **kwargs)
    for strength in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(BadValue, match="strength"):
            SamplingOptions(strength=strength)
    assert SamplingOptions().start_strength(False) == STRENGTH
    assert SamplingOptions().start_strength(True) == 1.0


def test_the_sample_cli_answers_a_bad_picture_in_one_line(run_cli, tmp_path, trained_run):
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    (tmp_path / "x.png").write_bytes(b"\x89PNG cut short")
    for args, fragment in [
        ([f"init_image={tmp_path / 'x.png'}"], "not a picture that can be read"),
        ([f"mask={tmp_path / 'x.png'}"], "mask=... needs init_image"),
        ([f"init_image={tmp_path / 'x.png'}", "strength=2"], "strength=2"),
    ]:
        status, err = run_cli(
            sample_main, [f"ckpt_path={ckpt}", f"out_dir={tmp_path}", "steps=10", *args]
        )
        assert_one_line(status, err, fragment)
