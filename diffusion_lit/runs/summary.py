"""What a run's files say: its config, accuracy log, metrics, evaluations and checkpoints, read
into one row per run (:class:`Run`), and the runs under a folder. Missing or unreadable files
read as None or empty, so one damaged run never hides the others."""

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from diffusion_lit import files
from diffusion_lit.errors import UserError
from diffusion_lit.runs.layout import RunDir

MAX_CONFIG_BYTES = 2**20  # a run's composed config is a few kilobytes
ACCURACY_LINE = re.compile(r"Epoch#(\d+)\s*:\s*Accuracy\s*≈\s*(\S+)")
RUN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")  # hydra's run and sweep dir names


@dataclass
class Run:
    """One row of ``list``; None where the file that says it is missing or unreadable."""

    path: str
    date: str  # YYYY-MM-DD HH:MM:SS, from the run dir's name or else its config's mtime
    model: str | None
    data: str | None
    epochs: int | None
    best_val_loss: float | None
    last_accuracy: float | None  # the last line of accuracy_log.txt (train pseudo-accuracy)
    eval: str | None  # the newest checkpoints/eval-*/ folder
    eval_accuracy: float | None  # the judge's conditional accuracy on the samples
    eval_fid_ratio: float | None  # FID in the judge's features ÷ real-vs-real
    eval_diversity: float | None  # per-class feature spread ÷ the real images'
    checkpoints: list[str]
    parent: str | None = None  # init_from: the model it was trained from
    how: str | None = None  # full | lora, and the replay, for a run with a parent


def read_config(run_dir: Path) -> dict | None:
    """A run's composed config as plain data, as it was written: an interpolation
    (``${oc.env:...}``, ``${a}``) is its text, never resolved, so a run folder cannot make us
    read the environment or loop. None when there is none or it will not read."""
    text = RunDir(run_dir).text(RunDir(run_dir).config, limit=MAX_CONFIG_BYTES)
    try:
        # no YAML aliases: Hydra writes none, and a few can expand a small file without bound
        if text is None or any(isinstance(t, yaml.AliasToken) for t in yaml.scan(text)):
            return None
        cfg = yaml.safe_load(text)
    except Exception:  # half-written or hand-edited: the run still lists, marked
        return None
    return cfg if isinstance(cfg, dict) else None


def select(cfg: dict | None, key: str):
    """The value at the dotted ``key`` of a config read by :func:`read_config`, None where
    there is none."""
    node = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def read_accuracy_log(run_dir: Path) -> list[tuple[int, float]]:
    """``(epoch, pseudo-accuracy)`` per line of accuracy_log.txt, in file order."""
    text = RunDir(run_dir).text(RunDir(run_dir).accuracy_log) or ""
    lines = (ACCURACY_LINE.match(line.strip()) for line in text.splitlines())
    return [(int(m[1]), v) for m in lines if m and (v := to_float(m[2])) is not None]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the CSVLogger's logs/metrics.csv (a metric not logged in a row is '')."""
    text = RunDir(run_dir).text(RunDir(run_dir).metrics) or ""
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error:
        return []


def read_newest_eval(run_dir: Path, checkpoint: str = "*") -> tuple[str, dict] | None:
    """The folder name and contents of the newest readable evaluation of a checkpoint (by file
    stem; any by default)."""
    run = RunDir(run_dir)
    files = [f for d in run.evaluations(checkpoint) if (f := run.file(d / "eval.json"))]
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return path.parent.name, json.loads(run.text(path) or "")
        except (ValueError, RecursionError):
            continue
    return None


def run_date(run_dir: Path) -> str:
    for name in (run_dir.name, run_dir.parent.name):  # <date_time>/ or <date_time>/<job number>/
        if RUN_DATE.fullmatch(name):
            return datetime.strptime(name, "%Y-%m-%d_%H-%M-%S").isoformat(" ")
    config = RunDir(run_dir).file(RunDir(run_dir).config)  # written once, when the run starts
    mtime = (config or run_dir).stat().st_mtime
    return datetime.fromtimestamp(mtime).isoformat(" ", timespec="seconds")


def class_name(target) -> str | None:
    return target.rsplit(".", 1)[-1] if isinstance(target, str) and target else None


def parent_of(cfg: dict | None) -> Path | None:
    """The model a run started from (its ``init_from``), if any."""
    given = select(cfg, "init_from")
    return Path(given) if isinstance(given, str) and given else None


def parent_run(run_dir: Path) -> Path | None:
    """The run that wrote the model a run started from, when it was a run's checkpoint or the
    export or adapter folder beside it (``<run>/checkpoints/...``)."""
    parent = parent_of(read_config(run_dir))
    if parent is None:
        return None
    for folder in (parent.parent, parent.parent.parent):  # x.ckpt, or export-x/ and adapter-x/
        if folder.name == RunDir(folder.parent).checkpoints.name:
            return folder.parent
    return None


def lineage_runs(run_dir: Path, limit: int = 64) -> list[Path]:
    """The runs a run descends from, oldest first, and itself (a chain of ``init_from`` runs
    that can still be found; a loop or a missing run ends it)."""
    chain = [run_dir]
    while len(chain) < limit and (parent := parent_run(chain[0])) is not None:
        if not files.is_dir(parent) or parent.resolve() in {c.resolve() for c in chain}:
            break
        chain.insert(0, parent)
    return chain


def summarize(run_dir: Path) -> Run:
    cfg = read_config(run_dir)
    model = data = parent = how = None
    if (given := parent_of(cfg)) is not None:
        run = parent_run(run_dir)
        parent = str(run.name if run is not None else given)
        mode, replay = select(cfg, "finetune.mode") or "full", select(cfg, "replay.mode")
        how = f"{mode}, replay {replay or 'none'}"
    if cfg is not None:
        model = class_name(select(cfg, "model._target_"))
        dataset = class_name(select(cfg, "data.dataset._target_"))
        size = select(cfg, "data.image_size")
        data = dataset and (f"{dataset} {size}px" if size is not None else dataset)
    elif RunDir(run_dir).file(RunDir(run_dir).config):
        model = "(unreadable .hydra/config.yaml)"

    accuracy = read_accuracy_log(run_dir)
    metrics = read_metrics(run_dir)
    val_losses = [v for row in metrics if (v := to_float(row.get("val/loss"))) is not None]
    if accuracy:
        epochs = len({epoch for epoch, _ in accuracy})
    else:
        epochs = len({row["epoch"] for row in metrics if row.get("epoch")}) or None
    evaluation = read_newest_eval(run_dir)
    name, result = evaluation or (None, {})
    return Run(
        path=str(run_dir),
        date=run_date(run_dir),
        model=model,
        data=data,
        epochs=epochs,
        best_val_loss=min(val_losses, default=None),
        last_accuracy=accuracy[-1][1] if accuracy else None,
        eval=name,
        eval_accuracy=to_float(result.get("conditional_accuracy")),
        eval_fid_ratio=to_float(result.get("fid_ratio")),
        eval_diversity=to_float(result.get("diversity")),
        checkpoints=[p.name for p in RunDir(run_dir).checkpoint_files()],
        parent=parent,
        how=how,
    )


def to_float(value) -> float | None:
    """A number from a CSV cell, a log line or JSON; None for '', text, null and NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# finding runs


def is_run(path: Path) -> bool:
    run = RunDir(path)
    if run.checkpoints.is_dir() and run.inside(run.checkpoints):
        return True
    if run.file(run.accuracy_log) or run.file(run.metrics):  # what only training writes
        return True
    cfg = read_config(path)  # evaluate and sample runs have a .hydra too, but no trainer
    return cfg is not None and "trainer" in cfg


def find_runs(paths: list[str]) -> list[Path]:
    """The run dirs among ``paths`` and under them, oldest first; a run's own subfolders are
    not searched."""
    runs: dict[Path, Path] = {}
    for given in map(Path, paths):
        if not given.exists():
            raise UserError(f"{given} does not exist: pass a run directory or a folder of runs.")
        if not given.is_dir():
            raise UserError(
                f"{given} is not a directory: pass a run directory or a folder of runs."
            )
        found = []
        for folder, subfolders, _ in os.walk(given):
            folder = Path(folder)
            if is_run(folder):
                found.append(folder)
                subfolders.clear()
            else:
                subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        if not found:
            raise UserError(
                f"No training runs under {given}: pass a run directory (one with checkpoints/, "
                "accuracy_log.txt or .hydra/config.yaml) or a folder of them (outputs/)."
            )
        for run in found:
            runs.setdefault(run.resolve(), run)
    return sorted(runs.values(), key=lambda run: (run_date(run), str(run)))
