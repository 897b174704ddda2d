"""The concept evaluation of data with many named concepts (data=emoji): each measure scores
images known to be good near the top and images known to be bad near chance, and the evaluate
CLI reports them for a model, beside those calibration sets."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from diffusion_lit.data.datamodule import ImageDataModule
from diffusion_lit.data.emoji import Emoji
from diffusion_lit.evaluation.concepts import ConceptJudge, RealImages, calibrate, unseen_style
from diffusion_lit.evaluation.judge import train_classifier

from conftest import CONF_DIR, ROOT, TINY, compose_train

SUBCATEGORIES = ["heart", "plant-flower", "hand-fingers", "animal-mammal"]
TONES = {"1F3FB": (250, 220, 190), "1F3FC": (225, 185, 150), "1F3FD": (190, 140, 100),
         "1F3FE": (140, 95, 60), "1F3FF": (80, 55, 35)}  # fmt: skip
HELDOUT = {"dark": ["thing 6"], "twitter": ["thing 10"]}


def entries(count: int) -> list[dict]:
    """``count`` emoji in four subcategories, every fourth with the five skin tones."""
    found = []
    for i in range(count):
        code = f"{0x1F400 + i:x}"
        entry = {"name": f"THING {i}", "short_names": [f"thing_{i}"],
                 "subcategory": SUBCATEGORIES[i % 4], "image": f"{code}.png"}  # fmt: skip
        if i % 4 == 2:
            entry["skin_variations"] = {t: {"image": f"{code}-{t.lower()}.png"} for t in TONES}
        found.append(entry)
    return found


def picture(i: int, vendor: str, tone: str | None = None, size: int = 16) -> bytes:
    """Emoji ``i``: a 4×4 pattern of its own, a little lighter in Twitter's style, its middle
    the skin tone's colour."""
    cells = np.random.default_rng(i).integers(0, 256, (4, 4, 3))
    pixels = np.kron(cells, np.ones((size // 4, size // 4, 1)))
    if vendor == "twitter":
        pixels = pixels + 25
    if tone:
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = TONES[tone]
    rgba = np.concatenate([pixels.clip(0, 255), np.full((size, size, 1), 255)], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def packages(root: Path, count: int = 24) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for vendor in ("google", "twitter"):
        members = [("package/emoji.json", json.dumps(entries(count)).encode())]
        for i, entry in enumerate(entries(count)):
            members.append((f"package/img/{vendor}/64/{entry['image']}", picture(i, vendor)))
            for tone, variant in (entry.get("skin_variations") or {}).items():
                members.append((f"package/img/{vendor}/64/{variant['image']}",
                                picture(i, vendor, tone)))  # fmt: skip
        with tarfile.open(root / f"emoji-datasource-{vendor}-16.0.0.tgz", "w:gz") as archive:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = packages(tmp_path_factory.mktemp("emoji"))
    dm = ImageDataModule(Emoji, image_size=8, channels=3, prompt_templates=["{Name}"],
                         val_fraction=0.25, num_workers=0, root=str(root),
                         heldout=HELDOUT)  # fmt: skip
    dm.setup("fit")
    judge, _ = train_classifier(dm.train_set, dm.val_set, 3, len(dm.class_names), epochs=5)
    real = RealImages.of(dm)
    scorer = ConceptJudge(judge, real)
    everything = list(range(len(real.concepts)))
    return scorer, real, calibrate(scorer, real, judge, everything, None, dm, seed=0)


def test_retrieval_finds_real_images_concepts_and_not_noises_or_a_shuffled_requests(scored):
    _, _, calibration = scored
    chance = 1 / 24
    assert calibration["heldout_real"]["r1"] >= 0.9 and calibration["heldout_real"]["r5"] == 1
    assert calibration["shuffled"]["r1"] <= 3 * chance
    assert calibration["noise"]["r1"] <= 0.3 and calibration["noise"]["fid"] > 10


def test_copies_catch_returned_training_images_and_only_them(scored):
    _, _, calibration = scored
    assert calibration["training_copies"]["copies"] == 1
    assert calibration["heldout_real"]["copies"] == 0 and calibration["noise"]["copies"] == 0


def test_tone_and_style_probes_follow_the_image_and_fail_when_asked_the_opposite(scored):
    scorer, real, _ = scored
    held = [i for i, c in enumerate(real.concepts) if not real.train[i] and scorer.knows(c)]
    toned = [i for i in range(len(real.concepts)) if real.tones[i] in ("light", "dark")]
    images, concepts = real.images[toned], [real.concepts[i] for i in toned]
    tones = [real.tones[i] for i in toned]
    opposite = [{"light": "dark", "dark": "light"}[t] for t in tones]
    assert scorer.score(images, concepts, tones=tones)["tone_auc"] == 1
    assert scorer.score(images, concepts, tones=opposite)["tone_auc"] == 0
    styles = [real.styles[i] for i in held]
    swapped = [{"google": "twitter", "twitter": "google"}[s] for s in styles]
    images, concepts = real.images[held], [real.concepts[i] for i in held]
    assert scorer.score(images, concepts, styles=styles)["style_accuracy"] >= 0.7
    assert scorer.score(images, concepts, styles=swapped)["style_accuracy"] <= 0.3


@pytest.mark.slow
def test_evaluate_reports_concepts_beside_their_calibration(tmp_path):
    from diffusion_lit.evaluate import evaluate
    from diffusion_lit.train import train

    root = packages(tmp_path / "emoji")
    data = ["data=emoji", f"data.root={root}", "data.image_size=8", "data.batch_size=16",
            "data.val_fraction=0.25", "~data.heldout",
            "+data.heldout={dark: [thing 6], twitter: [thing 10]}"]  # fmt: skip
    overrides = [o for o in TINY if not o.startswith("data")]
    train(compose_train([*overrides, *data, "data.num_workers=0"], tmp_path / "run"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            *data, f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            f"classifier.dir={tmp_path / 'judges'}", "classifier.epochs=2", "images_per_class=2",
            "phrasing_images_per_class=0", "attribute_images_per_class=0", "sampler=ddim",
            "steps=4", "concepts=8", "concept_images=2", f"out_dir={tmp_path / 'eval'}",
        ])  # fmt: skip
    concepts = evaluate(cfg)["concepts"]
    assert concepts["asked"] == 8 and 20 <= concepts["distinct_concepts"] <= 24  # trained on
    assert concepts["drawn"]["images"] == 16 and len(concepts["drawn"]["per_concept_r5"]) == 8
    for key in ["subcategory_accuracy", "r1", "r5", "copies", "fid"]:
        assert 0 <= concepts["drawn"][key] <= (1 if key != "fid" else float("inf"))
    assert concepts["rephrased"]["images"] == 16  # conf/heldout/emoji.yaml's phrasings
    assert {"tone_accuracy", "tone_auc"} <= set(concepts["tone"])
    assert concepts["tone_heldout"]["requests"] == 2 and "tone_auc" in concepts["tone_heldout"]
    assert concepts["style_heldout"]["requests"] == 2
    assert set(concepts["calibration"]) == {"heldout_real", "noise", "shuffled", "training_copies"}
    report = (tmp_path / "eval" / "eval.md").read_text()
    assert "| concept R@5 |" in report and "| style accuracy, held-out pairs |" in report
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["concepts"]["asked"] == 8
    torch.testing.assert_close(concepts["calibration"]["training_copies"]["copies"], 1.0)


SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
       b'<rect width="72" height="36" fill="#d22f27"/></svg>')  # fmt: skip


@pytest.mark.slow
def test_another_artists_emoji_are_rendered_and_matched_by_code(scored, tmp_path):
    """bench/emoji_eval.py renders OpenMoji's SVGs by code (upper case, with variation
    selectors), skipping what is not an emoji of the package; the calibration set matches them
    to the data's concepts and tones."""
    _, real, _ = scored
    tgz = tmp_path / "openmoji-17.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as archive:
        for name in ["package/color/svg/1F402-1F3FF.svg", "package/color/svg/1F400-FE0F.svg",
                     "package/color/svg/../1F401.svg", "package/guidelines/1F403.svg"]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(SVG)
            archive.addfile(info, io.BytesIO(SVG))
    out = tmp_path / "png"
    script = f"import sys; sys.path.insert(0, 'bench'); from emoji_eval import render; " \
             f"print(render({str(tgz)!r}, __import__('pathlib').Path({str(out)!r})))"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "2", done.stderr
    images, concepts, tones = unseen_style(out, real, 8, 3)
    assert concepts == ["thing 0", "thing 2"] and tones == [None, "dark"]
    assert images.shape == (2, 3, 8, 8) and images[0, 0, 0, 0] > 0.5 > images[0, 1, 0, 0]  # red
    assert (images[:, :, -1] == 1).all()  # the transparent half on white


def test_the_rephrasings_asked_are_no_caption_of_the_data(tmp_path):
    """conf/heldout/emoji.yaml's concept_phrasings say what no caption does, for every emoji."""
    from omegaconf import OmegaConf

    phrasings = OmegaConf.load(ROOT / "conf" / "heldout" / "emoji.yaml").concept_phrasings
    data = Emoji(packages(tmp_path / "emoji"), heldout=HELDOUT)
    said = {c for captions in data.captions for c in captions}
    asked = {p.format(name=name) for p in phrasings for name in set(data.concepts)}
    assert len(phrasings) >= 5 and "{name}" not in phrasings and not asked & said
