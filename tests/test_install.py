"""A plain ``pip install`` (not editable): the wheel holds every module and config, and every
command runs from an empty folder, its configs read from the installed package."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, TINY

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """The project's wheel, installed into a folder of its own (its dependencies are this
    environment's): the wheel and that folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: building writes build/ into the tree it builds
    for folder in ("diffusion_lit", "conf"):
        shutil.copytree(ROOT / folder, source / folder, ignore=IGNORED)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root), str(source)],
        check=True, cwd=root,
    )  # fmt: skip
    [wheel] = root.glob("diffusion_lit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)],
                   check=True, cwd=root)  # fmt: skip
    return wheel, root / "site"


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_config(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "diffusion_lit").rglob("*.py")}
    configs = {
        "diffusion_lit/conf/" + str(p.relative_to(ROOT / "conf"))
        for p in (ROOT / "conf").rglob("*")
        if p.suffix in (".yaml", ".py")
    }
    assert sources and configs and not (sources | configs) - names


@pytest.mark.slow
def test_every_command_runs_from_an_empty_folder_after_a_plain_install(installed, tmp_path):
    _, site = installed
    where = run(["-c", "import diffusion_lit.conf as c; print(c.__file__)"], site, tmp_path)
    assert where.stdout.startswith(str(site)), where.stderr  # the installed copy, not the checkout
    for command in ("train", "sample", "evaluate", "export", "demo", "runs"):
        shown = run(["-m", f"diffusion_lit.{command}", "--help"], site, tmp_path / "help")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]
    job = run(["-m", "diffusion_lit.train", *TINY, "--cfg", "job"], site, tmp_path / "cfg")
    assert job.returncode == 0 and "base_channels: 4" in job.stdout, job.stderr[-2000:]

    trained = run(["-m", "diffusion_lit.train", *TINY, "hydra.run.dir=run"], site, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    args = ["-m", "diffusion_lit.sample", f"ckpt_path={ckpt}", "num_images=2", "steps=3",
            "prompts=[Draw a six]", "out_dir=samples"]  # fmt: skip
    sampled = run(args, site, tmp_path)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "samples" / "draw_a_six").iterdir()) == [
        "000.png", "001.png"
    ]  # fmt: skip
