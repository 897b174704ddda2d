"""Extending a trained model: training on some classes (``data.classes``), starting a new run from
a model's weights (``init_from``) with its classes and captions kept, replay against forgetting,
LoRA adapters (trained, exported, drawn over their base, merged) and the lineage every model
records."""

import hashlib
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import load_file, save_file
from torchmetrics import MeanSquaredError

from diffusion_lit.diffusion.options import SamplingOptions
from diffusion_lit.errors import UserError
from diffusion_lit.evaluate import evaluate
from diffusion_lit.export import export
from diffusion_lit.modelfile.checkpoint import read_checkpoint
from diffusion_lit.modelfile.lineage import content_hash
from diffusion_lit.modelfile.load import load_model
from diffusion_lit.models.layers import ConditionalDropout, kept_prompts
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.runs.__main__ import main as runs_main
from diffusion_lit.text.captions import CaptionTable, merged
from diffusion_lit.train import main as train_main
from diffusion_lit.train import train
from diffusion_lit.training.config import build
from diffusion_lit.training.module import DiffusionModule, PseudoAccuracy
from diffusion_lit.training.replay import Replay

from conftest import CONF_DIR, TINY, compose_train

OLD, NEW = ["zero", "one"], ["two"]
EXPERIMENTS = ["quickstart", "quickstart_extend"]
FEW_STEPS = SamplingOptions(steps=4, seed=3)


def file_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def flowers_dir(tmp_path):
    """Two flowers the digits model has never seen."""
    root = tmp_path / "flowers"
    root.mkdir()
    for name in ["tulip_0.png", "rose_0.png"]:
        Image.new("RGB", (12, 12), (200, 30, 30)).save(root / name)
    return root


def first(weights: dict, change) -> None:
    """Changes the first of an adapter's weights."""
    name = next(iter(weights))
    weights[name] = change(weights[name])


def compose_export(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("export", overrides=overrides)


def test_some_classes_by_name_in_the_order_given():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, "data.classes=[nine,two]"])
    dm = build(cfg.data, "data")
    assert dm.class_names == ["nine", "two"]
    assert dm.class_prompts[0][0] == "Draw a nine" and dm.class_prompts[1][0] == "Draw a two"
    dm.setup("fit")
    labels = {int(dm.train_set[i][1]) for i in range(len(dm.train_set))}
    assert labels == {0, 1}  # numbered in the subset's order
    nines = sum(dm.train_set.dataset.targets[i] == 0 for i in dm.train_set.indices)
    assert 100 < nines < 200  # ~180 nines in the bundled digits, minus the val split


def test_a_class_the_data_lacks_is_one_line_listing_them(tiny_cfg, run_cli):
    status, err = run_cli(train_main, [*TINY, "data.classes=[seven,ten]"])
    assert status == 2 and err.count("\n") == 1
    assert "ten is not among the data's classes" in err and "zero, one, two" in err


def test_merged_captions_keep_the_base_first_and_add_the_new():
    base = CaptionTable([["a zero", "0"], ["a one", "1"]], attributes={"thickness": ["thin"]})
    new = CaptionTable([["a two", "2", "two"], ["a one", "one!", "1"]],
                       attributes={"thickness": ["thick"]})  # fmt: skip
    names, table, (old_map, new_map) = merged([(["zero", "one"], base), (["two", "one"], new)])
    assert names == ["zero", "one", "two"]
    assert table.class_prompts[0][:2] == ["a zero", "0"] and table.class_prompts[2] == [
        "a two", "2", "two",
    ]  # fmt: skip
    assert table.class_prompts[1] == ["a one", "1", "one!"]  # shared class: both, the base first
    assert table.attributes == {"thickness": ["thin", "thick"]}
    assert list(new_map.classes) == [2, 1] and list(new_map.positions[1]) == [0, 2, 1]
    rows = new_map.rows([1, 0], np.array([[1, 1], [0, 2]]))
    assert rows.tolist() == [[2, 2], [0, 2]]


def test_replay_makes_its_share_of_every_batch():
    replay = Replay(torch.zeros(10, 1, 4, 4), torch.zeros(10, dtype=torch.long),
                    torch.zeros(10, 1, dtype=torch.long), fraction=0.25)  # fmt: skip
    batch = torch.ones(6, 1, 4, 4), torch.ones(6, dtype=torch.long), torch.ones(6, 3).long()
    x0, labels, rows = replay.mix(batch)
    assert len(x0) == 8 and (labels == 0).sum() == 2 and rows.shape == (8, 3)


def test_a_distilled_replay_asks_of_the_model_what_its_base_answers(base):
    """With ``replay.distill``, a replayed image's target is the base's prediction for what the
    network saw: the null prompt where its conditional dropout dropped the prompt. A network
    that is still its base then has nothing to learn on the replayed images; with the drawn
    noise as the target (no distillation) it has."""
    spec, model = load_model(base)
    module = DiffusionModule(spec, model, optimizer=torch.optim.Adam).train()
    for dropout in (m for m in module.net.modules() if isinstance(m, ConditionalDropout)):
        dropout.p = 0.5  # some prompts dropped in every batch of 32
    torch.manual_seed(0)
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    labels = torch.randint(2, (32,))
    batch = images, labels, torch.zeros(32, 1, dtype=torch.long)
    _, teacher = load_model(base)
    losses = {}
    for name, taught_by in (("distilled", teacher), ("noise", None)):
        module.replay = Replay(images, labels, batch[2], fraction=0.5, teacher=taught_by)
        with kept_prompts(module.net) as keep:
            losses[name] = module.model_step(
                batch, MeanSquaredError(), PseudoAccuracy(), replayed=32
            ).item()
        assert not keep[0].all() and keep[0].any()
    assert losses["distilled"] < 1e-10 < 1e-2 < losses["noise"]


def test_extending_keeps_the_old_classes_and_starts_from_the_base(base, tmp_path):
    before = file_hash(base)
    _, base_model = load_model(base)
    overrides = [*TINY, "data.classes=[two]", f"init_from={base}", "replay.images_per_class=3",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=1"]  # fmt: skip
    _, objects = train(compose_train(overrides, tmp_path / "run"))
    module = objects["module"]
    assert module.spec.class_names == [*OLD, *NEW]
    assert module.spec.class_prompts[0][0] == "Draw a zero"  # the base's captions, kept
    link = module.spec.lineage[-1]
    assert link["hash"] == content_hash(base_model.net) and link["path"] == str(base.resolve())
    assert (link["classes"], link["how"], link["replay"]) == (NEW, "full", "generated, distilled")
    # the replayed images: the base's own samples of the classes the data lacks, labelled so
    assert sorted(module.replay.labels.unique().tolist()) == [0, 1]
    assert len(module.replay.labels) == 3 * len(OLD)
    assert content_hash(module.replay.teacher.net) == link["hash"]  # distilled from the base
    # a fresh run: its own step count (1 step), not the base's
    ckpt, spec = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 1 and spec.lineage == module.spec.lineage
    assert file_hash(base) == before  # the base's file is never written


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["init_from=/nonexistent/x.ckpt"], ["init_from='/nonexistent/x.ckpt' does not exist"]),
        (["data.image_size=12"], ["data.image_size=12", "the base's: 8"]),
        (["model.base_channels=8"], ["model.base_channels=8", "the base's: 4"]),
        (
            ["replay=data", "data=flowers", "data.root=FLOWERS", "data.channels=1"],
            ["replay=data", "has none of them"],
        ),  # fmt: skip
        (["finetune=lora", "finetune.targets=[nothing_here]"], ["finetune.targets"]),
    ],
)
def test_bad_extensions_are_one_line_before_any_work(base, tmp_path, run_cli, flowers_dir,
                                                     overrides, fragments):  # fmt: skip
    before = file_hash(base)
    given = [o.replace("FLOWERS", str(flowers_dir)) for o in overrides]
    args = [*TINY, f"init_from={base}", *given, f"paths.output_dir={tmp_path}"]
    status, err = run_cli(train_main, args)
    assert status == 2 and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))
    assert file_hash(base) == before


def test_lora_without_a_base_and_a_file_that_is_no_model_are_one_line(tmp_path, run_cli):
    status, err = run_cli(train_main, [*TINY, "finetune=lora"])
    assert status == 2 and "finetune=lora trains adapters over a trained model" in err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a model" * 10)
    status, err = run_cli(train_main, [*TINY, f"init_from={junk}"])
    assert status == 2 and err.count("\n") == 1 and "not a readable diffusion_lit" in err


def test_lora_trains_only_adapters_and_its_export_draws_as_its_checkpoint(base, lora_run):
    ckpt, objects = lora_run
    module = objects["module"]
    _, base_model = load_model(base)
    trained = {n for n, p in module.net.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    # the base's weights themselves did not move
    frozen = {n.replace(".base_layer", ""): p for n, p in module.net.named_parameters()
              if "lora_" not in n}  # fmt: skip
    for name, value in base_model.net.state_dict().items():
        assert torch.equal(frozen[name].detach().cpu(), value), name
    adapter = export(compose_export([f"ckpt_path={ckpt}"]))
    assert adapter.name == "adapter-last" and (adapter / "adapter.safetensors").is_file()
    config = json.loads((adapter / "adapter.json").read_text())
    assert config["base"]["hash"] == content_hash(base_model.net)
    assert "two" in config["class_names"] and "Base model" in (adapter / "README.md").read_text()
    merged_dir = export(compose_export([f"ckpt_path={ckpt}", "merge=true"]))
    full = sum(f.stat().st_size for f in merged_dir.iterdir() if f.suffix == ".safetensors")
    assert (adapter / "adapter.safetensors").stat().st_size < 0.5 * full
    prompts = ["Draw a two", "Draw a zero"]
    over = TextToImage.from_checkpoint(base, "cpu", adapters=[adapter])
    assert over.model.prompts.class_names == [*OLD, *NEW]
    drawn = [p(prompts, 2, options=FEW_STEPS).images
             for p in (over, TextToImage.from_checkpoint(ckpt, "cpu"),
                       TextToImage.from_checkpoint(merged_dir, "cpu"))]  # fmt: skip
    assert torch.allclose(drawn[0], drawn[1], atol=1e-5)
    assert torch.allclose(drawn[0], drawn[2], atol=1e-5)
    # weight 0: the base model's own images
    nothing = TextToImage.from_checkpoint(base, "cpu", adapters=[adapter], adapter_weights=[0])
    plain = TextToImage.from_checkpoint(base, "cpu")
    zeros = [p(["Draw a zero"], 2, options=FEW_STEPS).images for p in (nothing, plain)]
    assert torch.allclose(*zeros, atol=1e-5)


def test_an_adapter_for_another_base_is_refused(lora_run, trained_run, tmp_path):
    ckpt, _ = lora_run
    adapter = export(compose_export([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'a'}"]))
    other = trained_run[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="was made for the model") as err:
        TextToImage.from_checkpoint(other, "cpu", adapters=[adapter])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda c, w: c["lora"].update(rank=10**6), "is not a rank"),
        (lambda c, w: c["lora"].update(modules=["no.such.layer"]), "not the base model's"),
        (lambda c, w: first(w, lambda v: v[..., :1].contiguous()), "does not fit"),
        (lambda c, w: first(w, lambda v: v * float("nan")), "NaN"),
        (lambda c, w: c.update(base="x"), "does not name the base"),
    ],
)
def test_damaged_adapters_are_one_line(lora_run, base, tmp_path, damage, fragment):
    ckpt, _ = lora_run
    folder = export(compose_export([f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'a'}"]))
    config = json.loads((folder / "adapter.json").read_text())
    weights = load_file(folder / "adapter.safetensors")
    damage(config, weights)
    (folder / "adapter.json").write_text(json.dumps(config))
    save_file(weights, folder / "adapter.safetensors")
    with pytest.raises(UserError, match=fragment) as err:
        load_model(base, adapters=[folder])
    assert "\n" not in str(err.value)


def test_lineage_shows_in_runs_list_compare_and_the_model_card(base, tmp_path, run_cli, capsys):
    out = tmp_path / "outputs"
    args = [*TINY, "data.classes=[two]", f"init_from={base}", "replay=none",
            f"paths.output_dir={out}", "hydra.run.dir=" + str(out / "runs" / "fine")]  # fmt: skip
    status, err = run_cli(train_main, args)
    assert status == 0, err
    runs_main(["list", str(out)])
    listed = capsys.readouterr().out
    assert "from" in listed and "(full, replay none)" in listed
    fine = out / "runs" / "fine" / "checkpoints" / "last.ckpt"
    card = export(compose_export([f"ckpt_path={fine}"]))
    text = (card / "README.md").read_text()
    assert "## Lineage" in text and str(base.resolve()) in text


@pytest.mark.slow
def test_runs_compare_puts_a_fine_tune_beside_its_base(tmp_path, run_cli, capsys):
    out = tmp_path / "outputs"
    status, err = run_cli(train_main, [*TINY, "data.classes=[zero]", f"paths.output_dir={out}",
                                       f"hydra.run.dir={out / 'runs' / 'a'}"])  # fmt: skip
    assert status == 0, err
    parent = out / "runs" / "a" / "checkpoints" / "last.ckpt"
    status, err = run_cli(train_main, [*TINY, "data.classes=[one]", f"init_from={parent}",
                                       "replay.images_per_class=2", f"paths.output_dir={out}",
                                       f"hydra.run.dir={out / 'runs' / 'b'}"])  # fmt: skip
    assert status == 0, err
    runs_main(["compare", str(out / "runs" / "b")])
    table = capsys.readouterr().out
    assert str(out / "runs" / "a") in table and str(out / "runs" / "b") in table
    assert "init_from" in table and "data.classes" in table


@pytest.mark.slow
def test_evaluate_some_classes_of_a_model_of_some_classes(base, tmp_path):
    overrides = [
        "data=digits", f"classifier.dir={tmp_path / 'judges'}", "classifier.epochs=1",
        f"ckpt_path={base}", "images_per_class=2", "phrasing_images_per_class=1",
        "attribute_images_per_class=0", "steps=2", "train_classifier=true", "classes=[one]",
        "precision=32",  # the folder's name says -bf16 where the CPU computes bf16 natively
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    result = evaluate(cfg)  # a model of zero and one, judged among all ten digits
    assert result["classes"] == ["one"] and set(result["per_class_accuracy"]) == {"one"}
    assert (base.parent / "eval-last-dpmpp_2m_sde2-w1.5-only-one" / "eval.json").is_file()


@pytest.mark.parametrize("experiments", [EXPERIMENTS, ["fashion_mnist", "fashion_mnist_extend"]])
def test_the_extension_experiments_keep_their_base_model(experiments):
    """experiment=quickstart_extend starts from a quickstart model, fashion_mnist_extend from a
    fashion_mnist one: the same UNet, schedule, text encoder and data size (else init_from
    refuses it), with the extension recipe: a short warm-up, fewer epochs, distilled replay."""
    base, extend = [compose_train([f"experiment={name}"]) for name in experiments]
    for group in ("model", "schedule", "text_encoder"):
        assert base[group] == extend[group], group
    assert base.data.image_size == extend.data.image_size
    assert extend.optimizer.lr == base.optimizer.lr and extend.lr_scheduler.warmup_steps == 10
    assert extend.trainer.max_epochs < base.trainer.max_epochs
    assert extend.replay.mode == "generated" and extend.replay.distill
    # the recipe's replay share holds for whichever replay is chosen
    chosen = compose_train([f"experiment={experiments[1]}", "replay=data"]).replay
    assert chosen.mode == "data" and chosen.fraction == extend.replay.fraction
