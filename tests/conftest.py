import io
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the hub: tests run offline
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread a worker (and its children)
    os.environ["OMP_NUM_THREADS"] = "1"  # N workers of 2 threads each on N cores wait on each other

from diffusion_lit import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
sys.path.insert(0, str(Path(__file__).parent))  # tests' helper modules (clip_fixture, ...)
cli.register()  # what the configs need, as every command does before composing them

# A model and data small enough for a 2-core CPU: 8×8 digits, T = 20, a few channels.
TINY = [
    "data=digits",
    "data.attributes=null",  # class prompts; the attribute captions have tests of their own
    "data.image_size=8",
    "data.batch_size=32",
    "data.num_workers=0",
    "model.base_channels=4",
    "model.time_dim=8",
    "schedule.timesteps=20",
    "lr_scheduler.warmup_steps=0",  # a few steps in all
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.sample_grid.num_per_class=2",
    "callbacks.sample_grid.steps=5",
]


def compose_train(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.paths.run_dir = str(run_dir)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """The tiny training config writing into a fresh run dir; extra overrides may be passed."""

    def make(*overrides: str) -> DictConfig:
        return compose_train(TINY + list(overrides), run_dir=tmp_path / "run")

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the tests that need a checkpoint."""
    from diffusion_lit.train import train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_train(TINY, run_dir=run_dir)
    metrics, objects = train(cfg)
    return run_dir, metrics, objects


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """A tiny model of the digits zero and one (its last checkpoint)."""
    from diffusion_lit.train import train

    run_dir = tmp_path_factory.mktemp("base") / "run"
    train(compose_train([*TINY, "data.classes=[zero,one]"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def lora_run(base, tmp_path_factory):
    """LoRA adapters over ``base`` trained on the digit two, with generated replay: (its last
    checkpoint, the training's objects)."""
    from diffusion_lit.train import train

    run_dir = tmp_path_factory.mktemp("lora") / "run"
    overrides = [*TINY, "data.classes=[two]", f"init_from={base}", "finetune=lora",
                 "finetune.rank=2", "replay.images_per_class=3"]  # fmt: skip
    _, objects = train(compose_train(overrides, run_dir))
    return run_dir / "checkpoints" / "last.ckpt", objects


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Runs a command-line entry point in-process as the shell would: ``run(main, args)`` returns
    (exit status, stderr). Hydra's entry points get the project's config dir."""
    handlers, level = logging.root.handlers[:], logging.root.level

    def run(main, args: list[str], hydra: bool = True) -> tuple[int, str]:
        prefix = ["--config-path", CONF_DIR] if hydra else []
        monkeypatch.setattr(sys, "argv", ["prog", *prefix, *args])
        try:
            main() if hydra else main(args)
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        return status, capsys.readouterr().err

    yield run
    # Hydra points the root logger at this test's captured streams; later tests must not log to
    # them once they are closed
    logging.root.handlers[:], logging.root.level = handlers, level


def png_claiming(path: Path, width: int, height: int) -> None:
    """A small PNG whose header claims ``width`` × ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def assert_one_line(status: int, stderr: str, *fragments: str) -> None:
    """Exit status 2 and exactly one ``error:`` line (holding each fragment), no traceback."""
    assert status == 2 and "Traceback" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    for fragment in fragments:
        assert fragment in line, line


# training in a separate process, as the shell runs it


def start_training(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``python -m diffusion_lit.train *args`` in ``cwd``, in a session of its own (so a DDP run's
    processes can be killed together), with ``env`` added to the environment; the tests' helper
    modules are importable."""
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests"), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_lit.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, status: int = 0, timeout: int = 600) -> str:
    """Waits for the process; asserts its exit status; returns its stderr."""
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == status, stderr[-4000:]
    return stderr


def kill_when_written(process: subprocess.Popen, pattern: str, cwd: Path) -> Path:
    """SIGKILLs the process and its children as soon as a file matching ``pattern`` exists."""
    deadline = time.monotonic() + 300
    while not (found := sorted(cwd.glob(pattern))):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return found[0]
