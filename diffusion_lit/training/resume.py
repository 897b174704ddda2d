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

from diffusion_lit.errors import UserError
from diffusion_lit.modelfile.checkpoint import existing
from diffusion_lit.modelfile.spec import ModelSpec
from diffusion_lit.runs.layout import RunDir

NEWEST = "last"  # ckpt_path=last: the newest run's checkpoints/last.ckpt


def find_checkpoint(ckpt_path: str | None, output_dir: str | Path) -> Path | None:
    """``ckpt_path`` as a file: ``last`` is the newest ``checkpoints/last.ckpt`` under
    ``output_dir``; anything else must be an existing file."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == NEWEST:
        found = sorted(Path(output_dir).glob(f"**/{RunDir.LAST_CHECKPOINT}"), key=_mtime)
        if not found:
            raise UserError(
                f"ckpt_path=last: no run under {output_dir}/ has checkpoints/last.ckpt; train "
                "without ckpt_path first, or give ckpt_path=<path to a .ckpt file>."
            )
        return found[-1]
    path = existing(ckpt_path, hint=TRAINING_HINT)
    if not path.is_file():
        raise UserError(f"ckpt_path={str(path)!r} is a folder; pass {TRAINING_HINT}.")
    return path


TRAINING_HINT = (
    "ckpt_path=last (the newest run) or the path of a .ckpt file, e.g. "
    "outputs/runs/<run>/checkpoints/last.ckpt"
)


def interrupted_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a run starting in ``run_dir`` continues from, when the directory already
    holds one: a requeued SLURM job (``hpc_ckpt_N.ckpt``, saved by Lightning when SLURM signalled
    the job) or a restarted process (``checkpoints/last.ckpt``); the newest of them."""
    run = RunDir(run_dir)
    found = [p for p in (run.last_checkpoint, *run.hpc_checkpoints) if p.is_file()]
    return max(found, key=_mtime) if found else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def resume_run_dir(ckpt_path: str | None, output_dir: str, new_dir: str) -> str:
    """``${resume_run_dir:...}``, Hydra's run dir: the resumed run's own directory, else a new
    one."""
    try:
        checkpoint = find_checkpoint(ckpt_path, output_dir)
    except UserError:
        return new_dir  # train() reports it, with Hydra's logging set up
    run = checkpoint and RunDir.of_checkpoint(checkpoint)
    return str(run.path) if run else new_dir


def config_subdir(ckpt_path: str | None, now: str) -> str:
    """``${config_subdir:...}``, where Hydra saves the composed config: a resumed run keeps its
    original ``.hydra/``."""
    return RunDir.CONFIG_DIR if ckpt_path is None else f"{RunDir.CONFIG_DIR}/resume-{now}"


# a model spec's part → the config group a user sets it with
_CONFIG_NAMES = {"net": "model", "schedule": "schedule", "text_encoder": "text_encoder"}


def check_same_model(checkpoint: Path, saved: ModelSpec, spec: ModelSpec) -> None:
    """Fails, naming what differs, when the model spec ``saved`` in ``checkpoint`` describes
    another model than ``spec`` (its weights could not be loaded into it)."""
    differences = [
        difference
        for group, name in _CONFIG_NAMES.items()
        for difference in _diff(name, getattr(saved, group), getattr(spec, group))
    ]
    if saved.class_prompts != spec.class_prompts:
        differences.append(
            f"data: {len(saved.class_prompts)} classes/prompts in the checkpoint "
            f"({saved.class_names[:3]}…), {len(spec.class_prompts)} now"
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
    checkpoint by the interrupted process are dropped (the resumed run logs them again). The
    logger's writer deletes an existing file when it starts, so the kept rows are read first
    and logged again through the logger's own ``log_metrics``."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) < global_step]
    with warnings.catch_warnings():  # "previous log files ... will be deleted": they are kept
        warnings.simplefilter("ignore")
        logger.experiment  # noqa: B018 - starts the writer, which deletes the file
    for row in rows:
        values = {k: _number(v) for k, v in row.items() if k != "step" and v != ""}
        logger.log_metrics(values, step=int(row["step"]))
    logger.save()


def _number(cell: str) -> int | float:
    """A CSV cell as the number that was logged, so that it is written again as it was."""
    try:
        return int(cell)
    except ValueError:
        return float(cell)


def wandb_run_id(run_dir: str | Path) -> str:
    """The wandb run id of a run directory, created on its first start and reused on resume."""
    path = RunDir(run_dir).wandb_id
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id
