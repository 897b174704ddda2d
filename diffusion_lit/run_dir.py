"""A training run directory: :class:`RunDir`, the one place that knows where a run keeps its
files (the training configs name them through the ``${run_file:...}`` resolver); reading its
config, accuracy log, metrics, evaluations and checkpoints; finding the runs under a folder.
Missing or unreadable files read as None or empty, so one damaged run never hides the others."""

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diffusion_lit.errors import UserError


class RunDir:
    """Where a run keeps its files::

    <run>/.hydra/config.yaml              the composed config (overrides.yaml beside it)
    <run>/checkpoints/last.ckpt           the newest state; best-epochNNN.ckpt the best
    <run>/checkpoints/eval-<ckpt>-<settings>/   evaluations of a checkpoint
    <run>/accuracy_log.txt                the seed's per-epoch pseudo-accuracy
    <run>/logs/metrics.csv                the CSV logger's metrics
    <run>/samples/epoch_NNN.png, final.png   sample grids
    <run>/curves.png                      training curves
    <run>/wandb_id.txt                    the wandb run id, kept for resuming
    <run>/hpc_ckpt_N.ckpt                 Lightning's, when SLURM signals a job before its end
    """

    CONFIG_DIR = ".hydra"
    LAST_CHECKPOINT = "checkpoints/last.ckpt"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / self.CONFIG_DIR / "config.yaml")
    overrides = property(lambda self: self.path / self.CONFIG_DIR / "overrides.yaml")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / self.LAST_CHECKPOINT)
    accuracy_log = property(lambda self: self.path / "accuracy_log.txt")
    logs = property(lambda self: self.path / "logs")
    metrics = property(lambda self: self.logs / "metrics.csv")
    samples = property(lambda self: self.path / "samples")
    final_grid = property(lambda self: self.samples / "final.png")
    curves = property(lambda self: self.path / "curves.png")
    wandb_id = property(lambda self: self.path / "wandb_id.txt")
    # Lightning's name in its default_root_dir (the run dir), hpc_save_path
    hpc_checkpoints = property(lambda self: sorted(self.path.glob("hpc_ckpt_*.ckpt")))

    @staticmethod
    def evaluation_dir(checkpoint: Path, settings: str) -> Path:
        """Where an evaluation of ``checkpoint`` with ``settings`` goes: next to it."""
        return checkpoint.parent / f"eval-{checkpoint.stem}-{settings}"

    @classmethod
    def evaluation_dirs(cls, checkpoint: Path) -> list[Path]:
        """The evaluations of ``checkpoint`` (``*.ckpt``: of every checkpoint in its folder)."""
        pattern = cls.evaluation_dir(checkpoint, "*")
        return sorted(pattern.parent.glob(pattern.name))

    def evaluations(self, checkpoint: str = "*") -> list[Path]:
        """The evaluation folders of this run's checkpoint (by file stem; of any by default)."""
        return self.evaluation_dirs(self.checkpoints / f"{checkpoint}.ckpt")

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> "RunDir | None":
        """The run a checkpoint was written in (``<run>/checkpoints/x.ckpt``), if any."""
        inside = checkpoint.parent.name == Path(cls.LAST_CHECKPOINT).parent.name
        return cls(checkpoint.parent.parent) if inside else None


def _run_file(name: str, *, _root_) -> str:
    """``${run_file:checkpoints}`` in a training config: that file or folder of this run."""
    return str(getattr(RunDir(_root_.paths.run_dir), name))


OmegaConf.register_new_resolver("run_file", _run_file, replace=True)


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


def read_config(run_dir: Path) -> DictConfig | None:
    path = RunDir(run_dir).config
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # half-written or hand-edited: the run still lists, with ?
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def read_accuracy_log(run_dir: Path) -> list[tuple[int, float]]:
    """``(epoch, pseudo-accuracy)`` per line of accuracy_log.txt, in file order."""
    try:
        text = RunDir(run_dir).accuracy_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = (ACCURACY_LINE.match(line.strip()) for line in text.splitlines())
    return [(int(m[1]), v) for m in lines if m and (v := to_float(m[2])) is not None]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the CSVLogger's logs/metrics.csv (a metric not logged in a row is '')."""
    try:
        with RunDir(run_dir).metrics.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def read_newest_eval(run_dir: Path, checkpoint: str = "*") -> tuple[str, dict] | None:
    """The folder name and contents of the newest readable evaluation of a checkpoint (by file
    stem; any by default)."""
    files = [d / "eval.json" for d in RunDir(run_dir).evaluations(checkpoint)]
    files = sorted((f for f in files if f.is_file()), key=lambda p: p.stat().st_mtime)
    for path in reversed(files):
        try:
            return path.parent.name, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def run_date(run_dir: Path) -> str:
    for name in (run_dir.name, run_dir.parent.name):  # <date_time>/ or <date_time>/<job number>/
        if RUN_DATE.fullmatch(name):
            return datetime.strptime(name, "%Y-%m-%d_%H-%M-%S").isoformat(" ")
    config = RunDir(run_dir).config  # written once, when the run starts
    mtime = (config if config.is_file() else run_dir).stat().st_mtime
    return datetime.fromtimestamp(mtime).isoformat(" ", timespec="seconds")


def class_name(target: str | None) -> str | None:
    return target.rsplit(".", 1)[-1] if target else None


def summarize(run_dir: Path) -> Run:
    cfg = read_config(run_dir)
    model = data = None
    if cfg is not None:
        model = class_name(OmegaConf.select(cfg, "model._target_"))
        dataset = class_name(OmegaConf.select(cfg, "data.dataset._target_"))
        size = OmegaConf.select(cfg, "data.image_size")
        data = dataset and (f"{dataset} {size}px" if size is not None else dataset)

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
        checkpoints=sorted(p.name for p in RunDir(run_dir).checkpoints.glob("*.ckpt")),
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
    if run.checkpoints.is_dir() or run.accuracy_log.is_file():
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
