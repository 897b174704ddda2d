"""Model files are data. A checkpoint or an export folder whose model spec names code to run
(Hydra-style ``_target_``s such as ``torch.load`` of a pickle, ``os.system``, ``builtins.exec``,
``subprocess.run``; a ``kind`` outside the table; a nested config) is refused with one line
through every way in: the Python API, the sample, evaluate and export CLIs and a training
resume. The payload never runs. Files in the previous format (1) still load and sample as they
did."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from diffusion_lit import evaluate, export, sample, train
from diffusion_lit.diffusion.guidance import Guidance
from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.spec import UnsafeModelFile
from diffusion_lit.pipeline import TextToImage
from diffusion_lit.text import MiniLMEncoder, TextEncoderUnavailable

from conftest import CONF_DIR, ROOT, TINY, assert_one_line

FORMAT1 = ROOT / "tests" / "data" / "format1"  # written by the code of commit 3b00ddc


class Payload:
    """Unpickling this touches the canary file."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (Path.touch, (self.canary,))


def attack(name: str, canary: Path, tmp_path: Path) -> dict:
    """A Hydra config node that, instantiated, creates ``canary``."""
    pickle_file = tmp_path / "x.pkl"
    pickle_file.write_bytes(pickle.dumps(Payload(canary)))
    return {
        "torch.load": {"_target_": "torch.load", "f": str(pickle_file), "weights_only": False},
        "os.system": {"_target_": "os.system", "command": f"touch {canary}"},
        "builtins.exec": {"_target_": "builtins.exec", "_args_": [f"open('{canary}', 'w')"]},
        "subprocess.run": {"_target_": "subprocess.run", "args": ["touch", str(canary)]},
    }[name]


def poison(spec: dict, way: str, node: dict) -> None:
    """Puts the attack ``node`` into a model spec (format 1 or 2) the ``way`` named."""
    if way == "format1-schedule":  # the example: hyper_parameters.schedule
        spec["schedule"] = node
    elif way == "format1-net":
        spec["net"] = node | {"image_size": 8}
    elif way == "format2-kind":
        spec["net"] = {"kind": node["_target_"]} | {k: v for k, v in node.items() if k[0] != "_"}
    elif way == "format2-arguments":
        spec["schedule"] = node
    elif way == "format2-nested":
        spec["net"]["base_channels"] = node


WAYS = ["format1-schedule", "format1-net", "format2-kind", "format2-arguments", "format2-nested"]
ATTACKS = ["torch.load", "os.system", "builtins.exec", "subprocess.run"]


@pytest.fixture(scope="module")
def format2(trained_run, tmp_path_factory):
    """A checkpoint and an export of the current format."""
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    out_dir = tmp_path_factory.mktemp("format2") / "export"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", f"out_dir={out_dir}"])
    export.export(cfg)
    return ckpt, out_dir


def poisoned_checkpoint(base: Path, way: str, node: dict, path: Path) -> Path:
    ckpt = torch.load(base, map_location="cpu", weights_only=True)
    poison(ckpt["hyper_parameters"], way, node)
    torch.save(ckpt, path)
    return path


def poisoned_export(base: Path, way: str, node: dict, path: Path) -> Path:
    shutil.copytree(base, path)
    config = json.loads((path / "config.json").read_text())
    poison(config["hyper_parameters" if config["version"] == 1 else "spec"], way, node)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("way", WAYS)
def test_a_model_file_naming_code_is_refused_everywhere_and_the_code_never_runs(
    format2, tmp_path, monkeypatch, run_cli, way, name
):
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "canary"
    node = attack(name, canary, tmp_path)
    base_ckpt, base_export = (
        (FORMAT1 / "model.ckpt", FORMAT1 / "export") if way.startswith("format1") else format2
    )
    ckpt = poisoned_checkpoint(base_ckpt, way, node, tmp_path / "model.ckpt")
    folder = poisoned_export(base_export, way, node, tmp_path / "export")

    for path in (ckpt, folder):
        with pytest.raises(UnsafeModelFile):
            TextToImage.from_checkpoint(path, device="cpu")
        status, stderr = run_cli(sample.main, [f"ckpt_path={path}", "device=cpu"])
        assert_one_line(status, stderr, "was not loaded")
        args = [f"ckpt_path={path}", "data=digits", "device=cpu", f"out_dir={tmp_path}/eval"]
        assert_one_line(*run_cli(evaluate.main, args), "was not loaded")
    args = [f"ckpt_path={ckpt}", f"out_dir={tmp_path}/exported"]
    assert_one_line(*run_cli(export.main, args), "was not loaded")
    args = [*TINY, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/resumed"]
    assert_one_line(*run_cli(train.main, args), "was not loaded")

    assert not canary.exists()
    assert not (tmp_path / "exported").exists() and not (tmp_path / "eval").exists()


def test_the_refusal_names_the_key_and_the_allowed_values(format2, tmp_path):
    node = {"_target_": "os.system", "command": "true"}
    ckpt = poisoned_checkpoint(format2[0], "format2-kind", node, tmp_path / "a.ckpt")
    with pytest.raises(UnsafeModelFile, match=r"net.kind='os.system' .* \(simple, enhanced\)"):
        TextToImage.from_checkpoint(ckpt)
    ckpt = poisoned_checkpoint(FORMAT1 / "model.ckpt", "format1-schedule", node, ckpt)
    with pytest.raises(
        UnsafeModelFile, match=r"schedule._target_='os.system' .*diffusion_lit.schedule"
    ):
        TextToImage.from_checkpoint(ckpt)


def test_a_text_encoder_folder_with_its_own_code_is_refused_without_running_it(tmp_path):
    """A model file may point the text encoder at a folder that ships Python code (transformers'
    ``auto_map``): it is never run (``trust_remote_code`` stays off)."""
    canary = tmp_path / "canary"
    folder = tmp_path / "encoder"
    folder.mkdir()
    auto_map = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tokenizer", None]}})
    )
    (folder / "evil.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    with pytest.raises(TextEncoderUnavailable, match="custom code"):
        MiniLMEncoder(folder)
    assert not canary.exists()


@pytest.mark.parametrize("form", ["model.ckpt", "export"])
def test_format1_files_still_load_and_sample_as_before(form):
    """Written by the previous code (its linear β for T = 20 unscaled): the same images (which
    it sampled in 32-bit)."""
    before = load_file(FORMAT1 / "samples.safetensors")["images"]
    pipe = TextToImage.from_checkpoint(FORMAT1 / form, device="cpu")
    # DDPM: the default sampler then
    images = pipe(None, num_images=2, sampler="ddpm", steps=5, guidance_scale=3.0, seed=0,
                  progress=False, precision="32").images  # fmt: skip
    torch.testing.assert_close(images, before, atol=1e-5, rtol=0)
    assert pipe.model.net._compiled_call_impl is None


def test_format1_training_options_are_not_part_of_the_model(tmp_path):
    """A format-1 file kept compile and channels_last among its hyperparameters; loading for
    sampling ignores them (it used to compile the UNet on load)."""
    ckpt = torch.load(FORMAT1 / "model.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"] |= {"compile": True, "channels_last": True}
    torch.save(ckpt, tmp_path / "model.ckpt")
    pipe = TextToImage.from_checkpoint(tmp_path / "model.ckpt")
    assert pipe.model.net._compiled_call_impl is None
    assert set(pipe.spec.to_dict()) == {
        "version", "net", "schedule", "text_encoder", "class_names", "class_prompts",
        "attributes", "sampling", "lineage", "adapter", "synonyms",
    }  # fmt: skip
    assert pipe.spec.guidance == Guidance()  # it recorded none: the defaults it was sampled with


def test_a_newer_format_asks_for_an_upgrade(format2, tmp_path):
    ckpt = torch.load(format2[0], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["version"] = 6
    torch.save(ckpt, tmp_path / "model.ckpt")
    with pytest.raises(UserError, match="format 6.*Upgrade diffusion_lit"):
        TextToImage.from_checkpoint(tmp_path / "model.ckpt")


FORMAT2 = ROOT / "tests" / "data" / "format2"  # written by the code of commit 0c538b5
# bit-exact on the CPU and thread count that wrote them; another CPU's kernels round differently
# (2e-6 seen on another EPYC), one thread instead of two by 1.2e-5 (a test worker of make test),
# where another model, sampler or prompt moves pixels by 1e-2 and more
ATOL = 5e-5


@pytest.mark.parametrize("form", ["model.ckpt", "export"])
def test_format2_files_written_before_the_layout_change_sample_the_same_pixels(form):
    """A tiny checkpoint and its export, with their own guidance (2 on [0.2, 1]): DDPM and
    DDIM, a stored prompt, a numeral and a prompt drawn as its nearest training prompt, and (from
    the checkpoint) the raw weights, as the code that wrote them sampled them. (DPM-Solver++ is
    left out: it has since taken a first-order step where guidance switches on, at 0.2 here.)"""
    before = load_file(FORMAT2 / "samples.safetensors")
    pipe = TextToImage.from_checkpoint(FORMAT2 / form, device="cpu")
    for sampler in ("ddpm", "ddim"):
        images = pipe(["Draw a six", "a 3", "a handwritten seven"], num_images=2, steps=5,
                      sampler=sampler, seed=0, progress=False, precision="32").images  # fmt: skip
        torch.testing.assert_close(images, before[f"{form}-{sampler}"], atol=ATOL, rtol=0)
    if form == "model.ckpt":
        raw = TextToImage.from_checkpoint(FORMAT2 / form, device="cpu", use_ema=False)
        images = raw(None, num_images=1, sampler="ddpm", steps=5, seed=1, progress=False,
                     precision="32").images  # fmt: skip
        torch.testing.assert_close(images, before["raw-ddpm"], atol=ATOL, rtol=0)
