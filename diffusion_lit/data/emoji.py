"""Emoji artwork with their names: the npm registry's ``emoji-datasource-<vendor>`` packages
(Google's Noto Emoji, Apache-2.0; Twitter's Twemoji, CC-BY 4.0), each ``img/<vendor>/64/*.png``
(64×64 RGBA, the skin-tone variants included) beside ``emoji.json`` (per emoji its name, short
names, category, subcategory and skin variations). ``python -m diffusion_lit.data.emoji
<folder>`` (``make emoji``) fetches the tarballs into a folder; :class:`Emoji` reads them
straight from the tarballs, as a stranger's archives: only regular members named under
``package/`` (no ``..``, no absolute path, no link), each within a size bound read before it
is, every image's dimensions checked before it is decoded. RGBA is composited on white. The class
is the subcategory (``plant-flower``, ``heart``, ``country-flag``); each image is captioned with
its name and short names, and with captions that add its skin tone, its artist's style or both
("thumbs up: dark skin tone", "thumbs up, Twitter style", "thumbs up: dark skin tone, Twitter
style"), so a request may say either or leave it out; ``heldout`` names concept × tone and
concept × style pairs no caption says, to judge composition on. Apple's and Facebook's packages
are not read: their licences do not allow it."""

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from diffusion_lit import files
from diffusion_lit.errors import UserError, first_line
from diffusion_lit.images import on_white

VENDORS = {"google": "Google", "twitter": "Twitter"}  # the packages whose licences allow it
STYLES = {"google": "Google style", "twitter": "Twitter style"}
LICENCES = {"google": "Noto Emoji, Apache-2.0", "twitter": "Twemoji, CC-BY 4.0"}
TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark",
         "1F3FF": "dark"}  # fmt: skip
# a member of a package is a 64×64 PNG (a few kilobytes) or emoji.json (under 2 MB)
MAX_IMAGE_BYTES, MAX_INDEX_BYTES, MAX_SIDE = 2**20, 16 * 2**20, 256
FIX = "fetch it again: python -m diffusion_lit.data.emoji <folder> (make emoji)"


def tarball(root: Path, vendor: str) -> Path:
    """The newest ``emoji-datasource-<vendor>-*.tgz`` in ``root``."""
    found = sorted(root.glob(f"emoji-datasource-{vendor}-*.tgz"))
    if not found or not files.is_file(found[-1], root):
        raise UserError(
            f"No emoji-datasource-{vendor}-*.tgz in {root}: fetch the packages with python -m "
            f"diffusion_lit.data.emoji {root} (make emoji), or copy the .tgz files there."
        )
    return found[-1]


def read_members(path: Path, vendor: str) -> tuple[dict, dict[str, bytes]]:
    """``emoji.json`` and the vendor's 64 px PNGs (file name → bytes) of a package tarball,
    each member checked before it is read."""
    index, images = None, {}
    prefix = f"package/img/{vendor}/64/"
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = member.name
                outside = name.startswith("/") or ".." in Path(name).parts
                if outside or not name.startswith("package/"):
                    raise UserError(f"{path} holds a member named {name!r}, outside its "
                                    f"package: it was not read; {FIX}.")  # fmt: skip
                if member.issym() or member.islnk():
                    raise UserError(f"{path} holds a link, {name!r}, which a package never "
                                    f"does: it was not read; {FIX}.")  # fmt: skip
                if not member.isfile():
                    continue
                if name == "package/emoji.json":
                    index = _read(archive, member, MAX_INDEX_BYTES, path)
                elif name.startswith(prefix) and name.endswith(".png"):
                    images[name.removeprefix(prefix)] = _read(
                        archive, member, MAX_IMAGE_BYTES, path
                    )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable package ({first_line(err)}); {FIX}.") from err
    if index is None:
        raise UserError(f"{path} has no package/emoji.json; {FIX}.")
    try:
        entries = json.loads(index)
    except (ValueError, RecursionError) as err:
        raise UserError(f"{path}: its emoji.json is not JSON ({first_line(err)}); {FIX}.") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: its emoji.json is not a list of emoji; {FIX}.")
    return entries, images


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo, limit: int, path: Path) -> bytes:
    if member.size > limit:
        raise UserError(
            f"{path}: {member.name} claims {member.size:,} bytes, more than such a file has "
            f"({limit:,}); {FIX}."
        )
    return archive.extractfile(member).read(limit + 1)[:limit]


def rgb_on_white(data: bytes, where: str) -> Image.Image:
    """A PNG's pixels, its transparency composited on white."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MAX_SIDE:
                raise UserError(f"{where} is {image.width}×{image.height}, not an emoji of 64 px")
            return on_white(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{where} is not an image that can be read ({first_line(err)}).") from err


def words(name) -> str:
    """'FATHER CHRISTMAS' → 'father christmas'; 'thumbs_up' → 'thumbs up'."""
    return re.sub(r"[_\s]+", " ", str(name)).strip().lower()


class Emoji(Dataset):
    """The emoji of the packages in ``root`` (``vendors``: google, twitter), each with its
    captions (``captions``) and its subcategory as its class."""

    def __init__(
        self,
        root: str | Path,
        vendors: tuple[str, ...] = ("google", "twitter"),
        heldout: dict[str, list[str]] | None = None,
        transform: Callable | None = None,
    ):
        self.root, self.transform = Path(root), transform
        unknown = [v for v in vendors if v not in VENDORS]
        if unknown or not vendors:
            raise UserError(
                f"data.vendors={list(vendors)}: the emoji packages read are "
                f"{', '.join(VENDORS)} (Apple's and Facebook's licences do not allow training)."
            )
        self.heldout = heldout = _pairs(heldout)
        self.images, self.captions, names = [], [], []
        # each image's emoji name, skin tone (or None), package and code ("1f44d-1f3fb")
        self.concepts, self.tones, self.styles, self.codes = [], [], [], []
        for vendor in vendors:
            path = tarball(self.root, vendor)
            entries, pngs = read_members(path, vendor)
            for entry in entries:
                for image, name, shorts, tone in _variants(entry):
                    if image not in pngs:
                        continue
                    self.images.append(rgb_on_white(pngs[image], f"{path}: {image}"))
                    said = {w for w in (tone, vendor) if w and (name, w) not in heldout}
                    self.captions.append(captions(name, shorts, tone, vendor, said))
                    self.concepts.append(name)
                    self.tones.append(tone)
                    self.styles.append(vendor)
                    self.codes.append(image.removesuffix(".png").lower())
                    names.append(str(entry.get("subcategory") or "other"))
        if not self.images:
            raise UserError(f"The packages in {self.root} hold no emoji images; {FIX}.")
        missing = sorted({n for n, _ in heldout} - set(self.concepts))
        if missing:
            raise UserError(
                f"data.heldout names what no emoji of the packages is called: "
                f"{', '.join(map(repr, missing))} (names as the captions say them, e.g. "
                f"{self.concepts[0]!r})."
            )
        self.classes = sorted(set(names))
        self.targets = [self.classes.index(n) for n in names]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.targets[index]


def _variants(entry: dict):
    """(image file, name, short names, skin tone or None) of an emoji and of each of its skin
    tones."""
    name = words(entry.get("name") or (entry.get("short_names") or ["emoji"])[0])
    shorts = [words(s) for s in entry.get("short_names") or [] if words(s) != name][:4]
    if isinstance(entry.get("image"), str):
        yield entry["image"], name, shorts, None
    for code, variant in (entry.get("skin_variations") or {}).items():
        tone = TONES.get(str(code).upper())
        if tone and isinstance(variant, dict) and isinstance(variant.get("image"), str):
            yield variant["image"], name, shorts, tone


def captions(name: str, shorts: list[str], tone: str | None, vendor: str, said: set) -> list[str]:
    """An emoji image's captions: its name and short names, then its skin tone and its style
    (``vendor``'s) each alone and together, as far as ``said`` holds them (a held-out pair's
    word is never said)."""
    found = [name, *shorts]
    if tone in said:
        found += [f"{name}: {tone} skin tone", f"{name} with {tone} skin"]
    if vendor in said:
        found.append(f"{name}, {STYLES[vendor]}")
    if tone in said and vendor in said:
        found.append(f"{name}: {tone} skin tone, {STYLES[vendor]}")
    return found


def _pairs(heldout) -> set[tuple[str, str]]:
    """``heldout`` (a tone or vendor → emoji names) as (name, word) pairs, checked."""
    known = [*TONES.values(), *VENDORS]
    if heldout is None:
        return set()
    if not isinstance(heldout, Mapping) or not all(
        w in known
        and isinstance(ns, Sequence)
        and not isinstance(ns, str)
        and all(isinstance(n, str) for n in ns)
        for w, ns in heldout.items()
    ):
        raise UserError(
            f"data.heldout={heldout!r} must map skin tones ({', '.join(TONES.values())}) or "
            f"vendors ({', '.join(VENDORS)}) to emoji names: e.g. {{dark: [thumbs up sign], "
            "twitter: [tulip]}."
        )
    return {(n, w) for w, ns in heldout.items() for n in map(words, ns)}


def fetch(folder: Path, vendors=tuple(VENDORS)) -> list[Path]:
    """Fetches the packages into ``folder``: ``npm pack`` where npm is, else the registry's
    tarball by URL; writes the licences beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for vendor in vendors:
        package = f"emoji-datasource-{vendor}"
        if shutil.which("npm"):
            subprocess.run(["npm", "pack", package, "--pack-destination", str(folder)],
                           check=True, capture_output=True)  # fmt: skip
        else:
            with urllib.request.urlopen(f"https://registry.npmjs.org/{package}/latest") as f:
                url = json.load(f)["dist"]["tarball"]
            urllib.request.urlretrieve(url, folder / Path(url).name)
        found.append(tarball(folder, vendor))
    (folder / "ATTRIBUTION.md").write_text(
        "Emoji artwork from the npm packages emoji-datasource-<vendor>:\n\n"
        + "".join(f"- {VENDORS[v]}: {LICENCES[v]}\n" for v in vendors)
    )
    return found


def main(argv: list[str]) -> None:
    folder = Path(argv[0] if argv else "data/emoji")
    for path in fetch(folder):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
