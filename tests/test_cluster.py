"""Beyond one machine, on this one: a sweep through Hydra's submitit launcher, the sbatch script
it writes for SLURM, two "nodes" of DDP, and a SLURM preemption signal followed by a requeue."""

import os
import signal
import socket
import stat
import time

import pytest
import torch
from test_ddp import DDP

from diffusion_lit.training.resume import interrupted_checkpoint

from conftest import TINY, finish, start_training
from ddp_probe import probed, read_probes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_command(folder, name: str, script: str) -> None:
    """An executable ``name`` in ``folder`` standing in for a SLURM command."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_each_job_into_its_own_run_dir(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    finish(start_training(args, cwd=tmp_path))
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert len((sweep / job / "accuracy_log.txt").read_text().splitlines()) == 2
    seeds = [(sweep / job / ".hydra" / "overrides.yaml").read_text() for job in ("0", "1")]
    assert "seed=1" in seeds[0] and "seed=2" in seeds[1]
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's job logs, beside the runs


@pytest.mark.slow
def test_the_slurm_launcher_asks_for_the_nodes_tasks_and_time(tmp_path):
    """The sbatch script the submitit_slurm launcher writes, caught by a stand-in sbatch."""
    bin_dir, script = tmp_path / "bin", tmp_path / "job.sbatch"
    fake_command(bin_dir, "sbatch", f'cp "$1" {script}\necho "sbatch: simulated" >&2\nexit 1\n')
    fake_command(bin_dir, "srun", "exit 0\n")  # submitit looks for it to tell it is on SLURM
    args = [
        "-m", "cluster=slurm", "cluster.nodes=2", "cluster.gpus_per_node=4", "cluster.time_min=90",
        "cluster.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    finish(start_training(args, cwd=tmp_path, env=env), status=1)
    lines = set(script.read_text().splitlines())
    asked = ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--time=90",
             "--partition=gpu", "--cpus-per-task=8", "--mem=64GB", "--signal=USR1@120"]  # fmt: skip
    for option in asked:
        assert f"#SBATCH {option}" in lines, (option, sorted(lines))
    assert "--job-name=train" in script.read_text()
    assert str(tmp_path / "sweep" / ".submitit") in script.read_text()  # logs beside the runs


@pytest.mark.slow
def test_two_nodes_of_ddp_on_one_machine(tmp_path):
    """num_nodes=2, one device each, as torchrun or SLURM would start them: NODE_RANK 0 and 1."""
    run_dir = tmp_path / "run"
    args = [
        *(o for o in DDP if o != "trainer.devices=2"),
        "trainer.devices=1",
        "trainer.num_nodes=2",
        *probed(run_dir),
    ]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    nodes = [
        start_training(args, cwd=tmp_path / f"node{rank}", env={**env, "NODE_RANK": str(rank)})
        for rank in (0, 1)
    ]
    for node in nodes:
        finish(node)
    probes = read_probes(run_dir)
    assert [(p["world_size"], p["node_rank"]) for p in probes] == [(2, 0), (2, 1)]
    assert probes[0]["local_val_losses"] != probes[1]["local_val_losses"]
    pooled = probes[0]["local_val_losses"] + probes[1]["local_val_losses"]
    for probe in probes:  # both nodes log the mean over both nodes' batches
        assert probe["val/loss"] == pytest.approx(sum(pooled) / len(pooled), rel=1e-5)
    lines = (run_dir / "accuracy_log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" : ")[0] for line in lines] == ["Epoch#0", "Epoch#1"]  # rank 0 alone
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2


@pytest.mark.slow
def test_a_slurm_signal_saves_a_checkpoint_and_the_requeued_job_resumes_from_it(tmp_path):
    """SLURM's warning signal (SIGUSR1, --signal) to a running job: Lightning saves
    hpc_ckpt_1.ckpt in the run dir and requeues the job (a stand-in scontrol records it); the job
    SLURM then starts again, into the same run dir, continues from that checkpoint."""
    run_dir, bin_dir, calls = tmp_path / "run", tmp_path / "bin", tmp_path / "scontrol.txt"
    fake_command(bin_dir, "scontrol", f'echo "$@" >> {calls}\n')
    slurm = {  # what SLURM sets for a one-task job (submitit runs the same under sbatch)
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
    }  # fmt: skip
    args = [
        *(o for o in TINY if not o.startswith("trainer.max_epochs")),
        "trainer.max_epochs=5",  # of 2 steps
        "+callbacks.slow._target_=slow_steps.SlowSteps",
        "+callbacks.slow.seconds=0.5",
        f"hydra.run.dir={run_dir}",
    ]
    job = start_training(args, cwd=tmp_path, env=slurm)
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("checkpoints/*.ckpt")):  # well into training
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGUSR1)
    while not list(run_dir.glob("hpc_ckpt_*.ckpt")):
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # SLURM ends the job; its requeue was asked for
    job.wait()
    assert calls.read_text().split() == ["requeue", "4242"]
    [hpc] = run_dir.glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] > 0
    # the newest state: hpc_ckpt_1 unless an epoch's last.ckpt came between signal and kill
    newest = interrupted_checkpoint(run_dir)
    assert newest in (hpc, run_dir / "checkpoints" / "last.ckpt")

    requeued = finish(start_training(args, cwd=tmp_path, env={**slurm, "SLURM_RESTART_COUNT": "1"}))
    assert f"Restoring states from the checkpoint path at {newest}" in requeued
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5 * 2 and last["epoch"] == 4  # 5 epochs in all, not more
    epochs = (run_dir / "accuracy_log.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(" : ")[0] for line in epochs] == [f"Epoch#{i}" for i in range(5)]


def test_a_run_dir_holding_checkpoints_continues_from_the_newest(tmp_path):
    assert interrupted_checkpoint(tmp_path) is None  # a new run starts afresh
    (tmp_path / "checkpoints").mkdir()
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    for age, path in enumerate([hpc, last]):
        path.write_bytes(b"")
        os.utime(path, (1000 - age, 1000 - age))
    assert interrupted_checkpoint(tmp_path) == hpc  # saved when SLURM signalled: newer
    os.utime(last, (2000, 2000))
    assert interrupted_checkpoint(tmp_path) == last
