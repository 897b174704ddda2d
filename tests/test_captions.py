"""A caption per training image: what each image shows, measured from its pixels (Morpho-MNIST's
thickness and slant, a garment's brightness and size, a photo's colour), put into words within
its class, composed into captions; your own captioned folders in Hugging Face's imagefolder
layout; and a model that records what it knows and reads new prompts its own way."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lit.data import CaptionedFolder, Digits
from diffusion_lit.data.measures import brightness, colour, size, slant, thickness
from diffusion_lit.errors import UserError
from diffusion_lit.evaluation.attributes import auc, measured
from diffusion_lit.text.captions import Attribute, described

from conftest import TINY, compose_train

DIGITS = ["zero", "one", "two"]
SLANT = ("slanted left", "upright", "slanted right")


def bar(width: int, lean: int = 0, size_: int = 28) -> np.ndarray:
    """A vertical stroke ``width`` pixels wide whose top is ``lean`` pixels to the right."""
    image = np.zeros((size_, size_))
    for row in range(4, size_ - 4):
        shift = round(lean * (size_ - 4 - row) / (size_ - 8))
        start = size_ // 2 - width // 2 + shift
        image[row, start : start + width] = 1.0
    return image


def test_thickness_is_the_stroke_width():
    for width in (2, 4, 7):
        assert thickness(bar(width)) == pytest.approx(width, rel=0.3)
    assert thickness(bar(2)) < thickness(bar(4)) < thickness(bar(7))


def test_slant_is_positive_when_the_top_leans_right():
    assert slant(bar(3, lean=6)) > 0.2 and slant(bar(3, lean=-6)) < -0.2
    assert abs(slant(bar(3))) < 0.02
    assert slant(bar(3, lean=8)) == pytest.approx(math.atan(8 / 20), abs=0.05)


def test_brightness_size_and_colour_of_simple_images():
    square = np.zeros((28, 28))
    square[4:14, 4:14] = 0.3
    assert brightness(square) == pytest.approx(0.3) and size(square) == pytest.approx(100 / 784)
    red, blue = np.zeros((8, 8, 3)), np.zeros((8, 8, 3))
    red[..., 0], blue[..., 2] = 0.9, 0.8
    assert (
        colour(red) == "red"
        and colour(blue) == "blue"
        and colour(np.full((8, 8, 3), 0.5)) == "white"
    )


def test_real_digits_are_measured_and_their_shares_split_them():
    digits = Digits()
    images = [np.asarray(digits[i][0], dtype=float) / 255 for i in range(200)]
    labels = [digits[i][1] for i in range(200)]
    values = [thickness(image) for image in images]
    words = Attribute("thickness", "thickness", ("thin", None, "thick")).words_of(values, labels)
    thick = [v for v, w in zip(values, words, strict=True) if w == "thick"]
    thin = [v for v, w in zip(values, words, strict=True) if w == "thin"]
    assert all(np.isfinite(values)) and len(thick) and len(thin)
    # a real image of the thick share is thicker than one of its class's thin share
    assert auc(thick, thin) > 0.8


def table(share: float = 0.5, heldout=None):
    attributes = [
        Attribute("thickness", "thickness", ("thin", None, "thick")),
        Attribute("slant", "slant", SLANT),
    ]
    words = {"thickness": ["thin", "thick", None], "slant": ["upright", "slanted left", "upright"]}
    return described(
        DIGITS, ["Draw a {name}", "a {name}"], {"one": ["1"]}, attributes,
        ["a {thickness} {name}", "a {name}, {slant}", "a {thickness} {name}, {slant}"],
        heldout, words, [0, 1, 2], share,
    )  # fmt: skip


def test_captions_name_each_images_own_words_and_the_class_prompt_comes_first():
    captions = table()
    assert [p[0] for p in captions.class_prompts] == ["Draw a zero", "Draw a one", "Draw a two"]
    assert "a thick 1, slanted right" in captions.class_prompts[1]
    for image, (c, banned) in enumerate([(0, "thick"), (1, "thin"), (2, "thi")]):
        own = {captions.class_prompts[c][k] for k in captions.rows[image]}
        assert "Draw a " + DIGITS[c] in own and not any(banned in t for t in own)
    image_1 = {captions.class_prompts[1][k] for k in captions.rows[1]}
    assert "a thick 1, slanted left" in image_1 and "a one, upright" not in image_1
    assert captions.attributes == {"thickness": ["thin", "thick"], "slant": list(SLANT)}


def test_each_attribute_is_named_with_the_share_asked_for():
    for share in (0.5, 0.75):
        captions = table(share)
        drawn = [captions.class_prompts[0][k] for k in captions.rows[0]]  # thin, upright
        named = np.mean(["thin" in t for t in drawn])
        assert named == pytest.approx(share, abs=0.02)


def test_held_out_combinations_are_never_captions():
    captions = table(heldout={"thick": ["one"], "slanted right": ["zero", "two"]})
    assert not any("thick" in p for p in captions.class_prompts[1])
    assert any("thick" in p for p in captions.class_prompts[0])
    assert not any(
        "slanted right" in p for p in captions.class_prompts[0] + captions.class_prompts[2]
    )
    with pytest.raises(UserError, match="heldout_combinations"):
        table(heldout={"bold": ["one"]})


def test_the_datamodule_yields_each_images_captions(tmp_path):
    cfg = compose_train([o for o in TINY if not o.startswith("data.attributes")] +
                        [f"data.measure_cache={tmp_path}"])  # fmt: skip
    from diffusion_lit.training.config import build

    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    x, labels, rows = next(iter(datamodule.train_dataloader()))
    words = datamodule.attribute_words
    assert words["thickness"] == ["thin", "thick"] and rows.shape[0] == len(x)
    captions = datamodule.class_prompts
    for label, row in zip(labels.tolist(), rows.tolist(), strict=True):
        texts = {captions[label][k] for k in row}
        assert not ("a thin" in " ".join(texts) and "a thick" in " ".join(texts))
    assert list(tmp_path.glob("measures-*.npz"))  # measured once, cached


# your own captioned images


def write_folder(root, rows, classes=("red", "blue"), suffix=".jsonl"):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (200 * (c == 0), 30, 200 * (c == 1))).save(
                root / name / f"{i}.png"
            )
    if suffix == ".jsonl":
        (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def captions_of(classes=("red", "blue")):
    """Each image's captions, a list (a file's ``text`` is all lists or all strings, as Hugging
    Face's loader wants it)."""
    return [{"file_name": f"{n}/{i}.png", "text": [f"a {n} square", f"square number {i}"][: i + 1]}
            for n in classes for i in range(3)]  # fmt: skip


def test_a_captioned_folder_loads_here_and_with_hugging_face_datasets(tmp_path):
    root = write_folder(tmp_path / "folder", captions_of())
    folder = CaptionedFolder(root)
    assert folder.classes == ["blue", "red"] and len(folder) == 6
    assert folder.captions[folder.files.index(root / "red" / "1.png")] == [
        "a red square", "square number 1"
    ]  # fmt: skip
    assert folder.captions[folder.files.index(root / "red" / "0.png")] == ["a red square"]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(root), split="train")
    assert len(loaded) == 6 and {"image", "text"} <= set(loaded.column_names)
    assert sorted(map(str, loaded["text"])) == sorted(map(str, (r["text"] for r in captions_of())))


def test_a_captioned_folder_as_csv(tmp_path):
    root = write_folder(tmp_path / "folder", [], suffix=".csv")
    lines = ["file_name,text"] + [f"{r['file_name']},a square" for r in captions_of()]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    assert set(sum(CaptionedFolder(root).captions, [])) == {"a square"}


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda rows: rows + [{"file_name": "red/9.png", "text": "x"}], ["line 7", "red/9.png"]),
        (lambda rows: rows[1:], ["red/0.png has no caption"]),
        (lambda rows: rows[:2] + [dict(rows[2], text="  ")] + rows[3:], ["line 3", "empty"]),
        (lambda rows: rows + ["not json"], ["line 7", "not a JSON object"]),
        (lambda rows: rows + [{"file_name": "../secret.png", "text": "x"}], ["line 7", "secret"]),
    ],
    ids=["missing-image", "no-caption", "empty-caption", "malformed-line", "outside-root"],
)
def test_bad_metadata_is_one_line_naming_the_file_and_line(tmp_path, damage, fragments):
    rows = damage(captions_of())
    root = write_folder(tmp_path / "folder", [])
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    (root / "metadata.jsonl").write_text(text + "\n")
    with pytest.raises(UserError) as err:
        CaptionedFolder(root)
    assert "\n" not in str(err.value) and all(f in str(err.value) for f in fragments), err.value


def test_metadata_that_is_not_utf8_is_one_line(tmp_path):
    root = write_folder(tmp_path / "folder", [])
    (root / "metadata.jsonl").write_bytes(
        '{"file_name": "red/0.png", "text": "caf\xe9"}'.encode("latin-1")
    )
    with pytest.raises(UserError, match="metadata.jsonl is not UTF-8"):
        CaptionedFolder(root)


def test_a_captioned_folder_trains_and_its_captions_are_what_the_model_draws(tmp_path):
    from diffusion_lit.pipeline import TextToImage
    from diffusion_lit.train import train

    root = write_folder(tmp_path / "folder", captions_of())
    overrides = [o for o in TINY if not o.startswith("data")]
    cfg = compose_train([*overrides, "data=captioned", f"data.root={root}", "data.image_size=8",
                         "data.batch_size=4", "data.val_fraction=0.3"],
                        run_dir=tmp_path / "run")  # fmt: skip
    _, objects = train(cfg)
    assert set(objects["module"].spec.class_prompts[1]) == {
        "a red square", "square number 1", "square number 2"
    }  # fmt: skip
    pipe = TextToImage.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", "cpu")
    out = pipe(["a red square"], 2, steps=3, progress=False)
    assert out.drawn_as == ["a red square"] and torch.isfinite(out.images).all()


# a model trained on attribute captions


@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory):
    from diffusion_lit.train import train

    root = tmp_path_factory.mktemp("attributes")
    cfg = compose_train([o for o in TINY if not o.startswith("data.attributes")] +
                        [f"data.measure_cache={root}"], run_dir=root / "run")  # fmt: skip
    train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt"


def test_a_model_records_its_attribute_words_and_reads_new_prompts_from_their_embedding(
    attribute_run, trained_run, capsys
):
    from diffusion_lit.pipeline import TextToImage
    from diffusion_lit.sample import list_prompts

    pipe = TextToImage.from_checkpoint(attribute_run, "cpu")
    assert pipe.spec.attributes["slant"] == ["slanted left", "upright", "slanted right"]
    assert pipe.spec.nearest_prompt is False  # its captions compose: it reads the request itself
    out = pipe(["a thick two, slanted left"], 1, steps=2, progress=False)
    assert out.drawn_as == ["a thick two, slanted left"] and not out.substitutions
    plain = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")
    assert plain.spec.nearest_prompt is True and not plain.spec.attributes
    list_prompts(attribute_run, True)
    printed = capsys.readouterr().out.splitlines()
    assert printed[2].startswith("two: Draw a two |") and "thick" not in printed[2]
    assert (
        "thickness: thin, thick" in printed
        and "slant: slanted left, upright, slanted right" in printed
    )


def test_a_request_in_other_words_is_drawn_as_the_caption_saying_its_class_and_words(
    attribute_run,
):
    from diffusion_lit.pipeline import TextToImage

    pipe = TextToImage.from_checkpoint(attribute_run, "cpu")
    assert pipe.spec.synonyms["thick"][:3] == ["wide", "broad", "heavy"]  # kept in the model
    asked = ["a heavy 7 leaning to the left", "number seven", "a 2, tilted right",
             "a thick two, slanted left"]  # fmt: skip
    out = pipe(asked, 1, steps=2, progress=False)
    assert out.drawn_as[:3] == ["a thick seven, slanted left", "Draw a seven",
                                "a two, slanted right"]  # fmt: skip
    assert out.drawn_as[3] == asked[3]  # a held-out combination: a caption of its words
    assert out.substitutions[0] == (
        "'a heavy 7 leaning to the left' is read as seven, thickness thick, slant slanted left: "
        "drawn as 'a thick seven, slanted left'"
    )
    assert len(out.substitutions) == 3  # the caption it was asked for is drawn as itself
    unfamiliar = pipe(["a red car"], 1, steps=2, progress=False)
    assert unfamiliar.unfamiliar and "(nearest class)" in unfamiliar.substitutions[0]
    # the reading before: the request's own text embedding
    pipe.reader = None
    assert pipe(asked[:1], 1, steps=2, progress=False).drawn_as == asked[:1]


def test_the_reading_calibrates_on_the_training_vocabulary_alone():
    """Every class prompt of the digits reads as its class with no attribute, every caption as
    its class and its own words; a form of a word said word for word wins, a run of words as
    near to both ends of an attribute ("pen": "thin pen", "thick pen") says neither."""
    from diffusion_lit.text import MiniLMEncoder
    from diffusion_lit.text.reading import RequestReader

    data = compose_train(["data=digits"]).data
    classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    attributes = [Attribute.from_config(k, v) for k, v in data.attributes.items()]
    synonyms = {**data.class_synonyms, **data.attribute_synonyms}
    table = described(classes, list(data.prompt_templates), data.class_synonyms, attributes,
                      list(data.caption_templates), None)  # fmt: skip
    words = {a.name: a.known_words for a in attributes}
    reader = RequestReader(classes, table.class_prompts, words, synonyms, MiniLMEncoder().encode)
    captions = list(dict.fromkeys(p for ps in table.class_prompts for p in ps))
    owner = {p: c for c, ps in enumerate(table.class_prompts) for p in ps}
    read = reader.read(captions, [0] * len(captions))
    for caption, r in zip(captions, read, strict=True):
        assert r.class_name == classes[owner[caption]] and r.named, (caption, r)
        said = {a: max((w for w in ws if w in caption), key=len) for a, ws in words.items()
                if any(w in caption for w in ws)}  # fmt: skip
        assert r.words == said, (caption, r.words)
    [pen] = reader.read(["a seven in pen"], [0])
    assert pen.words == {} and pen.caption == "Draw a seven"


@pytest.mark.slow
def test_the_attribute_measure_calibrates_between_real_splits_and_a_model_that_ignores_words(
    trained_run, tmp_path
):
    """Real images split by the measure score near 1, a class-prompt model (which reads "a thick
    seven" as a seven) near 0.5."""
    from diffusion_lit.diffusion.options import SamplingOptions
    from diffusion_lit.evaluation.attributes import attribute_following
    from diffusion_lit.evaluation.metrics import real_sets
    from diffusion_lit.pipeline import TextToImage
    from diffusion_lit.training.config import build

    def data(size: int):
        overrides = [o for o in TINY if not o.startswith(("data.attributes", "data.image_size"))]
        cfg = compose_train(
            [*overrides, f"data.image_size={size}", f"data.measure_cache={tmp_path}"]
        )
        datamodule = build(cfg.data, "data")
        datamodule.setup("fit")
        return datamodule, real_sets(datamodule, 1000)[1]

    # the words each image was captioned with (measured at its own 8 px), and its measure as the
    # evaluation takes it, at a model's size (16 px)
    datamodule, (images, labels) = data(16)
    words = np.asarray(datamodule.captions.words["thickness"])[datamodule.train_set.indices[:1000]]
    values, labels = np.asarray(measured((images + 1) / 2, "thickness")), labels.numpy()
    per_class = [
        auc(values[(labels == c) & (words == "thick")], values[(labels == c) & (words == "thin")])
        for c in range(10)
    ]
    assert np.mean(per_class) > 0.9
    pipe = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")
    options = SamplingOptions(steps=5, nearest_prompt=True)
    datamodule, real = data(8)  # the tiny model's size
    result = attribute_following(
        pipe, datamodule.attributes, datamodule.caption_templates, datamodule.heldout, {},
        real, datamodule.class_names, 12, options,
    )  # fmt: skip
    for attribute in ("thickness", "slant"):
        assert abs(result["attributes"][attribute]["auc_trained"] - 0.5) < 0.12


def test_nested_guidance_draws_the_words_beyond_the_class_harder_and_leaves_class_prompts(
    attribute_run,
):
    from diffusion_lit.pipeline import TextToImage

    pipe = TextToImage.from_checkpoint(attribute_run, "cpu")
    assert pipe.spec.guidance.attribute_scale == 3.0  # the model's own, as trained
    kw = dict(steps=3, seed=0, progress=False)
    nested = pipe(["a thick two"], 2, **kw)
    plain = pipe(["a thick two"], 2, attribute_scale=1.5, **kw)
    assert nested.guidance.nested and not plain.guidance.nested
    assert not torch.equal(nested.images, plain.images)
    # a prompt of its class alone has no words beyond it: the same images, one pass fewer
    assert pipe.class_only(["Draw a two"], pipe.embed(["Draw a two"]), nested.guidance) is None
    alone = pipe(["Draw a two"], 2, **kw).images
    torch.testing.assert_close(alone, pipe(["Draw a two"], 2, attribute_scale=1.5, **kw).images)
    # beside a prompt that says more (whose class is guided harder), it keeps its own guidance
    beside = pipe(["Draw a two", "a thick two"], 2, **kw).images
    twice = pipe(["Draw a two", "Draw a two"], 2, **kw).images  # the same noise: a batch of 4
    torch.testing.assert_close(beside[0], twice[0], atol=1e-5, rtol=0)
    assert (beside[1] - twice[1]).abs().max() > 1e-2
