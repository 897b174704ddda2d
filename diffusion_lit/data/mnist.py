"""torchvision's MNIST and Fashion-MNIST, with plain class names and an offline-friendly error."""

from pathlib import Path

from torchvision import datasets

from diffusion_lit.data.digits import DIGIT_NAMES
from diffusion_lit.errors import UserError


def _missing_files_error(cls, root: Path, err: Exception) -> UserError:
    raw = Path(root) / cls.__name__ / "raw"
    files = ", ".join(Path(url).name.removesuffix(".gz") for url, _ in cls.resources)
    return UserError(
        f"{cls.__name__} is not under {raw} and could not be downloaded ({err}). Put the "
        f"uncompressed idx files ({files}) in {raw}, or run with network access and "
        "data.download=true."
    )


class MNIST(datasets.MNIST):
    classes = DIGIT_NAMES

    def __init__(self, root, train: bool = True, transform=None, download: bool = True):
        try:
            super().__init__(root, train=train, transform=transform, download=download)
        except (RuntimeError, OSError) as err:
            raise _missing_files_error(datasets.MNIST, root, err) from err


class FashionMNIST(datasets.FashionMNIST):
    classes = [name.lower() for name in datasets.FashionMNIST.classes]

    def __init__(self, root, train: bool = True, transform=None, download: bool = True):
        try:
            super().__init__(root, train=train, transform=transform, download=download)
        except (RuntimeError, OSError) as err:
            raise _missing_files_error(datasets.FashionMNIST, root, err) from err
