"""scikit-learn's bundled handwritten digits: 1,797 real 8×8 images, available offline."""

from collections.abc import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class Digits(Dataset):
    """The UCI digits as grayscale PIL images (0–16 intensities rescaled to 0–255)."""

    classes = DIGIT_NAMES

    def __init__(self, transform: Callable | None = None):
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = (digits.images * (255 / 16)).round().astype(np.uint8)  # (N, 8, 8)
        self.targets = digits.target.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
