"""Resuming a run: the checkpoint ``ckpt_path=last`` means, the run directory it belongs to, a
check that the configuration still matches it, and logs that continue where it left off.

Lightning restores the weights, optimizer, EMA, loop counters, callback states and the data
loaders' positions from the checkpoint; this module handles what lives outside it.
"""

import csv
import math
import secrets
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lit.errors import UserError
from diffusion_lit.run_dir import RunDir

LAST = "last"


def find_checkpoint(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """``ckpt_path`` as a file: ``last`` is the newest ``checkpoints/last.ckpt`` under
    ``output_dir``; anything else must be an existing file."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == LAST:
        found = sorted(Path(output_dir).glob(f"**/{RunDir.LAST_CHECKPOINT}"), key=_mtime)
        if not found:
            raise UserError(
                f"ckpt_path=last: no run under {output_dir}/ has checkpoints/last.ckpt; train "
                "without ckpt_path first, or give ckpt_path=<path to a .ckpt file>."
            )
        return found[-1]
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(
            f"Checkpoint {path} does not exist: pass ckpt_path=last (the newest run) or the path "
            "of a .ckpt file, e.g. outputs/runs/<run>/checkpoints/last.ckpt."
        )
    return path


def interrupted_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a run starting in ``run_dir`` continues from, when the directory already
    holds one: a requeued SLURM job (``hpc_ckpt_N.ckpt``, saved by Lightning when SLURM signalled
    the job) or a restarted process (``checkpoints/last.ckpt``); the newest of them."""
    run = RunDir(run_dir)
    found = [p for p in (run.last_checkpoint, *run.hpc_checkpoints) if p.is_file()]
    return max(found, key=_mtime) if found else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _resume_run_dir(ckpt_path: str | None, output_dir: str, new_dir: str) -> str:
    """Hydra's run dir: the resumed run's own directory, else a new one."""
    try:
        checkpoint = find_checkpoint(ckpt_path, output_dir)
    except UserError:
        return new_dir  # train() reports it, with Hydra's logging set up
    run = checkpoint and RunDir.of_checkpoint(checkpoint)
    return str(run.path) if run else new_dir


def _config_subdir(ckpt_path: str | None, now: str) -> str:
    """Where Hydra saves the composed config: a resumed run keeps its original ``.hydra/``."""
    return RunDir.CONFIG_DIR if ckpt_path is None else f"{RunDir.CONFIG_DIR}/resume-{now}"


OmegaConf.register_new_resolver("resume_run_dir", _resume_run_dir, replace=True)
OmegaConf.register_new_resolver("config_subdir", _config_subdir, replace=True)


# a model spec's part → the config group a user sets it with
_CONFIG_NAMES = {"net": "model", "schedule": "schedule", "text_encoder": "text_encoder"}


def check_same_model(checkpoint: Path, saved: dict, spec: dict) -> None:
    """Fails, naming what differs, when the model spec ``saved`` in ``checkpoint`` describes
    another model than ``spec`` (its weights could not be loaded into it)."""
    differences = [
        difference
        for group, name in _CONFIG_NAMES.items()
        for difference in _diff(name, saved[group], spec[group])
    ]
    if saved["class_prompts"] != spec["class_prompts"]:
        differences.append(
            f"data: {len(saved['class_prompts'])} classes/prompts in the checkpoint "
            f"({saved['class_names'][:3]}…), {len(spec['class_prompts'])} now"
        )
    if differences:
        run = RunDir.of_checkpoint(checkpoint)
        hint = f" (listed in {run.overrides})" if run else ""
        raise UserError(
            f"{checkpoint} holds another model than this configuration: "
            f"{'; '.join(differences[:4])}. Resume with the run's own overrides{hint}."
        )


def _diff(name: str, old: dict, new: dict):
    """A line per argument of config group ``name`` that differs; just one for another kind."""
    if old.get("kind") != new.get("kind"):
        yield f"{name}={old.get('kind')} in the checkpoint, {name}={new.get('kind')} now"
        return
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if not (a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b))):
            yield f"{name}.{key}: {a!r} in the checkpoint, {b!r} now"


def continue_csv_log(logger, global_step: int) -> None:
    """Makes a CSVLogger's ``metrics.csv`` continue at ``global_step``: rows logged after the
    checkpoint by the interrupted process are dropped (the resumed run logs them again)."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if int(row["step"]) < global_step]
    with warnings.catch_warnings():  # "previous log files ... will be deleted": not so
        warnings.simplefilter("ignore")
        writer = logger.experiment  # Lightning's writer deletes an existing metrics.csv here
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=header)
        out.writeheader()
        out.writerows(rows)
    tmp.replace(path)
    # the writer knows no columns yet: without this it would rewrite the file with only the
    # first new row's columns. CSVLogger has no public way to continue a file (its writer
    # always starts afresh), so this sets the writer's own column list.
    writer.metrics_keys = sorted(header)


def wandb_run_id(run_dir: str | Path) -> str:
    """The wandb run id of a run directory, created on its first start and reused on resume."""
    path = RunDir(run_dir).wandb_id
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id
