"""The seed's FlowerDataset: a flat folder of ``<class>_<index>.jpg`` images."""

import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from diffusion_lit import files
from diffusion_lit.data.image_files import load_rgb
from diffusion_lit.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class FlowerFolder(Dataset):
    """Images named ``<class>_<index>.<jpg|jpeg|png>``; the class is the text before the last
    underscore, classes are indexed in sorted order, images are returned as RGB.

    An image that cannot be decoded is skipped with a warning naming it (its neighbour is
    returned instead), so one bad file does not end a long run.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None):
        self.root, self.transform = Path(root), transform
        if not files.is_dir(self.root):
            raise UserError(
                f"Image folder {self.root} does not exist: set data.root to a folder of "
                "<class>_<index>.jpg files."
            )
        found = (p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.files = sorted(p for p in found if files.is_file(p, self.root))
        if not self.files:
            raise UserError(
                f"No .jpg/.jpeg/.png images in {self.root}: set data.root to a folder of "
                "<class>_<index>.jpg files."
            )
        names = [self.class_of(p) for p in self.files]
        self.classes = sorted(set(names))
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.targets = [self.class_to_idx[name] for name in names]
        # fail here, in the main process and before any work, rather than in a loader worker
        if not any(self._open(i) is not None for i in range(len(self.files))):
            raise UserError(
                f"None of the {len(self.files)} images in {self.root} can be read: set data.root "
                "to a folder of readable <class>_<index>.jpg files."
            )

    @staticmethod
    def class_of(path: Path) -> str:
        name, sep, _ = path.stem.rpartition("_")
        if not sep or not name:
            raise UserError(
                f"{path}: file names must look like <class>_<index>{path.suffix} (e.g. "
                f"tulip_0001{path.suffix}); rename it or move it out of the folder."
            )
        return name

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, i: int) -> Image.Image | None:
        """File ``i`` as RGB, or None (with a warning naming it) when it cannot be decoded."""
        try:
            return load_rgb(self.files[i], self.root)
        except UserError as err:  # not an image, cut short, too large, a link out
            log.warning("Skipping %s", err)
            return None

    def __getitem__(self, index: int):
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            if (image := self._open(i)) is not None:
                return (image if self.transform is None else self.transform(image)), self.targets[i]
        raise UserError(f"None of the {len(self.files)} images in {self.root} can be read.")
