"""Two CPU processes over gloo (DDP): metrics averaged over both ranks, files written by rank 0
only, a SIGKILL mid-epoch resumed to the logs of an uninterrupted run, and a NaN on one rank
stopping both."""

import csv

import pytest
import torch

from conftest import TINY, finish, kill_when_written, start_training
from ddp_probe import probed, read_probes

# TINY on two processes; a validation batch each
DDP = [
    *(o for o in TINY if not o.startswith(("trainer=", "trainer.limit_val_batches"))),
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.limit_val_batches=2",
]


@pytest.mark.slow
def test_ddp_two_cpu_processes_sync_metrics_and_only_rank_zero_writes(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *DDP,
        "trainer.max_epochs=2",
        "data.batch_size=32",
        *probed(run_dir),
    ]
    finish(start_training(args, cwd=tmp_path))
    probes = read_probes(run_dir)
    # each rank saw different validation images...
    assert probes[0]["local_val_losses"] != probes[1]["local_val_losses"]
    # ...yet both report the same val/loss: the mean over both ranks' batches
    assert probes[0]["val/loss"] == pytest.approx(probes[1]["val/loss"], rel=1e-6)
    pooled = probes[0]["local_val_losses"] + probes[1]["local_val_losses"]
    assert probes[0]["val/loss"] == pytest.approx(sum(pooled) / len(pooled), rel=1e-5)
    # rank 0 alone writes: one line per epoch, one metrics file, one set of checkpoints
    lines = (run_dir / "accuracy_log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" : ")[0] for line in lines] == ["Epoch#0", "Epoch#1"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2
    assert (run_dir / "samples" / "final.png").is_file()


def read_metrics(run_dir) -> list[dict[str, float]]:
    with (run_dir / "logs" / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_ddp_sigkill_mid_epoch_then_resume_logs_what_an_uninterrupted_run_logs(tmp_path):
    """Each rank holds its own share of the epoch's running sums; the checkpoint keeps their
    total, so the resumed epoch's train/loss and pseudo-accuracy are the uninterrupted ones."""
    # 1,617 digits, 256 per rank and step: 4 steps per epoch, a checkpoint every 3 steps
    run = [
        *(o for o in DDP if not o.startswith(("data.batch_size", "trainer.limit_train"))),
        "data.batch_size=512",
        "trainer.max_epochs=2",
        "callbacks.step_checkpoint.every_n_train_steps=3",
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        "paths.output_dir=out",
    ]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    finish(start_training([*run, "+callbacks.slow.seconds=0"], cwd=straight))
    process = start_training([*run, "+callbacks.slow.seconds=0.5"], cwd=crashed)
    last = kill_when_written(process, "out/runs/*/checkpoints/last.ckpt", crashed)
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert killed_at % 4, "the kill must come mid-epoch"
    finish(start_training([*run, "+callbacks.slow.seconds=0", "ckpt_path=last"], cwd=crashed))

    [a], [b] = (list((d / "out" / "runs").iterdir()) for d in (straight, crashed))
    log = (b / "accuracy_log.txt").read_text(encoding="utf-8")
    assert [line.split(" : ")[0] for line in log.splitlines()] == ["Epoch#0", "Epoch#1"]
    assert log == (a / "accuracy_log.txt").read_text(encoding="utf-8")
    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]
    for row_a, row_b in zip(rows_a, rows_b, strict=True):  # equal but for reduction order
        assert row_b == pytest.approx(row_a, rel=1e-5)


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1's loss alone is NaN at step 2 (the first of epoch 1); both ranks stop at the next
    check, before the checkpoint due at step 3, instead of one raising while the other waits in
    the next all-reduce."""
    args = [
        *DDP,
        "trainer.max_epochs=3",
        "callbacks.step_checkpoint.every_n_train_steps=3",
        "+callbacks.poison._target_=poison_rank.PoisonRank",
        "+callbacks.poison.rank=1",
        "+callbacks.poison.step=2",
        f"hydra.run.dir={tmp_path}/run",
    ]
    stderr = finish(start_training(args, cwd=tmp_path), status=2, timeout=300)
    assert "error: The training loss is not finite (NaN or inf) at step 2" in stderr
    # the last checkpoint is the one from before the NaN (epoch 0 ended at step 2)
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(w).all() for w in last["current_model_state"].values())
