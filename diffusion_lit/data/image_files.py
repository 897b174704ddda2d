"""A training image opened within bounds: a regular file inside its folder, at most
:data:`MAX_PIXELS` pixels (checked from its header, before anything is decoded), decoded whole,
so that a damaged, cut or oversized file is one line before training starts rather than a
traceback in a loader worker."""

from pathlib import Path

from PIL import Image

from diffusion_lit.errors import UserError, first_line
from diffusion_lit.files import regular_file

# 8192 × 8192: far above any training image, far below what would exhaust memory (256 MB as RGB)
MAX_PIXELS = 8192 * 8192


def load_rgb(path: Path, folder: Path) -> Image.Image:
    """The image at ``path`` (a file in ``folder``), decoded whole, as RGB."""
    regular_file(path, folder, "move it out of the folder or replace it with the image itself")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}×{image.height} pixels")
            return image.convert("RGB")
    except Image.DecompressionBombError as err:  # PIL's own bound is above ours
        raise UserError(
            f"{path} is larger than a training image may be ({first_line(err)}; at most "
            f"{MAX_PIXELS:,} pixels): resize it or move it out of the folder."
        ) from err
    except (OSError, ValueError) as err:  # not an image, cut short
        raise UserError(
            f"{path} is not an image that can be read ({type(err).__name__}: {first_line(err)}): "
            "replace it or move it out of the folder."
        ) from err
