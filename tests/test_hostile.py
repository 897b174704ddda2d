"""Files built to hurt: model files from strangers (sizes that would exhaust memory, NaN weights,
lying headers, zip bombs) and run folders whose files are links out of them. Each is answered
with one line, nothing is built from a file before it is checked, and nothing outside the
folders a command was given is read, written or deleted."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

from diffusion_lit import export, sample
from diffusion_lit.errors import UserError
from diffusion_lit.pipeline import TextToImage, prompt_folders
from diffusion_lit.runs.__main__ import main as runs_main

from conftest import CONF_DIR, ROOT, assert_one_line


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
