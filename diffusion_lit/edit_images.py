"""The pictures an edit starts from: init images (a file, a folder of them, PIL images or a
tensor) and an inpainting mask, read as files a stranger may have made — a regular file inside
its folder, at most :data:`MAX_BYTES` bytes and :data:`MAX_PIXELS` pixels (from its header,
before it is decoded), one of :data:`FORMATS`; a folder of at most :data:`MAX_IMAGES` — and
converted to the model's size and channels, with one note saying how."""

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms.functional import pil_to_tensor

from diffusion_lit.errors import UserError, first_line
from diffusion_lit.files import is_dir, kind, read_bytes
from diffusion_lit.images import on_white

MAX_IMAGES = 1_024  # in a folder: far more than one sampling run draws
MAX_BYTES = 32 * 2**20
MAX_PIXELS = 4096 * 4096  # 64 MB as RGB: far above any picture one would edit at 16-64 px
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class EditInputs:
    """What an edit starts from, at the model's size and channels."""

    images: torch.Tensor  # (M, C, H, W) in [0, 1]
    names: list[str]  # of each image, for the notes
    mask: torch.Tensor | None = None  # (1, 1, H, W): 1 where the images are redrawn, else 0
    note: str = ""  # how the inputs were converted, when they were


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` (by suffix, sorted by name), refused beyond :data:`MAX_IMAGES`
    before any is opened; none is an error."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.lower().endswith(SUFFIXES):
                found.append(Path(folder) / entry.name)
                if len(found) > MAX_IMAGES:
                    raise UserError(
                        f"{folder} holds more than {MAX_IMAGES:,} images: an edit takes at most "
                        "that many at once; pass a folder of fewer."
                    )
    if not found:
        raise UserError(f"{folder} holds no image ({', '.join(SUFFIXES)}): pass a folder of them.")
    return sorted(found)


def open_image(path: Path, within: Path | None = None) -> Image.Image:
    """The image file ``path`` (inside ``within``), decoded whole within the bounds."""
    data = read_bytes(path, MAX_BYTES, within, "pass a picture file of at most 32 MB")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}×{image.height} pixels")
            image.load()
            return image
    except Image.DecompressionBombError as err:
        raise UserError(
            f"{path} is larger than a picture to edit may be ({first_line(err)}; at most "
            f"{MAX_PIXELS:,} pixels): resize it first."
        ) from err
    except (OSError, ValueError) as err:
        raise UserError(
            f"{path} is not a picture that can be read ({', '.join(FORMATS)}; "
            f"{type(err).__name__}: {first_line(err)}): pass an image file."
        ) from err


def pictures(given):
    """Init images as given — a path to an image or a folder of them, or a list of paths and
    PIL images — one (picture, name) at a time, so that only one is held at full size."""
    if isinstance(given, str | Path):
        path = Path(given)
        if is_dir(path):
            for file in image_files(path):
                yield open_image(file, path), file.name
            return
        if kind(path) is None:
            raise UserError(
                f"init_image={path} does not exist: pass a picture or a folder of them."
            )
        yield open_image(path), path.name
        return
    items = list(given)
    if not items:
        raise UserError("init_images is empty: give at least one picture.")
    if len(items) > MAX_IMAGES:
        raise UserError(f"{len(items):,} init images: an edit takes at most {MAX_IMAGES:,}.")
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            yield item, f"image {i}"
        else:
            yield open_image(Path(item)), Path(item).name


def fitted(image: Image.Image, size: int, resample) -> Image.Image:
    """The centre square of ``image`` at ``size`` × ``size``."""
    return ImageOps.fit(image, (size, size), resample)


def to_tensor(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """(C, H, W) in [0, 1] at the model's channels (1: grayscale) and size."""
    mode = "L" if channels == 1 else "RGB"
    converted = fitted(on_white(image).convert(mode), size, Image.Resampling.LANCZOS)
    return pil_to_tensor(converted).float() / 255


def read_mask(given, sizes: list[tuple[int, int]], size: int) -> torch.Tensor:
    """The mask (a path or a PIL image) as (1, 1, H, W) of 0 and 1 at the model's size: white
    is redrawn, black kept. It must be black and white only and of each image's size."""
    mask = open_image(Path(given)) if isinstance(given, str | Path) else given
    name = given if isinstance(given, str | Path) else "the mask"
    if any(s != mask.size for s in sizes):
        other = next(s for s in sizes if s != mask.size)
        raise UserError(
            f"{name} is {mask.width}×{mask.height} pixels and an init image {other[0]}×"
            f"{other[1]}: draw the mask at the size of the images it masks."
        )
    gray = on_white(mask).convert("L")
    values = {v for v, n in enumerate(gray.histogram()) if n}
    if not values <= {0, 255}:
        raise UserError(
            f"{name} is not black and white only ({len(values)} gray levels): the mask says, "
            "per pixel, redraw (white) or keep (black); save it as a PNG of those two colours."
        )
    if values == {0}:
        raise UserError(f"{name} is black all over, so nothing would be redrawn: paint white "
                        "what to redraw.")  # fmt: skip
    small = fitted(gray, size, Image.Resampling.NEAREST)
    return (pil_to_tensor(small) > 127).float()[None]


def edit_inputs(init, mask, channels: int, size: int) -> EditInputs:
    """The init images (:func:`pictures`, or a tensor (M, C, H, W) in [0, 1] at the model's
    size) and the mask (:func:`read_mask`), ready to edit, with a note on the conversion."""
    if isinstance(init, torch.Tensor):
        if init.dim() != 4 or tuple(init.shape[1:]) != (channels, size, size):
            raise UserError(
                f"init_images of shape {tuple(init.shape)}: a tensor must be (M, {channels}, "
                f"{size}, {size}) in [0, 1], or pass pictures or their paths."
            )
        if not (init.isfinite().all() and 0 <= init.min() and init.max() <= 1):
            raise UserError("init_images must be finite and within [0, 1].")
        sizes = [(size, size)] * len(init)
        names = [f"image {i}" for i in range(len(init))]
        images, note = init.float().cpu(), ""
    else:
        tensors, names, sizes, modes = [], [], [], []
        for picture, name in pictures(init):  # converted as read: one at full size at a time
            tensors.append(to_tensor(picture, channels, size))
            names.append(name)
            sizes.append(picture.size)
            modes.append(picture.mode)
        images = torch.stack(tensors)
        note = conversion_note(names, sizes, modes, channels, size)
    if isinstance(mask, torch.Tensor):
        mask = mask_tensor(mask, size)
    elif mask is not None:
        mask = read_mask(mask, sizes, size)
    return EditInputs(images, names, mask, note)


def mask_tensor(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A mask given as a tensor, (H, W) or (1, H, W) or (1, 1, H, W) of 0 and 1."""
    if mask.numel() != size * size or not ((mask == 0) | (mask == 1)).all():
        raise UserError(f"A mask tensor must be {size}×{size} of 0 (keep) and 1 (redraw).")
    return mask.float().reshape(1, 1, size, size).cpu()


def conversion_note(names, sizes, modes, channels: int, size: int) -> str:
    """One line on how the pictures (their names, sizes and PIL modes) were converted, empty
    when they were not."""
    mode = "grayscale" if channels == 1 else "RGB"
    changed = [
        (n, s, m) for n, s, m in zip(names, sizes, modes, strict=True)
        if s != (size, size) or (m != "L") == (channels == 1)
    ]  # fmt: skip
    if not changed:
        return ""
    (name, (width, height), first_mode), more = changed[0], len(changed) - 1
    others = f" and {more} more" if more else ""
    cropped = "" if all(w == h for w, h in sizes) else ", cropped to their centre square"
    return (
        f"Init images converted to the model's {size}×{size} {mode}{cropped}: {name} "
        f"({width}×{height} {first_mode}){others}."
    )
