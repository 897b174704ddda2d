"""Emoji packages read straight from their npm tarballs, as a stranger's archives: the classes,
captions and pixels a package gives, and one line for a member that is not what a package
holds."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_lit.data.emoji import Emoji
from diffusion_lit.errors import UserError

from conftest import TINY, compose_train

ENTRIES = [
    {"name": "TULIP", "short_names": ["tulip"], "subcategory": "plant-flower",
     "image": "1f337.png"},
    {"name": "RED HEART", "short_names": ["heart", "red_heart"], "subcategory": "heart",
     "image": "2764.png"},
    {"name": "THUMBS UP SIGN", "short_names": ["+1", "thumbsup"], "subcategory": "hand-fingers",
     "image": "1f44d.png", "skin_variations": {"1F3FF": {"image": "1f44d-1f3ff.png"}}},
]  # fmt: skip


def png(colour, size=8) -> bytes:
    """An RGBA PNG: its left half ``colour``, its right half transparent."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (size // 2, size), colour), (0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def package(root: Path, vendor: str = "google", extra=()) -> Path:
    """A package tarball of the three emoji (and ``extra`` members: (TarInfo, bytes))."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"emoji-datasource-{vendor}-16.0.0.tgz"
    members = [("package/emoji.json", json.dumps(ENTRIES).encode())]
    for i, name in enumerate(["1f337.png", "2764.png", "1f44d.png", "1f44d-1f3ff.png"]):
        members.append((f"package/img/{vendor}/64/{name}", png((200, 40 * i, 30, 255))))
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info, data in extra:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_a_package_gives_each_emoji_and_skin_tone_with_its_captions(tmp_path):
    package(tmp_path)
    package(tmp_path, "twitter")
    data = Emoji(tmp_path)
    assert data.classes == ["hand-fingers", "heart", "plant-flower"] and len(data) == 8
    assert data.captions[1] == ["red heart", "heart", "red heart, Google style"]
    assert data.captions[3] == [  # the name alone, with its tone, its style, both
        "thumbs up sign", "+1", "thumbsup", "thumbs up sign: dark skin tone",
        "thumbs up sign with dark skin", "thumbs up sign, Google style",
        "thumbs up sign: dark skin tone, Google style",
    ]  # fmt: skip
    assert data.captions[4][-1] == "tulip, Twitter style"
    assert data.tones[3] == "dark" and data.styles[4] == "twitter"
    assert data.concepts[3] == "thumbs up sign" and data.codes[3] == "1f44d-1f3ff"
    image, label = data[0]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and data.classes[label] == "plant-flower"
    assert (pixels[:, 6:] == 255).all() and (pixels[:, :2] == (200, 0, 30)).all()  # on white


def test_a_held_out_pair_is_never_said_and_a_name_no_emoji_has_is_one_line(tmp_path):
    package(tmp_path)
    package(tmp_path, "twitter")
    data = Emoji(tmp_path, heldout={"dark": ["thumbs up sign"], "twitter": ["TULIP"]})
    said = {c for captions in data.captions for c in captions}
    assert not any("dark" in c for c in said) and "tulip, Twitter style" not in said
    assert "thumbs up sign, Twitter style" in said and "tulip, Google style" in said
    assert data.tones.count("dark") == 2  # the images are still there
    with pytest.raises(UserError, match="no emoji of the packages is called: 'tullip'"):
        Emoji(tmp_path, heldout={"twitter": ["tullip"]})
    with pytest.raises(UserError, match="must map skin tones"):
        Emoji(tmp_path, heldout={"purple": ["tulip"]})


def hostile(name: str, kind=tarfile.REGTYPE, data: bytes | None = b"x", link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([hostile("package/../../evil.png")], "outside its package"),
        ([hostile("/etc/evil")], "outside its package"),
        ([hostile("package/img/google/64/x.png", tarfile.SYMTYPE, link="/etc/passwd")],
         "holds a link"),
        ([hostile("package/img/google/64/big.png", data=bytes(2**20 + 1))], "more than such"),
    ],
    ids=["dot-dot", "absolute", "symlink", "oversized"],
)  # fmt: skip
def test_a_member_no_package_holds_is_one_line_and_nothing_is_read(tmp_path, extra, fragment):
    package(tmp_path, extra=extra)
    with pytest.raises(UserError, match=fragment) as err:
        Emoji(tmp_path, vendors=("google",))
    assert "\n" not in str(err.value)
    assert not (tmp_path.parent / "evil.png").exists()


def test_an_image_of_another_size_or_a_missing_package_is_one_line(tmp_path):
    path = package(tmp_path, extra=[])
    with tarfile.open(path, "w:gz") as archive:  # the same package, its tulip 1,000 px wide
        for name, data in [
            ("package/emoji.json", json.dumps(ENTRIES[:1]).encode()),
            ("package/img/google/64/1f337.png", png((1, 2, 3, 255), 1000)),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))  # fmt: skip
    with pytest.raises(UserError, match="not an emoji of 64 px"):
        Emoji(tmp_path, vendors=("google",))
    with pytest.raises(UserError, match="make emoji"):
        Emoji(tmp_path / "nowhere")
    with pytest.raises(UserError, match="licences do not allow"):
        Emoji(tmp_path, vendors=("apple",))


def test_data_emoji_trains_on_some_subcategories(tmp_path):
    from diffusion_lit.train import train

    package(tmp_path / "emoji")
    overrides = [o for o in TINY if not o.startswith("data")]
    cfg = compose_train([*overrides, "data=emoji", f"data.root={tmp_path / 'emoji'}",
                         "data.image_size=8", "data.batch_size=4", "data.val_fraction=0.3",
                         "data.classes=[heart,hand-fingers]", "data.vendors=[google]",
                         "~data.heldout", "+data.heldout={dark: [thumbs up sign]}"],
                        tmp_path / "run")  # fmt: skip
    _, objects = train(cfg)
    spec = objects["module"].spec
    assert spec.class_names == ["heart", "hand-fingers"] and spec.net["in_channels"] == 3
    assert "thumbs up sign, Google style" in spec.class_prompts[1]
    assert not any("dark" in c for c in spec.class_prompts[1])  # held out
