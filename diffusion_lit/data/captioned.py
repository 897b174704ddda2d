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

from torch.utils.data import Dataset

from diffusion_lit import files
from diffusion_lit.data.image_files import load_rgb
from diffusion_lit.errors import UserError, first_line, show
from diffusion_lit.text.captions import MAX_CAPTION_CHARS, MAX_CAPTIONS_PER_IMAGE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
METADATA = ("metadata.jsonl", "metadata.csv")
ONE_CLASS = "image"
# a caption file of thousands of images is a few megabytes
MAX_METADATA_BYTES = 64 * 2**20


class CaptionedFolder(Dataset):
    """Each image with its captions (``captions``: a list per image). Its class (``targets``
    into ``classes``) is the first folder below ``root`` it lies in, as ``imagefolder``'s
    labels are; images in ``root`` itself are all of one class, ``image``. Bad metadata — a
    line naming a missing image, an image without a caption, an empty caption, a malformed
    line, a file that is not UTF-8, captions beyond the bounds of
    :mod:`diffusion_lit.text.captions` — is one error naming the file and the line, and so is an
    image that does not decode whole (every one is decoded here, before training starts). No
    file is read through a link out of ``root``."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        self.root, self.transform = Path(root), transform
        if not files.is_dir(self.root):
            raise UserError(
                f"Image folder {self.root} does not exist: set data.root to a folder of images "
                f"with a {METADATA[0]} or {METADATA[1]} of file_name and text."
            )
        found = [self.root / name for name in METADATA if files.kind(self.root / name)]
        if len(found) != 1:
            raise UserError(
                f"{self.root} needs one caption file, {METADATA[0]} or {METADATA[1]} (with "
                f"file_name and text), and has {len(found) or 'none'}; see docs/data.md: Captions."
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
            load_rgb(path, self.root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = load_rgb(self.files[index], self.root)
        return (image if self.transform is None else self.transform(image)), self.targets[index]


def _images(root: Path) -> list[Path]:
    """The image files under ``root``, sorted; links to folders are not followed."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        found += [Path(folder) / f for f in names if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def read_metadata(path: Path, root: Path) -> dict[Path, list[str]]:
    """Image path → its captions, from a metadata.jsonl or metadata.csv (a regular file in
    ``root``, UTF-8 with or without a byte-order mark, as ``datasets`` reads it)."""
    text = files.read_text(path, MAX_METADATA_BYTES, root, "keep the caption file in the folder")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except (ValueError, RecursionError) as err:  # not JSON, nested too deep
                error = first_line(err, 80)
                raise UserError(f"{path}, line {number}: not a JSON object ({error}).") from err
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = [(number, row) for number, row in enumerate(reader, 2)]
        except csv.Error as err:  # a field beyond csv's limit, a NUL
            raise UserError(f"{path}: not a CSV file of file_name and text ({err}).") from err
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
            raise UserError(f"{where}: the caption of {show(name)} is empty or not text.")
        image = root / str(name)
        if not isinstance(name, str) or not files.is_file(image, root):
            found = files.kind(image) if files.inside(image, root) else None
            what = "not an image" if found in (None, "file") else f"a {found}, not an image file,"
            raise UserError(f"{where}: {show(name)} is {what} in {root}.")
        mine = captions.setdefault(image, [])
        mine.extend(t.strip() for t in texts)
        long = next((len(t) for t in mine if len(t) > MAX_CAPTION_CHARS), None)
        if long is not None or len(mine) > MAX_CAPTIONS_PER_IMAGE:
            what = (
                f"a caption of {long:,} characters (at most {MAX_CAPTION_CHARS:,})"
                if long is not None
                else f"{len(mine):,} captions (at most {MAX_CAPTIONS_PER_IMAGE})"
            )
            raise UserError(
                f"{where}: {show(name)} has {what}: shorten the captions (the text encoder "
                "reads only their first few dozen words) or keep fewer."
            )
    return captions
