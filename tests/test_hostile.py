"""Files built to hurt: model files from strangers (sizes that would exhaust memory, NaN weights,
lying headers, zip bombs), run folders whose files are links out of them, adapters, captioned
folders and run configs made to hang, exhaust or leak, and page requests made to multiply the
work. Each is answered with one line, in seconds, nothing is built from a file before it is
checked, and nothing outside the folders a command was given is read, written or deleted."""

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import datasets
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusion_lit import export, sample
from diffusion_lit.data.captioned import CaptionedFolder
from diffusion_lit.errors import UserError
from diffusion_lit.pipeline import TextToImage, prompt_folders
from diffusion_lit.runs.__main__ import main as runs_main

from conftest import CONF_DIR, ROOT, TINY, assert_one_line, png_claiming


def make_page(runs_dir: Path, start: Path, out_dir: Path, **models):
    """The web page's actions over the runs under ``runs_dir``."""
    from diffusion_lit import cli
    from diffusion_lit.page.actions import Limits, Models, Page

    models = Models("cpu", runs_dir, start, **models)
    return Page(models, runs_dir, out_dir, Limits(), cli.compose("sample"))


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "export"
    ckpt = trained_run[0] / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        export.export(compose("export", [f"ckpt_path={ckpt}", f"out_dir={folder}", "grid_steps=2"]))
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "model")
    return tmp_path / "model"


def edit_spec(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config["spec"])
    (folder / "config.json").write_text(json.dumps(config))


def refused(path: Path, run_cli, *fragments: str) -> None:
    """Refused with one line through the sample CLI, and as a UserError through the API."""
    with pytest.raises(UserError):
        TextToImage.from_checkpoint(path, device="cpu")
    args = [f"ckpt_path={path}", "device=cpu", "steps=2", "num_images=1", "out_dir=out"]
    assert_one_line(*run_cli(sample.main, args), *fragments)
    assert not Path("out").exists()


# model files


@pytest.mark.parametrize(
    ("key", "value"),
    [("base_channels", 10**6), ("image_size", 10**9), ("time_dim", 10**8),
     ("timesteps", 10**9)],
)  # fmt: skip
def test_a_spec_claiming_a_huge_model_is_refused_before_anything_is_built(
    exported, tmp_path, monkeypatch, run_cli, key, value
):
    monkeypatch.chdir(tmp_path)
    folder = copy_of(exported, tmp_path)
    edit_spec(folder, lambda spec: spec["net"].update({key: value}))
    refused(folder, run_cli, f"net.{key}={value}", "is not an integer from")


def test_a_huge_model_within_the_bounds_is_checked_against_the_file_before_it_is_built(
    exported, tmp_path, monkeypatch, run_cli
):
    """The widest UNet the bounds allow (1024 channels: ~1 GB of weights) in a file of a few
    kilobytes: its shapes are compared on the meta device, nothing is allocated."""
    monkeypatch.chdir(tmp_path)
    folder = copy_of(exported, tmp_path)
    edit_spec(folder, lambda spec: spec["net"].update(base_channels=1024))
    refused(folder, run_cli, "does not fit the model", "of another shape")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["weights", "prompts"])
def test_non_finite_weights_or_prompt_encodings_are_refused(
    exported, trained_run, tmp_path, monkeypatch, run_cli, bad, where
):
    monkeypatch.chdir(tmp_path)
    folder = copy_of(exported, tmp_path)
    name = {"weights": "model.safetensors", "prompts": "prompts.safetensors"}[where]
    tensors = load_file(folder / name)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key].view(-1)[0] = bad
    save_file(tensors, folder / name)
    refused(folder, run_cli, "holds NaN or infinite values", key)
    # and a checkpoint of the same
    ckpt = torch.load(trained_run[0] / "checkpoints" / "last.ckpt", weights_only=True)
    prefix = {"weights": "net.", "prompts": "prompts."}[where]
    key = next(k for k in ckpt["state_dict"] if k.startswith(prefix))
    ckpt["state_dict"][key].view(-1)[0] = bad
    torch.save(ckpt, tmp_path / "model.ckpt")
    refused(tmp_path / "model.ckpt", run_cli, "holds NaN or infinite values")


def test_an_image_that_turns_non_finite_is_never_written(exported, tmp_path, monkeypatch, run_cli):
    """Finite weights whose output overflows: the run stops naming the prompt and the step."""
    monkeypatch.chdir(tmp_path)
    folder = copy_of(exported, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["head.2.weight"] = weights["head.2.weight"].sign() * 3e38
    save_file(weights, folder / "model.safetensors")
    args = [f"ckpt_path={folder}", "device=cpu", "steps=3", "num_images=2", "out_dir=out",
            "prompts=[Draw a six]", "precision=32"]  # fmt: skip
    assert_one_line(
        *run_cli(sample.main, args),
        "non-finite image",
        "'Draw a six'",
        "from denoising step 1 of 3",
    )
    assert not Path("out").exists()


def test_damaged_export_files_are_one_line(exported, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    cases = {
        "truncated weights": lambda f: (f / "model.safetensors").write_bytes(
            (f / "model.safetensors").read_bytes()[:-100]
        ),
        "a header claiming 2^62 bytes": lambda f: (f / "model.safetensors").write_bytes(
            struct.pack("<Q", 2**62) + b"{}"
        ),
        "config nested 100,000 deep": lambda f: (f / "config.json").write_text(
            "[" * 100_000 + "]" * 100_000
        ),
        "prompts of another shape": lambda f: save_file(
            {k: v[:, :1].contiguous() for k, v in load_file(f / "prompts.safetensors").items()},
            f / "prompts.safetensors",
        ),
    }
    for name, damage in cases.items():
        folder = tmp_path / "".join(c if c.isalnum() else "_" for c in name)
        shutil.copytree(exported, folder)
        damage(folder)
        with pytest.raises(UserError):
            TextToImage.from_checkpoint(folder, device="cpu")
        args = [f"ckpt_path={folder}", "device=cpu", "out_dir=out"]
        assert_one_line(*run_cli(sample.main, args), str(folder))


def peak_rss_mb(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """Runs ``python -m diffusion_lit.sample args`` in a process of its own: exit status,
    stderr and peak resident memory (MB)."""
    code = (
        "import resource, runpy, sys\n"
        "sys.argv = ['sample', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('diffusion_lit.sample', run_name='__main__')\n"
        "finally:\n"
        "    print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    peak = next(float(line.split()[1]) for line in done.stderr.splitlines() if line[:5] == "peak ")
    return done.returncode, done.stderr, peak / 1024


@pytest.mark.slow
def test_a_checkpoint_that_inflates_is_refused_before_inflating(exported, tmp_path):
    """A zip of 1 MB that would inflate to 1 GiB: refused from its directory, memory flat."""
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w") as f:
            for _ in range(1024):
                f.write(bytes(2**20))
    assert bomb.stat().st_size < 2 * 2**20
    status, stderr, peak = peak_rss_mb([f"ckpt_path={bomb}", "device=cpu"], tmp_path)
    assert_one_line(status, stderr, "inflate", "not read")
    assert peak < 2500, peak
    # the widest, longest model the bounds allow, claimed by a small export: memory stays flat
    folder = copy_of(exported, tmp_path)
    edit_spec(folder, lambda spec: spec["net"].update(base_channels=1024, time_dim=4096))
    status, stderr, peak = peak_rss_mb([f"ckpt_path={folder}", "device=cpu"], tmp_path)
    assert_one_line(status, stderr, "does not fit the model")
    assert peak < 2500, peak


# run folders


@pytest.fixture
def linked_run(trained_run, tmp_path) -> tuple[Path, Path]:
    """A run whose files are links to a secret outside it, and whose checkpoints/ is a link to
    another folder of checkpoints: (the folder of runs, that other folder)."""
    run = tmp_path / "runs" / "run"
    shutil.copytree(trained_run[0], run)
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret\n")
    (run / ".hydra").mkdir(exist_ok=True)
    for path in (run / "accuracy_log.txt", run / ".hydra" / "config.yaml", run / "curves.png",
                 run / "samples" / "final.png"):  # fmt: skip
        path.unlink(missing_ok=True)
        path.symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "checkpoints", elsewhere)
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    return run.parent, elsewhere


def test_the_runs_tab_never_shows_a_file_through_a_link_out_of_the_run(linked_run, tmp_path):
    runs, elsewhere = linked_run
    page = make_page(runs, elsewhere / "last.ckpt", tmp_path / "out", allow_any_path=True)
    curves, grids, accuracy, evaluations, config, ckpts = page.show_run(str(runs / "run"))
    shown = [accuracy, config, evaluations]
    assert curves is None and grids == [] and not any("secret" in text for text in shown)
    assert ckpts.choices == []  # its checkpoints lie elsewhere: none is the run's
    # a path that is not one of the runs is refused, whatever it names
    for path in (str(tmp_path), "/etc", str(elsewhere)):
        with pytest.raises(Exception, match="Choose one of the runs"):
            page.show_run(path)
    with pytest.raises(Exception, match="Choose a checkpoint of one of the runs"):
        page.export(str(elsewhere / "last.ckpt"), True, False)
    assert not list(elsewhere.glob("export-*"))


def test_prune_never_deletes_through_a_link_and_shows_where_files_are(linked_run, capsys):
    runs, elsewhere = linked_run
    before = sorted(p.name for p in elsewhere.iterdir())
    runs_main(["prune", str(runs), "--keep", "0"])
    out = capsys.readouterr().out
    assert str(elsewhere.resolve() / "last.ckpt") in out and "outside the run" in out
    runs_main(["prune", str(runs), "--keep", "0", "--yes"])
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_runs_list_reads_nothing_through_a_link(linked_run, capsys):
    runs, _ = linked_run
    runs_main(["list", str(runs), "--json"])
    [row] = json.loads(capsys.readouterr().out)
    assert row["last_accuracy"] is None and row["checkpoints"] == [] and row["model"] is None


def test_export_writes_nothing_through_a_link(linked_run, exported, tmp_path, run_cli):
    runs, elsewhere = linked_run
    ckpt = runs / "run" / "checkpoints" / "last.ckpt"
    assert_one_line(*run_cli(export.main, [f"ckpt_path={ckpt}"]), "outside the run")
    assert not list(elsewhere.glob("export-*"))
    # an out_dir that is a link to an export is not replaced through it
    link = tmp_path / "link"
    link.symlink_to(exported, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    args = [f"ckpt_path={elsewhere / 'last.ckpt'}", f"out_dir={link}", "overwrite=true"]
    assert_one_line(*run_cli(export.main, args), "is a link to", "nothing was changed")
    assert link.is_symlink() and {p.name: p.read_bytes() for p in exported.iterdir()} == before


# output folders


def test_each_prompt_gets_a_folder_of_its_own_and_long_ones_a_short_name():
    names = prompt_folders(["Draw a six", "Draw a six", "!!!", "???", "x" * 300, "x" * 299])
    assert names[:4] == ["draw_a_six", "draw_a_six-2", "prompt", "prompt-2"]
    assert len(set(names)) == 6 and all(len(n) <= 80 for n in names)


def test_a_long_prompt_is_sampled_and_saved(trained_run, tmp_path):
    pipe = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")
    prompts = ["a six " * 60, "Draw a six", "Draw a six"]
    out = pipe(prompts, 1, steps=2, progress=False)
    pipe.save(out.images, prompts, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        prompt_folders(prompts)
    )


# second round: adapters, captioned folders, run configs and the page's boxes


def within(seconds: float, fn, *args):
    """``fn(*args)``'s result, failing the test (not hanging it) when it takes longer."""
    done: dict = {}

    def call():
        try:
            done["result"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            done["error"] = err

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in done:
        raise done["error"]
    return done["result"]


@pytest.fixture(scope="module")
def adapter(lora_run, tmp_path_factory) -> Path:
    """The exported adapter folder of the LoRA fine-tune over ``base``."""
    folder = tmp_path_factory.mktemp("hostile-adapter") / "adapter"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        export.export(compose("export", [f"ckpt_path={lora_run[0]}", f"out_dir={folder}"]))
    return folder


def sample_over(run_cli, base: Path, adapters: list[Path], *more: str) -> tuple[int, str]:
    listed = ",".join(map(str, adapters))
    args = [f"ckpt_path={base}", f"adapters=[{listed}]", "device=cpu", "steps=2",
            "num_images=1", "out_dir=out", *more]  # fmt: skip
    return within(30, run_cli, sample.main, args)


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "nested"])
def test_an_adapter_config_that_never_ends_or_is_not_a_file_is_one_line(
    adapter, base, tmp_path, monkeypatch, run_cli, kind
):
    monkeypatch.chdir(tmp_path)
    folder = copy_of(adapter, tmp_path)
    config = folder / "adapter.json"
    config.unlink()
    if kind == "/dev/zero":
        config.symlink_to("/dev/zero")
        fragment = "is a link out of"
    elif kind == "fifo":
        os.mkfifo(config)
        fragment = "is a FIFO, not a file"
    else:
        config.write_text("[" * 100_000 + "]" * 100_000)
        fragment = "RecursionError"
    assert_one_line(*sample_over(run_cli, base, [folder]), str(config), fragment)
    args = [f"ckpt_path={base}", f"adapters=[{folder}]", f"out_dir={tmp_path / 'merged'}"]
    assert_one_line(*within(30, run_cli, export.main, args), str(config), fragment)
    assert not Path("out").exists() and not (tmp_path / "merged").exists()


def test_adapter_weights_that_link_out_of_the_run_are_neither_offered_nor_loaded(
    lora_run, base, tmp_path, run_cli
):
    run = tmp_path / "runs" / "lora"
    shutil.copytree(lora_run[0].parent.parent, run)
    for earlier in (run / "checkpoints").glob("*-*/"):  # what other tests exported there
        shutil.rmtree(earlier)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ckpt = run / "checkpoints" / "last.ckpt"
        folder = export.export(compose("export", [f"ckpt_path={ckpt}"]))
    page = make_page(tmp_path / "runs", base, tmp_path / "out")
    assert page.models.adapter_choices() == [str(folder)]
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "adapter.safetensors", outside)
    (folder / "adapter.safetensors").symlink_to(outside)
    assert page.models.adapter_choices() == []
    with pytest.raises(UserError, match="Choose one of this page's models"):
        page.models.get(str(base), True, [str(folder)])
    assert_one_line(*sample_over(run_cli, base, [folder]), "is a link out of", str(folder))


def test_the_same_adapter_twice_too_many_adapters_or_too_much_weight_are_refused(
    adapter, base, tmp_path, run_cli
):
    page = make_page(tmp_path / "runs", base, tmp_path / "out", allow_any_path=True)
    for adapters, weights, fragment in [
        ([adapter] * 200, "", "more than 8"),
        ([adapter, adapter], "", "more than once"),
        ([adapter], "11", "from -10 to 10"),
        ([adapter, copy_of(adapter, tmp_path)], "6, -6", "more than 10"),
    ]:
        start = time.monotonic()
        with pytest.raises(UserError, match=fragment) as err:
            page.models.get(str(base), True, list(map(str, adapters)), weights)
        assert time.monotonic() - start < 5 and "\n" not in str(err.value)
    status, stderr = sample_over(run_cli, base, [adapter], "adapter_weights=[1e6]")
    assert_one_line(status, stderr, "adapter_weights=")
    assert "adapter_weights=adapter_weights" not in stderr


def test_an_adapter_with_more_captions_than_a_model_holds_is_refused_before_encoding(
    adapter, base, tmp_path, monkeypatch, run_cli
):
    monkeypatch.chdir(tmp_path)
    folder = copy_of(adapter, tmp_path)
    config = json.loads((folder / "adapter.json").read_text())
    config["class_prompts"] = [[f"a two, number {i}" for i in range(20_000)]] * len(
        config["class_names"]
    )
    (folder / "adapter.json").write_text(json.dumps(config))
    start = time.monotonic()
    assert_one_line(*sample_over(run_cli, base, [folder]), "more than a model holds")
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda v: v.sign() * 3e30, "make non-finite weights"),
        (lambda v: v.double() * 1e300, "a type this project never writes"),
        (lambda v: v.to(torch.int32), "(I32)"),
        (lambda v: v > 0, "(BOOL)"),
    ],
    ids=["overflows-when-merged", "float64", "int32", "bool"],
)
def test_an_adapter_that_would_make_a_broken_model_never_replaces_a_good_export(
    adapter, base, tmp_path, run_cli, damage, fragment
):
    good = tmp_path / "export"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        export.export(compose("export", [f"ckpt_path={base}", f"out_dir={good}", "grid_steps=2"]))
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    folder = copy_of(adapter, tmp_path)
    weights = load_file(folder / "adapter.safetensors")
    save_file({k: damage(v).contiguous() for k, v in weights.items()},
              folder / "adapter.safetensors")  # fmt: skip
    args = [f"ckpt_path={base}", f"adapters=[{folder}]", f"out_dir={good}", "overwrite=true"]
    assert_one_line(*run_cli(export.main, args), fragment)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before


def test_a_merged_export_shows_the_merged_models_own_pictures(adapter, base, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", [f"ckpt_path={base}", f"adapters=[{adapter}]",
                                 f"out_dir={tmp_path / 'merged'}", "grid_steps=2"])  # fmt: skip
        folder = export.export(cfg)
    card = (folder / "README.md").read_text()
    assert "sampled at export" in card and "copied from" not in card
    with Image.open(folder / "grid.png") as grid:  # a row per class: zero, one and two
        assert grid.height > grid.width / 4 * 2


def test_an_adapter_folder_or_a_fifo_is_named_as_what_it_is(
    adapter, tmp_path, monkeypatch, run_cli, tiny_cfg
):
    monkeypatch.chdir(tmp_path)
    assert_one_line(*run_cli(export.main, [f"ckpt_path={adapter}"]), "is an adapter folder")
    os.mkfifo(tmp_path / "pipe")
    for path in (tmp_path / "pipe", Path("/dev/zero")):
        assert_one_line(*within(30, run_cli, sample.main, [f"ckpt_path={path}"]), "not a file")
        with pytest.raises(UserError, match="is a (FIFO|device), not a file or folder"):
            within(30, lambda p: TextToImage.from_checkpoint(p, "cpu"), path)


def test_a_safetensors_header_larger_than_a_models_is_damaged_not_another_model(
    exported, tmp_path, monkeypatch, run_cli
):
    monkeypatch.chdir(tmp_path)
    folder = copy_of(exported, tmp_path)
    header = json.dumps({"__metadata__": {"x": "y" * (50 * 2**20)}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    refused(folder, run_cli, "is not a readable diffusion_lit file", "header of")


# run configs


def write_run(runs: Path, name: str, config: str, init_from: str | None = None) -> Path:
    run = runs / name
    (run / ".hydra").mkdir(parents=True)
    (run / "accuracy_log.txt").write_text("Epoch#0 : Accuracy ≈ 0.5\n")
    (run / ".hydra" / "config.yaml").write_text(config)
    return run


def test_run_configs_are_read_as_data_never_resolved(tmp_path, monkeypatch, run_cli, capsys):
    monkeypatch.setenv("SOME_TOKEN", "the-secret-token")
    runs = tmp_path / "runs"
    write_run(runs, "a_leak", 'init_from: "${oc.env:SOME_TOKEN}/checkpoints/x.ckpt"\n'
              "trainer: {max_epochs: 1}\n")  # fmt: skip
    write_run(runs, "b_loop", "init_from: ${a}\na: ${b}\nb: ${a}\ntrainer: {max_epochs: 1}\n")
    write_run(runs, "c_broken", "trainer: [unclosed\n")
    write_run(runs, "d_long", f"init_from: /{'x' * 300}/checkpoints/last.ckpt\ntrainer: {{}}\n")
    runs_main(["list", str(runs)])
    out = capsys.readouterr().out
    assert "the-secret-token" not in out and "${oc.env:SOME_TOKEN}" in out
    assert all(name in out for name in ("a_leak", "b_loop", "c_broken", "d_long"))
    assert "(unreadable .hydra/config.yaml)" in out
    runs_main(["compare", str(runs / "d_long"), str(runs / "a_leak")])
    assert "the-secret-token" not in capsys.readouterr().out
    # a fine-tune beside its bases: the one named by a path too long to look up is not found
    assert_one_line(*run_cli(runs_main, ["compare", str(runs / "d_long")], False), "holds 1")
    page = make_page(runs, tmp_path / "x.ckpt", tmp_path / "out")
    table = page.runs_table()[0].value
    assert len(table["data"]) == 4 and "the-secret-token" not in json.dumps(table, default=str)


# captioned folders


def captioned_folder(root: Path, rows: list | None = None, text: str | None = None) -> Path:
    """A folder of two classes of three images each, captioned by ``rows`` (or the file
    ``text``), each image by default 'a <class> square'."""
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (12, 12), (200 * (c == 0), 30, 200)).save(root / name / f"{i}.png")
    rows = rows or [{"file_name": f"{n}/{i}.png", "text": f"a {n} square"}
                    for n in ("red", "blue") for i in range(3)]  # fmt: skip
    (root / "metadata.jsonl").write_text(text or "\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (lambda root: png_claiming(root / "red" / "0.png", 30_000, 30_000),
         ["red/0.png", "larger than a training image"]),
        (lambda root: cut_in_half(root / "blue" / "2.png"), ["blue/2.png", "not an image"]),
        (lambda root: os.mkfifo((root / "red" / "1.png").unlink() or root / "red" / "1.png"),
         ["red/1.png", "FIFO"]),
        (lambda root: (root / "metadata.jsonl").write_text(
            '{"file_name": "red/0.png", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
         ["line 1", "not a JSON object"]),
        (lambda root: (root / "metadata.jsonl").write_text("\n".join(
            json.dumps({"file_name": "red/0.png", "text": f"a red square, take {i}"})
            for i in range(10_000)) + "\n"),
         ["line 65", "captions (at most 64)"]),
        (lambda root: (root / "metadata.jsonl").write_text("\n".join(
            json.dumps({"file_name": f"red/{i % 3}.png", "text": [f"red {i}.{k}" for k in range(
                50)]}) for i in range(200)) + "\n"),
         ["captions (at most 64)"]),
        (lambda root: (root / "metadata.jsonl").write_text(
            json.dumps({"file_name": "red/0.png", "text": "x" * 5_000}) + "\n"),
         ["line 1", "5,000 characters"]),
    ],
    ids=["decompression-bomb", "cut-png", "fifo-image", "nested-captions", "many-captions",
         "many-per-image", "long-caption"],
)  # fmt: skip
def test_a_hostile_captioned_folder_is_one_line_before_training(tmp_path, damage, fragments):
    root = captioned_folder(tmp_path / "folder")
    damage(root)
    with pytest.raises(UserError) as err:
        within(30, CaptionedFolder, root)
    assert "\n" not in str(err.value) and all(f in str(err.value) for f in fragments), err.value


def test_more_distinct_captions_than_a_model_holds_is_one_line(tmp_path, run_cli):
    from diffusion_lit.train import main as train_main

    root = tmp_path / "folder"
    (root / "red").mkdir(parents=True)
    for i in range(260):  # 260 images × 64 captions: 16,640 distinct captions in one class
        Image.new("RGB", (8, 8)).save(root / "red" / f"{i}.png")
    rows = [{"file_name": f"red/{i}.png", "text": [f"red {i} {k}" for k in range(64)]}
            for i in range(260)]  # fmt: skip
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    overrides = [o for o in TINY if not o.startswith("data")]
    args = [*overrides, "data=captioned", f"data.root={root}", "data.image_size=8",
            f"paths.run_dir={tmp_path / 'run'}"]  # fmt: skip
    assert_one_line(*run_cli(train_main, args), "16,640 distinct captions", "more than a model")


def test_a_cut_image_stops_the_train_command_before_the_first_step(tmp_path, run_cli):
    from diffusion_lit.train import main as train_main

    root = captioned_folder(tmp_path / "folder")
    cut_in_half(root / "red" / "2.png")
    overrides = [o for o in TINY if not o.startswith("data")]
    args = [*overrides, "data=captioned", f"data.root={root}", "data.image_size=8",
            f"paths.run_dir={tmp_path / 'run'}"]  # fmt: skip
    assert_one_line(*run_cli(train_main, args), "red/2.png", "not an image that can be read")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_metadata_file_linking_out_of_the_folder_is_refused(tmp_path):
    other = captioned_folder(tmp_path / "other")
    root = captioned_folder(tmp_path / "folder")
    (root / "metadata.jsonl").unlink()
    (root / "metadata.jsonl").symlink_to(other / "metadata.jsonl")
    with pytest.raises(UserError, match="is a link out of"):
        CaptionedFolder(root)


def test_a_metadata_file_with_a_byte_order_mark_reads_as_datasets_reads_it(tmp_path):
    root = captioned_folder(tmp_path / "folder")
    text = (root / "metadata.jsonl").read_text()
    (root / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert set(sum(CaptionedFolder(root).captions, [])) == {"a red square", "a blue square"}
    loaded = datasets.load_dataset("imagefolder", data_dir=str(root), split="train")
    assert sorted(loaded["text"]) == sorted(sum(CaptionedFolder(root).captions, []))


def test_a_long_prompt_is_logged_cut(trained_run, caplog):
    pipe = TextToImage.from_checkpoint(trained_run[0] / "checkpoints" / "last.ckpt", "cpu")
    with caplog.at_level(logging.WARNING):
        pipe(["a six " * 200_000], 1, steps=2, progress=False)
    [record] = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(record.getMessage()) < 200
