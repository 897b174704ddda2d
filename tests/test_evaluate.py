import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import Subset

from diffusion_lit.data import Digits
from diffusion_lit.datamodule import ImageDataModule
from diffusion_lit.errors import UserError
from diffusion_lit.evaluate import evaluate
from diffusion_lit.evaluation import evaluate_samples, stack, train_classifier

from conftest import CONF_DIR


@pytest.fixture(scope="module")
def digits():
    dm = ImageDataModule(Digits, image_size=8, channels=1, prompt_templates=["Draw a {name}"],
                         val_fraction=0.2, num_workers=0)  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def judge(digits):
    subset = Subset(digits.train_set, range(600))  # a tiny subset trains in seconds
    return train_classifier(subset, digits.val_set, 1, 10, epochs=4, seed=0)


def test_judge_beats_chance_by_a_wide_margin(judge):
    _, accuracy = judge
    assert accuracy > 0.8  # chance: 0.1


def test_real_images_score_like_real_and_noise_like_chance(judge, digits):
    model, accuracy = judge
    heldout, labels = stack(digits.val_set)
    half = len(heldout) // 2
    reference = stack(Subset(digits.val_set.dataset, digits.train_set.indices[:half]))[0]
    real = evaluate_samples(model, heldout[half:], labels[half:], heldout[:half], reference,
                            Digits.classes)  # fmt: skip
    assert real["conditional_accuracy"] == pytest.approx(accuracy, abs=0.1)
    assert real["fid"] < 2 * real["fid_real_vs_real"] + 0.5

    noise = torch.rand_like(heldout[half:]) * 2 - 1
    fake = evaluate_samples(model, noise, labels[half:], heldout[:half], reference, Digits.classes)
    assert fake["conditional_accuracy"] < 0.3
    assert fake["fid"] > 10 * real["fid"]
    assert fake["kid_mean"] > 10 * max(real["kid_mean"], 1e-3)


def test_evaluate_cli_trains_the_judge_and_writes_eval_json(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    overrides = [
        "data=digits", "data.num_workers=0", f"classifier.dir={tmp_path / 'judges'}",
        "classifier.epochs=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "images_per_class=4", "sampler=ddim", "steps=5", f"out_dir={tmp_path / 'eval'}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, "train_classifier=true"])
    result = evaluate(cfg)
    assert (tmp_path / "judges" / "Digits_8px_1ch.safetensors").is_file()  # the checkpoint's size
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in [
        "conditional_accuracy", "per_class_accuracy", "fid", "kid_mean", "kid_std",
        "fid_real_vs_real", "kid_mean_real_vs_real", "classifier_accuracy", "images_per_second",
        "sampler", "steps", "guidance_scale", "use_ema", "seed", "images_per_class", "notes",
    ]:  # fmt: skip
        assert key in saved
    assert set(saved["per_class_accuracy"]) == set(Digits.classes)
    assert "skipped" in saved["notes"]["fid_inception"]
    assert (tmp_path / "eval" / "grid.png").is_file() and (tmp_path / "eval" / "eval.md").is_file()

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, "use_ema=false", "guidance_scale=1"])
    again = evaluate(cfg)  # the cached judge, no retraining
    assert again["classifier_accuracy"] == result["classifier_accuracy"]


def test_evaluate_without_a_judge_says_how_to_train_one(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"classifier.dir={tmp_path}",
        ])  # fmt: skip
    with pytest.raises(UserError, match="train_classifier=true"):
        evaluate(cfg)
