"""Run housekeeping: the tables of ``runs list`` and ``runs compare``, and the plan of ``runs
prune`` (which checkpoints to keep, by the score their ModelCheckpoint saved them with)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion_lit.errors import UserError
from diffusion_lit.runs.layout import RunDir
from diffusion_lit.runs.summary import Run, read_config, summarize, to_float

UNCOMPARED = ("paths", "hydra")  # differ in every run, or not part of the experiment


@dataclass
class Checkpoint:
    """A checkpoint file and the score its ModelCheckpoint saved it with."""

    path: Path
    score: float | None = None
    monitor: str | None = None
    mode: str = "min"
    step: int = -1
    note: str = ""  # why it is kept whatever its score: "last", "unreadable, left alone", ...


# tables


def fmt(value, spec: str = "") -> str:
    return "?" if value is None else format(value, spec)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text columns, aligned on the widest cell, with a rule under the header."""
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    cells = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(line.rstrip() for line in cells)


def metric_cells(run: Run) -> dict[str, str]:
    return {
        "epochs": fmt(run.epochs),
        "best val/loss": fmt(run.best_val_loss, ".4f"),
        "last pseudo-acc": fmt(run.last_accuracy, ".4f"),
        "eval acc": fmt(run.eval_accuracy, ".1%"),
        "eval FID×": fmt(run.eval_fid_ratio, ".2f"),
        "eval diversity": fmt(run.eval_diversity, ".2f"),
    }


def list_rows(runs: list[Run]) -> list[dict[str, str]]:
    """The cells of ``list``, a dict per run (column name → text)."""
    return [
        {"run": run.path, "date": run.date[:16], "model": fmt(run.model), "data": fmt(run.data)}
        | {"from": f"{run.parent} ({run.how})" if run.parent else "-"}
        | metric_cells(run)
        | {"checkpoints": ", ".join(run.checkpoints) or "-"}
        for run in runs
    ]


def list_table(runs: list[Run]) -> str:
    rows = list_rows(runs)
    return format_table(list(rows[0]), [list(row.values()) for row in rows])


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"optimizer.lr": 0.002, ...}``; lists are values, not nested keys."""
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items |= flatten(value, f"{prefix}{key}.")
        else:
            items[f"{prefix}{key}"] = value
    return items


def config_values(cfg: dict) -> dict[str, object]:
    # as written (read_config resolves nothing): the raw text is what was set
    return flatten({k: v for k, v in cfg.items() if k not in UNCOMPARED})


def compare_table(run_dirs: list[Path]) -> str:
    """A column per run: the config keys whose values differ, then the metrics."""
    configs = [None if (cfg := read_config(d)) is None else config_values(cfg) for d in run_dirs]
    known = [c for c in configs if c is not None]  # a run without .hydra differs in nothing

    def cell(config: dict | None, key: str) -> str:
        if config is None:
            return "?"
        value = config.get(key, "-")  # - : the key is not in this run's config
        return value if isinstance(value, str) else json.dumps(value, default=str)

    keys = sorted({k for c in known for k in c})
    differing = [k for k in keys if len({cell(c, k) for c in known}) > 1]
    rows = [[key, *(cell(c, key) for c in configs)] for key in differing]
    if not differing:
        rows.append(["(no config differences)", *([""] * len(run_dirs))])
    metrics = [metric_cells(summarize(d)) for d in run_dirs]
    rows.append([""] * (len(run_dirs) + 1))
    rows += [[name, *(m[name] for m in metrics)] for name in metrics[0]]
    return format_table(["", *map(str, run_dirs)], rows)


# pruning


def scored_checkpoint(path: Path) -> Checkpoint:
    """The score a checkpoint's ModelCheckpoint state holds, read as data (tensors and plain
    containers only); the model in it is not read."""
    try:  # mmap: only the few small entries read here come off the disk
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated, foreign or still being written: never deleted
        return Checkpoint(path, note=f"unreadable, left alone ({type(err).__name__})")
    if not isinstance(state, dict):
        return Checkpoint(path, note="not a Lightning checkpoint, left alone")
    step = state.get("global_step")
    ckpt = Checkpoint(path, step=step if isinstance(step, int) else -1)
    for key, callback in (state.get("callbacks") or {}).items():
        # several ModelCheckpoints may save into a run (e.g. one every N steps); the ranking one
        # is the one with a monitor, and its mode is only in the key (ModelCheckpoint.state_key,
        # a repr of its settings: a checkpoint read without the callback has nothing else)
        monitor = callback.get("monitor") if isinstance(callback, dict) else None
        if key.startswith("ModelCheckpoint") and monitor:
            mode = re.search(r"'mode': '(min|max)'", key)
            ckpt.monitor, ckpt.mode = monitor, mode[1] if mode else "min"
            ckpt.score = to_float(callback.get("current_score"))
            break
    return ckpt


def rank(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """Best first: by score in the monitor's direction, then those without one, newest first."""
    monitors = {(c.monitor, c.mode) for c in ckpts if c.score is not None}
    if len(monitors) > 1:
        saved_by = ", ".join(f"{m} ({mode})" for m, mode in sorted(monitors))
        folder = ckpts[0].path.parent
        raise UserError(
            f"The checkpoints in {folder} were ranked by different monitors ({saved_by}): "
            "their scores do not compare, so prune that run by hand."
        )

    def key(c: Checkpoint):
        signed = 0.0 if c.score is None else (c.score if c.mode == "min" else -c.score)
        return c.score is None, signed, -c.step, c.path.name

    return sorted(ckpts, key=key)


def prune_plan(run_dir: Path, keep: int) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """(kept, deleted): the ``keep`` best-scored checkpoints are kept, and last.ckpt (with what
    it links to, for save_last="link"), unreadable files and files that lie outside the run
    (a link out of it) whatever their score."""
    run = RunDir(run_dir)
    files = sorted(run.checkpoints.glob("*.ckpt"))
    outside = [Checkpoint(p, note="outside the run, left alone") for p in files if not run.file(p)]
    files = [p for p in files if run.file(p)]
    pinned = {p.resolve() for p in files if RunDir.is_last(p)}
    kept = outside + [
        Checkpoint(p, note="last" if RunDir.is_last(p) else "what last.ckpt links to")
        for p in files
        if p.resolve() in pinned
    ]
    candidates = [scored_checkpoint(p) for p in files if p.resolve() not in pinned]
    ranked = rank([c for c in candidates if not c.note])
    kept += [c for c in candidates if c.note] + ranked[:keep]
    return kept, ranked[keep:]


def describe(ckpt: Checkpoint) -> str:
    if ckpt.note:
        return ckpt.note
    if ckpt.score is None:
        return "no score"
    return f"{ckpt.monitor} = {ckpt.score:.6g} ({ckpt.mode})"


def megabytes(paths: list[Path]) -> str:
    return f"{sum(p.lstat().st_size for p in paths) / 2**20:.1f} MB"
