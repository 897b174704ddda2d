"""What an image shows, measured from its pixels: Morpho-MNIST's stroke thickness and slant of a
digit (Castro et al. 2019, "Morpho-MNIST: quantitative assessment and diagnostics for
representation learning"), the brightness and size of a garment, the dominant colour of a
photo. The captions that describe each training image are made from these, and the evaluation
measures the images a model draws with the same functions.

Each measure takes an image as an array in [0, 1], (H, W) or (H, W, 3), of any size."""

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt
from skimage.color import rgb2hsv
from skimage.morphology import skeletonize
from skimage.transform import rescale

log = logging.getLogger(__name__)

# Morpho-MNIST measures a 28-pixel digit 4× upscaled: every digit is measured at about this size
MEASURED_SIZE = 112


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(-1) if image.ndim == 3 else image


def binarize(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The stroke: the image upscaled (bicubic) to about :data:`MEASURED_SIZE` pixels and
    thresholded at half its range, as Morpho-MNIST does; and the upscaling factor."""
    gray = _gray(image)
    scale = max(1, round(MEASURED_SIZE / max(gray.shape)))
    up = rescale(gray, scale, order=3) if scale > 1 else gray
    return up > 0.5 * (float(gray.max()) or 1.0), scale


def thickness(image: np.ndarray) -> float:
    """The mean stroke thickness in pixels of ``image``: twice the mean distance from the
    skeleton to the background (Morpho-MNIST's)."""
    stroke, scale = binarize(image)
    skeleton = skeletonize(stroke)
    if not skeleton.any():
        return 0.0
    return float(2 * distance_transform_edt(stroke)[skeleton].mean() / scale)


def slant(image: np.ndarray) -> float:
    """The slant in radians, positive when the top leans right: arctan(−μ11/μ02) of the
    stroke's central moments, μ11 the covariance of row and column and μ02 the rows' variance
    (Morpho-MNIST's shear angle)."""
    stroke, _ = binarize(image)
    rows, cols = np.nonzero(stroke)
    if len(rows) < 2:
        return 0.0
    rows, cols = rows - rows.mean(), cols - cols.mean()
    return float(np.arctan(-(rows * cols).sum() / max((rows**2).sum(), 1e-9)))


def _foreground(image: np.ndarray) -> np.ndarray:
    gray = _gray(image)
    return gray > 0.1 * (float(gray.max()) or 1.0)


def brightness(image: np.ndarray) -> float:
    """The median intensity of the foreground (the object, on a dark background)."""
    gray, fore = _gray(image), _foreground(image)
    return float(np.median(gray[fore])) if fore.any() else 0.0


def size(image: np.ndarray) -> float:
    """The share of the image the foreground covers."""
    return float(_foreground(image).mean())


# hue names by where they start on the colour wheel (degrees), and the saturation below which a
# pixel has no hue to speak of
HUES = [(0, "red"), (20, "orange"), (45, "yellow"), (70, "green"), (170, "blue"),
        (260, "purple"), (290, "pink"), (340, "red")]  # fmt: skip
MIN_SATURATION = 0.25


def colour(image: np.ndarray) -> str:
    """The name of the dominant hue of the coloured pixels ("white" when there are none)."""
    if image.ndim != 3:
        return "white"
    hsv = rgb2hsv(image)
    coloured = (hsv[..., 1] >= MIN_SATURATION) & (hsv[..., 2] >= 0.2)
    if coloured.mean() < 0.05:
        return "white"
    starts = np.array([start for start, _ in HUES])
    names = np.searchsorted(starts, hsv[..., 0][coloured] * 360, side="right") - 1
    counts = np.bincount(names, minlength=len(HUES))
    return HUES[int(counts.argmax())][1]


MEASURES = {
    "thickness": thickness,
    "slant": slant,
    "brightness": brightness,
    "size": size,
    "colour": colour,
}


def as_array(image: Image.Image) -> np.ndarray:
    """A PIL image as floats in [0, 1]: (H, W) for grayscale, (H, W, 3) for colour."""
    array = np.asarray(image.convert("RGB" if image.mode not in ("L", "I;16") else "L"))
    return array.astype(np.float32) / 255


def measure_all(images, names: list[str], cache_dir: Path | None = None, key: str = "") -> dict:
    """Each measure of ``names`` over ``images`` (arrays as :func:`as_array` gives), as a list
    per name; cached in ``cache_dir`` under ``key`` (what identifies the images: a dataset and
    a fingerprint of its files), so that a dataset is measured once."""
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(f"{key}|{sorted(names)}".encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"measures-{digest}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                if set(names) <= set(saved.files):
                    return {name: saved[name].tolist() for name in names}
    log.info("Measuring %s of the training images (once; cached)", ", ".join(names))
    values = {name: [] for name in names}
    for image in images:
        for name in names:
            values[name].append(MEASURES[name](image))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: np.asarray(v) for k, v in values.items()})
    return values
