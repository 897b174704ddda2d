"""Resuming after a crash: same run dir, every counter and log continuing, and the same weights
as a run that was never interrupted."""

import re
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from diffusion_lit.errors import UserError
from diffusion_lit.train import train
from diffusion_lit.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from diffusion_lit.training.module import NonFiniteLoss
from diffusion_lit.training.resume import continue_csv_log, find_checkpoint

from conftest import TINY, compose_train, finish, kill_when_written
from conftest import start_training as start

# 1,617 training digits in batches of 512: 4 steps per epoch, a checkpoint every 3 steps (the
# first one mid-epoch), 3 epochs.
RUN = [
    *(o for o in TINY if not o.startswith(("data.batch_size", "trainer.limit_train_batches"))),
    "data.batch_size=512",
    "trainer.max_epochs=3",
    "callbacks.step_checkpoint.every_n_train_steps=3",
    "+callbacks.slow._target_=slow_steps.SlowSteps",
]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_run(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    finish(start([*RUN, "+callbacks.slow.seconds=0", "paths.output_dir=out"], cwd=straight))

    process = start([*RUN, "+callbacks.slow.seconds=0.5", "paths.output_dir=out"], cwd=crashed)
    kill_when_written(process, "out/runs/*/checkpoints/last.ckpt", crashed)
    [run_dir] = (crashed / "out" / "runs").iterdir()
    killed_at = load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 3 <= killed_at < 12  # the kill came mid-run, after the first step checkpoint
    config = (run_dir / ".hydra" / "config.yaml").read_text()

    finish(
        start(
            [*RUN, "+callbacks.slow.seconds=0", "paths.output_dir=out", "ckpt_path=last"], crashed
        )
    )

    assert list((crashed / "out" / "runs").iterdir()) == [run_dir]  # the same run dir
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config  # the original kept
    assert list((run_dir / ".hydra").glob("resume-*/config.yaml"))
    [straight_dir] = (straight / "out" / "runs").iterdir()
    a, b = load(straight_dir / "checkpoints/last.ckpt"), load(run_dir / "checkpoints/last.ckpt")
    assert b["global_step"] == a["global_step"] == 12 and b["epoch"] == 2
    # every epoch logged once, with the values of the uninterrupted run
    log = (run_dir / "accuracy_log.txt").read_text(encoding="utf-8")
    assert [line.split(" : ")[0] for line in log.splitlines()] == ["Epoch#0", "Epoch#1", "Epoch#2"]
    assert log == (straight_dir / "accuracy_log.txt").read_text(encoding="utf-8")
    metrics = (run_dir / "logs/metrics.csv").read_text()
    assert metrics == (straight_dir / "logs/metrics.csv").read_text()
    # bit for bit the same EMA weights, trained weights and optimizer state
    for key in ["state_dict", "current_model_state"]:
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for state_a, state_b in zip(
        a["optimizer_states"][0]["state"].values(),
        b["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])


def test_ckpt_path_last_is_the_newest_run(tmp_path):
    for name in ["2026-01-01_00-00-00", "2026-01-02_00-00-00"]:
        (tmp_path / "runs" / name / "checkpoints").mkdir(parents=True)
        (tmp_path / "runs" / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.01)
    assert find_checkpoint("last", tmp_path).parts[-3] == "2026-01-02_00-00-00"
    with pytest.raises(UserError, match="no run under .* has checkpoints/last.ckpt"):
        find_checkpoint("last", tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist: pass ckpt_path=last"):
        find_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_resuming_with_another_model_names_the_difference(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    cfg = compose_train(
        [*TINY, "model.base_channels=8", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"],
        run_dir=tmp_path / "resumed",
    )
    with pytest.raises(UserError, match="model.base_channels: 4 in the checkpoint, 8 now"):
        train(cfg)


def test_resume_into_a_new_dir_keeps_the_epoch_history(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    cfg = compose_train(
        [*TINY, "trainer.max_epochs=3", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"],
        run_dir=tmp_path / "resumed",
    )
    _, objects = train(cfg)
    assert objects["trainer"].current_epoch == 3
    lines = (tmp_path / "resumed" / "accuracy_log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" : ")[0] for line in lines] == ["Epoch#0", "Epoch#1", "Epoch#2"]


def test_csv_log_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text("epoch,step,val/loss\n0,3,0.5\n1,7,0.4\n2,11,0.3\n")
    logger = CSVLogger(tmp_path, name="", version="logs")
    continue_csv_log(logger, global_step=8)
    logger.log_metrics({"val/loss": 0.35, "epoch": 2}, step=11)
    logger.save()
    assert (log_dir / "metrics.csv").read_text().splitlines() == [
        "epoch,step,val/loss",
        "0,3,0.5",
        "1,7,0.4",
        "2,11,0.35",
    ]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_cfg):
    # a learning rate this size makes Adam's first step blow the weights up: the next loss is
    # not finite
    cfg = tiny_cfg("optimizer.lr=1e30", "callbacks.step_checkpoint.every_n_train_steps=1")
    with pytest.raises(
        NonFiniteLoss, match=r"loss is not finite \(NaN or inf\) at step (\d+).*resume with"
    ) as err:
        train(cfg)
    step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    last = load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt")
    assert last["global_step"] == step  # written after the step before, the last finite one
    assert all(torch.isfinite(w).all() for w in last["current_model_state"].values())


def test_a_failed_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match="No space left on device. Free some disk"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_wandb_run(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_cfg("logger=wandb", "trainer.max_epochs=1", "~callbacks.sample_grid")
    train(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    last = run_dir / "checkpoints" / "last.ckpt"
    train(
        tiny_cfg(
            "logger=wandb", "trainer.max_epochs=2", "~callbacks.sample_grid", f"ckpt_path={last}"
        )
    )
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(f"-{run_id}") for r in runs)  # no second wandb run
