import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import Subset
from torchvision.transforms.functional import gaussian_blur

from diffusion_lit.data import Digits
from diffusion_lit.data.datamodule import ImageDataModule
from diffusion_lit.evaluate import evaluate
from diffusion_lit.evaluation.judge import stack, train_classifier
from diffusion_lit.evaluation.metrics import evaluate_samples

from conftest import CONF_DIR


@pytest.fixture(scope="module")
def digits():
    dm = ImageDataModule(Digits, image_size=16, channels=1, prompt_templates=["Draw a {name}"],
                         val_fraction=0.2, num_workers=0)  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def judge(digits):
    return train_classifier(digits.train_set, digits.val_set, 1, 10, epochs=8, seed=0)


@pytest.fixture(scope="module")
def image_sets(digits):
    """Held-out digits (the real set the metrics compare against), training digits (real vs
    real), and sets known to be bad, made from those training digits."""
    heldout = stack(digits.val_set)
    n = len(heldout[0])
    train = stack(Subset(digits.val_set.dataset, digits.train_set.indices[: 2 * n]))
    reference = (train[0][:n], train[1][:n])
    images, labels = train[0][n:], train[1][n:]
    first = {int(c): images[(labels == c).nonzero()[0, 0]] for c in labels.unique()}
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    return (
        heldout,
        reference,
        {
            "real": images,
            "one image per class": torch.stack([first[int(c)] for c in labels]),
            "blurred": gaussian_blur(images, kernel_size=5, sigma=1.0),
            "noisy": (images + 0.2 * noise).clamp(-1, 1),
        },
        labels,
    )


@pytest.mark.slow
def test_judge_beats_chance_by_a_wide_margin(judge):
    _, accuracy = judge
    assert accuracy > 0.9  # chance: 0.1


@pytest.fixture(scope="module")
def scores(judge, image_sets):
    heldout, reference, sets, labels = image_sets
    model, _ = judge
    return {
        name: evaluate_samples(model, images, labels, heldout, reference, Digits.classes)
        for name, images in sets.items()
    }


@pytest.mark.slow
def test_real_images_score_like_real(scores, judge):
    real = scores["real"]
    assert real["conditional_accuracy"] == pytest.approx(judge[1], abs=0.05)
    assert real["fid_ratio"] < 1.6 and real["kid_ratio"] < 3
    assert real["diversity"] == pytest.approx(1, abs=0.1)
    assert real["diversity_real_vs_real"] == pytest.approx(1, abs=0.1)
    assert real["penultimate_diversity"] == pytest.approx(1, abs=0.1)
    assert real["precision"] > 0.7 and real["recall"] > 0.7


@pytest.mark.slow
def test_penultimate_diversity_sees_collapse_and_mixed_classes_not_noise(scores, judge, image_sets):
    """The variety of shapes within a class: none for one image per class; far more than real
    for images of every class under one label (a model that ignores its prompt); blur and noise
    leave it near real's (measured with this judge: real 0.97, one image 0.00, every class
    3.5, blurred 1.09, noisy 1.04)."""
    assert scores["one image per class"]["penultimate_diversity"] < 0.05
    heldout, reference, sets, labels = image_sets
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    mixed = evaluate_samples(judge[0], sets["real"], shuffled, heldout, reference, Digits.classes)
    assert mixed["penultimate_diversity"] > 2
    for bad in ("blurred", "noisy"):
        assert scores[bad]["penultimate_diversity"] == pytest.approx(1, abs=0.25)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["one image per class", "blurred", "noisy"])
def test_the_judge_sees_look_alike_blurred_and_noisy_images(scores, bad):
    """The right digit nearly every time (a judge that only names the class passes them all),
    but clearly apart from real handwriting: at least thrice real's FID ratio (measured: 9.9×,
    11.7×, 3.7× against 0.87× for real), and look-alikes without diversity or recall, blurred
    and noisy images outside the real manifold (precision; blur and noise add spread, so the
    diversity figure does not see them)."""
    real, fake = scores["real"], scores[bad]
    assert fake["conditional_accuracy"] > 0.9
    assert fake["fid_ratio"] > 3 * real["fid_ratio"]
    if bad == "one image per class":
        assert fake["diversity"] < 0.05 and fake["recall"] < 0.1
    else:
        assert fake["precision"] < 0.75 * real["precision"]
    if bad == "blurred":
        assert fake["recall"] < 0.5 * real["recall"]


@pytest.mark.slow
def test_random_noise_scores_like_chance(judge, image_sets):
    heldout, reference, sets, labels = image_sets
    noise = torch.rand_like(sets["real"]) * 2 - 1
    fake = evaluate_samples(judge[0], noise, labels, heldout, reference, Digits.classes)
    assert fake["conditional_accuracy"] < 0.3
    assert fake["fid_ratio"] > 10 and fake["precision"] < 0.05


def test_evaluate_cli_trains_the_judge_and_writes_eval_json(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    overrides = [
        "data=digits", "data.num_workers=0", f"classifier.dir={tmp_path / 'judges'}",
        "classifier.epochs=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "images_per_class=4", "sampler=ddim", "steps=5", f"out_dir={tmp_path / 'eval'}",
        "attribute_images_per_class=2",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, "train_classifier=true"])
    result = evaluate(cfg)
    assert (tmp_path / "judges" / "Digits_8px_1ch_v2.safetensors").is_file()  # the model's size
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in [
        "conditional_accuracy", "per_class_accuracy", "fid", "kid_mean", "kid_std",
        "fid_real_vs_real", "kid_mean_real_vs_real", "fid_ratio", "kid_ratio", "diversity",
        "per_class_diversity", "diversity_real_vs_real", "precision", "recall",
        "penultimate_diversity", "penultimate_diversity_real_vs_real",
        "classifier_accuracy", "images_per_second",
        "sampler", "steps", "guidance_scale", "use_ema", "seed", "images_per_class", "notes",
    ]:  # fmt: skip
        assert key in saved
    assert (
        set(saved["per_class_accuracy"]) == set(saved["per_class_diversity"]) == set(Digits.classes)
    )
    assert "skipped" in saved["notes"]["fid_inception"]
    assert (tmp_path / "eval" / "grid.png").is_file() and (tmp_path / "eval" / "eval.md").is_file()
    # accuracy on the training phrasings and on held-out ones (conf/heldout/digits.yaml), by prompt
    assert 0 <= saved["training_phrasings_accuracy"] <= 1
    assert 0 <= saved["heldout_phrasings_accuracy"] <= 1
    assert "Draw a six" in saved["training_phrasings_per_prompt"]
    assert "please sketch the number six" in saved["heldout_phrasings_per_prompt"]
    assert "held-out phrasings" in (tmp_path / "eval" / "eval.md").read_text()
    # each attribute the data's captions name: opposite words drawn and measured (thin/thick ...)
    thickness = saved["attributes"]["thickness"]
    assert thickness["words"] == ["thin", "thick"] and 0 <= thickness["auc_trained"] <= 1
    assert {"auc_heldout", "auc_other_words", "in_bin_trained"} <= set(thickness)
    assert set(thickness["per_class_auc_words"]) == set(Digits.classes)
    assert "AUC" in (tmp_path / "eval" / "eval.md").read_text()

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, "use_ema=false", "guidance_scale=1"])
    again = evaluate(cfg)  # the cached judge, no retraining
    assert again["classifier_accuracy"] == result["classifier_accuracy"]


def test_evaluate_trains_the_judge_it_lacks(trained_run, tmp_path, caplog):
    run_dir, _, _ = trained_run
    ckpt = tmp_path / "checkpoints" / "last.ckpt"  # its evaluation is written beside it
    ckpt.parent.mkdir()
    ckpt.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    overrides = [
        f"ckpt_path={ckpt}", f"classifier.dir={tmp_path}", "classifier.epochs=1",
        "images_per_class=2", "phrasing_images_per_class=1", "steps=2", "precision=bf16-mixed",
        "attribute_images_per_class=1",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with caplog.at_level("INFO"):
        result = evaluate(cfg)
    assert "Training the judge classifier" in caplog.text
    assert (tmp_path / "Digits_8px_1ch_v2.safetensors").is_file()
    # the folder and eval.json name what was sampled: the model's own guidance, bf16
    folder = ckpt.parent / "eval-last-dpmpp_2m_sde2-w1.5-bf16"  # its own grid and η: not named
    saved = json.loads((folder / "eval.json").read_text())
    assert (saved["timestep_spacing"], saved["eta"]) == ("high_noise", 1.5)
    assert saved["sampling_precision"] == "bf16-mixed"
    assert (saved["guidance_scale"], saved["guidance_interval"]) == (1.5, [0, 1])
    assert 0 <= saved["precision"] <= 1 and saved["precision"] == result["precision"]
