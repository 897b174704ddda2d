"""Your own images with their own captions, in Hugging Face's ``imagefolder`` layout: the
images (in ``root`` or its subfolders) and a ``metadata.jsonl`` or ``metadata.csv`` in
``root`` whose rows name each image (``file_name``, relative to ``root``) and its caption
(``text``: a string, or in JSON lines a list of strings, of which training draws one a step).
The same folder loads with ``datasets.load_dataset("imagefolder", data_dir=root)``."""

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from diffusion_lit.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
METADATA = ("metadata.jsonl", "metadata.csv")
ONE_CLASS = "image"


class CaptionedFolder(Dataset):
    """Each image with its captions (``captions``: a list per image). Its class (``targets``
    into ``classes``) is the first folder below ``root`` it lies in, as ``imagefolder``'s
    labels are; images in ``root`` itself are all of one class, ``image``. Bad metadata — a
    line naming a missing image, an image without a caption, an empty caption, a malformed
    line, a file that is not UTF-8 — is one error naming the file and the line."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        self.root, self.transform = Path(root), transform
        if not self.root.is_dir():
            raise UserError(
                f"Image folder {self.root} does not exist: set data.root to a folder of images "
                f"with a {METADATA[0]} or {METADATA[1]} of file_name and text."
            )
        found = [self.root / name for name in METADATA if (self.root / name).is_file()]
        if len(found) != 1:
            raise UserError(
                f"{self.root} needs one caption file, {METADATA[0]} or {METADATA[1]} (with "
                f"file_name and text), and has {len(found) or 'none'}; see README: Captions."
            )
        captions = read_metadata(found[0], self.root)
        images = _images(self.root)
        if not images:
            raise UserError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.root}.")
        uncaptioned = [p for p in images if p not in captions]
        if uncaptioned:
            raise UserError(
                f"{uncaptioned[0]} has no caption in {found[0]} ({len(uncaptioned)} images have "
                "none): add a line for it, or move it out of the folder."
            )
        self.files = images
        self.captions = [captions[p] for p in images]
        folders = [p.relative_to(self.root).parts for p in images]
        nested = all(len(parts) > 1 for parts in folders)
        names = [parts[0] if nested else ONE_CLASS for parts in folders]
        self.classes = sorted(set(names))
        self.targets = [self.classes.index(n) for n in names]
        for path in images:  # fail here, in the main process, before any work
            try:
                with Image.open(path):
                    pass
            except (OSError, UnidentifiedImageError) as err:
                raise UserError(f"{path} is not an image that can be read ({err}).") from err

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
        return (image if self.transform is None else self.transform(image)), self.targets[index]


def _images(root: Path) -> list[Path]:
    """The image files under ``root``, sorted; links to folders are not followed."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def read_metadata(path: Path, root: Path) -> dict[Path, list[str]]:
    """Image path → its captions, from a metadata.jsonl or metadata.csv."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8.") from err
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except ValueError as err:
                raise UserError(f"{path}, line {number}: not a JSON object ({err}).") from err
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [(number, row) for number, row in enumerate(reader, 2)]
    captions: dict[Path, list[str]] = {}
    for number, row in rows:
        where = f"{path}, line {number}"
        if not isinstance(row, dict) or "file_name" not in row or "text" not in row:
            raise UserError(f"{where}: needs file_name and text, e.g. "
                            '{"file_name": "a.png", "text": "a red tulip"}.')  # fmt: skip
        name, texts = row["file_name"], row["text"]
        texts = [texts] if isinstance(texts, str) else texts
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise UserError(f"{where}: the caption of {name!r} is empty or not text.")
        image = root / str(name)
        if not image.resolve().is_relative_to(root.resolve()) or not image.is_file():
            raise UserError(f"{where}: {name!r} is not an image in {root}.")
        captions.setdefault(image, []).extend(t.strip() for t in texts)
    return captions
