import json
from pathlib import Path

import pytest
import torch

from diffusion_lit.runs.__main__ import main
from diffusion_lit.runs.housekeeping import prune_plan

CONFIG = """\
seed: 42
optimizer:
  _target_: torch.optim.Adam
  lr: {lr}
data:
  dataset:
    _target_: diffusion_lit.data.Digits
  image_size: 16
model:
  _target_: diffusion_lit.models.{model}
  image_size: ${{data.image_size}}
  base_channels: 32
trainer:
  max_epochs: 3
paths:
  run_dir: {run_dir}
"""


def monitored(monitor: str, mode: str) -> str:
    return (
        f"ModelCheckpoint{{'monitor': '{monitor}', 'mode': '{mode}', 'every_n_train_steps': 0, "
        "'every_n_epochs': 1, 'train_time_interval': None}"
    )


def save_checkpoint(path: Path, step: int, score: float | None, mode: str = "min") -> None:
    """A tiny stand-in for a Lightning checkpoint: only what ``prune`` reads."""
    callbacks = {
        # a second, periodic ModelCheckpoint without a monitor, as a run may have
        "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 100, "
        "'every_n_epochs': 0, 'train_time_interval': None}": {
            "monitor": None,
            "current_score": None,
        },
        monitored("val/loss", mode): {
            "monitor": "val/loss",
            "current_score": None if score is None else torch.tensor(score),
        },
    }
    torch.save({"epoch": step // 10, "global_step": step, "callbacks": callbacks}, path)


def make_run(
    path: Path,
    *,
    lr: float = 0.002,
    model: str = "SimpleUNet",
    val_losses: tuple[float, ...] = (0.3, 0.1, 0.2),
    accuracies: tuple[float, ...] = (-5.0, -1.5, 0.25),
    scores: dict[str, float | None] | None = None,
    mode: str = "min",
    eval_accuracy: float | None = 0.875,
) -> Path:
    """A finished run as training leaves it, without the training."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(CONFIG.format(lr=lr, model=model, run_dir=path))
    log = "".join(f"Epoch#{i} : Accuracy ≈ {a:.4f}\n" for i, a in enumerate(accuracies))
    (path / "accuracy_log.txt").write_text(log, encoding="utf-8")
    (path / "logs").mkdir()
    rows = ["epoch,step,train/loss,train/pseudo_acc,val/loss,val/pseudo_acc"]
    for epoch, (loss, acc) in enumerate(zip(val_losses, accuracies, strict=True)):
        rows += [f"{epoch},{10 * epoch + 9},,,{loss},0.5", f"{epoch},{10 * epoch + 9},0.4,{acc},,"]
    (path / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    ckpts = path / "checkpoints"
    ckpts.mkdir()
    scores = {"best-epoch001.ckpt": 0.1} if scores is None else scores
    for step, (name, score) in enumerate(scores.items()):
        save_checkpoint(ckpts / name, step, score, mode)
    save_checkpoint(ckpts / "last.ckpt", 99, None, mode)
    if eval_accuracy is not None:
        out = ckpts / "eval-last-ddpm100-w3"
        out.mkdir()
        result = {
            "checkpoint": str(ckpts / "last.ckpt"),
            "conditional_accuracy": eval_accuracy,
            "fid": 2.5,
            "fid_real_vs_real": 2.0,
            "fid_ratio": 1.25,
            "diversity": 0.91,
            "sampler": "ddpm",
            "steps": 100,
            "guidance_scale": 3.0,
        }
        (out / "eval.json").write_text(json.dumps(result))
    return path


def ckpt_names(run: Path) -> set[str]:
    return {p.name for p in (run / "checkpoints").glob("*.ckpt")}


def row_of(out: str, run: Path) -> str:
    (row,) = [line for line in out.splitlines() if line.startswith(str(run))]
    return row


def test_list_shows_each_runs_metrics(tmp_path, capsys):
    a = make_run(tmp_path / "runs" / "2026-01-01_10-00-00")
    b = make_run(
        tmp_path / "runs" / "2026-01-02_10-00-00",
        val_losses=(0.5, 0.45),
        accuracies=(-3.0, -0.75),
        model="TextGuidedUNet",
        eval_accuracy=None,
    )
    main(["list", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.index(str(a)) < out.index(str(b))  # oldest first
    row_a, row_b = row_of(out, a), row_of(out, b)
    for cell in [
        "2026-01-01 10:00",
        "SimpleUNet",
        "Digits 16px",
        " 3 ",
        "0.1000",
        "0.2500",
        "87.5%",
        "1.25",
        "0.91",
        "best-epoch001.ckpt, last.ckpt",
    ]:
        assert cell in row_a
    for cell in ["TextGuidedUNet", " 2 ", "0.4500", "-0.7500"]:
        assert cell in row_b
    assert "%" not in row_b  # no evaluation yet


def test_list_json_has_the_same_rows(tmp_path, capsys):
    run = make_run(tmp_path / "2026-01-01_10-00-00")
    main(["list", "--json", str(tmp_path)])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["path"] == str(run)
    assert row["date"] == "2026-01-01 10:00:00"
    assert (row["model"], row["data"], row["epochs"]) == ("SimpleUNet", "Digits 16px", 3)
    assert row["best_val_loss"] == pytest.approx(0.1)
    assert row["last_accuracy"] == pytest.approx(0.25)
    assert (row["eval"], row["eval_accuracy"]) == ("eval-last-ddpm100-w3", 0.875)
    assert row["checkpoints"] == ["best-epoch001.ckpt", "last.ckpt"]


def test_list_shows_what_it_cannot_read_as_a_question_mark(tmp_path, capsys):
    run = tmp_path / "bare"
    (run / "checkpoints").mkdir(parents=True)  # no .hydra, no logs
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    evaluation = tmp_path / "evaluate" / "2026-01-01_10-00-00" / ".hydra"  # not a training run
    evaluation.mkdir(parents=True)
    (evaluation / "config.yaml").write_text("ckpt_path: x\nsampler: ddpm\n")
    main(["list", "--json", str(tmp_path)])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["path"] == str(run)
    assert row["model"] is row["epochs"] is row["best_val_loss"] is row["eval_accuracy"] is None
    main(["list", str(run)])
    assert "?  " in row_of(capsys.readouterr().out, run)


def test_compare_shows_only_the_config_keys_that_differ(tmp_path, capsys):
    a = make_run(tmp_path / "a", lr=0.002, val_losses=(0.3, 0.1, 0.2))
    b = make_run(tmp_path / "b", lr=0.001, model="TextGuidedUNet", val_losses=(0.4, 0.3, 0.35))
    main(["compare", str(a), str(b)])
    out = capsys.readouterr().out
    config_rows = out.split("\n\n")[0].splitlines()[2:]  # below the header, above the metrics
    assert [row.split()[:3] for row in config_rows] == [
        [
            "model._target_",
            "diffusion_lit.models.SimpleUNet",
            "diffusion_lit.models.TextGuidedUNet",
        ],
        ["optimizer.lr", "0.002", "0.001"],
    ]  # paths.run_dir differs too, but says nothing about the experiment
    assert "0.1000" in out and "0.3000" in out  # best val/loss of each


def test_prune_dry_run_names_the_files_and_deletes_nothing(tmp_path, capsys):
    run = make_run(
        tmp_path / "run",
        scores={"best-epoch000.ckpt": 0.3, "best-epoch001.ckpt": 0.1, "best-epoch002.ckpt": 0.2},
    )
    before = ckpt_names(run)
    main(["prune", str(run), "--keep", "1"])
    out = capsys.readouterr().out
    assert ckpt_names(run) == before
    checkpoints = (run / "checkpoints").resolve()  # each file shown where it really is
    for action, name in [
        ("keep  ", "best-epoch001.ckpt"),
        ("keep  ", "last.ckpt"),
        ("delete", "best-epoch000.ckpt"),
        ("delete", "best-epoch002.ckpt"),
    ]:
        assert f"{action}  {checkpoints / name}" in out  # fmt: skip
    assert "--yes" in out


@pytest.mark.parametrize(("mode", "best"), [("min", "low.ckpt"), ("max", "high.ckpt")])
def test_prune_keeps_the_best_by_the_monitors_mode(tmp_path, mode, best):
    scores = {"high.ckpt": 0.9, "low.ckpt": 0.1, "middle.ckpt": 0.5}
    run = make_run(tmp_path / "run", scores=scores, mode=mode)
    main(["prune", str(run), "--keep", "1", "--yes"])
    assert ckpt_names(run) == {best, "last.ckpt"}


def test_prune_ranks_checkpoints_without_a_score_last(tmp_path):
    scores = {"unscored.ckpt": None, "worse.ckpt": 0.3, "better.ckpt": 0.2}
    run = make_run(tmp_path / "run", scores=scores)
    kept, deleted = prune_plan(run, keep=2)
    assert [c.path.name for c in deleted] == ["unscored.ckpt"]
    main(["prune", str(run), "--keep", "0", "--yes"])
    assert ckpt_names(run) == {"last.ckpt"}


def test_prune_of_a_folder_prunes_each_run_and_spares_last_and_unreadable(tmp_path, capsys):
    a = make_run(
        tmp_path / "runs" / "a", scores={"best-epoch000.ckpt": 0.3, "best-epoch001.ckpt": 0.1}
    )
    b = make_run(tmp_path / "runs" / "b", scores={"x.ckpt": 0.5, "y.ckpt": 0.4})
    (b / "checkpoints" / "last.ckpt").unlink()
    (b / "checkpoints" / "last.ckpt").symlink_to("x.ckpt")  # save_last="link"
    (b / "checkpoints" / "broken.ckpt").write_bytes(b"truncated")
    main(["prune", str(tmp_path / "runs"), "--keep", "0", "--yes"])
    assert ckpt_names(a) == {"last.ckpt"}
    assert ckpt_names(b) == {"last.ckpt", "x.ckpt", "broken.ckpt"}
    assert "unreadable" in capsys.readouterr().out


def test_prune_refuses_to_rank_scores_of_different_monitors(tmp_path, capsys):
    run = make_run(tmp_path / "run", scores={"a.ckpt": 0.1})
    state = {"monitor": "val/pseudo_acc", "current_score": torch.tensor(0.9)}
    callbacks = {monitored("val/pseudo_acc", "max"): state}
    torch.save({"global_step": 5, "callbacks": callbacks}, run / "checkpoints" / "b.ckpt")
    with pytest.raises(SystemExit):
        main(["prune", str(run), "--keep", "0", "--yes"])
    assert ckpt_names(run) == {"a.ckpt", "b.ckpt", "last.ckpt"}
    assert "different monitors" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "{tmp}/missing"], "does not exist"),
        (["list", "{tmp}/empty"], "No training runs"),
        (["prune", "{tmp}/run", "--keep", "-1"], "--keep must be 0 or more"),
        (["compare", "{tmp}/run"], "two or more runs"),
    ],
)
def test_bad_input_is_a_one_line_error_with_exit_status_2(tmp_path, capsys, argv, message):
    make_run(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main([arg.format(tmp=tmp_path) for arg in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
