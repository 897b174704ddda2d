"""Run housekeeping: list, compare and prune training runs.

    python -m diffusion_lit.runs list [DIR ...] [--json]        # a row per run under DIR (outputs/)
    python -m diffusion_lit.runs compare RUN RUN [RUN ...]      # the config keys that differ
    python -m diffusion_lit.runs prune RUN ... --keep N [--yes]  # all but the N best checkpoints

A run is a training run directory (``outputs/runs/<date_time>/``, a sweep's
``outputs/multirun/<date_time>/<n>/``): ``.hydra/config.yaml``, ``accuracy_log.txt``,
``logs/metrics.csv``, ``checkpoints/`` and the evaluations in ``checkpoints/eval-*/eval.json``.
A folder of runs (``outputs/``) stands for every run in it. What a missing or unreadable file
would have told shows as ``?``."""

import argparse
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion_lit.errors import UserError, report_user_errors
from diffusion_lit.run_dir import Run, RunDir, find_runs, read_config, summarize, to_float

# Lightning names a second "last" in the same folder last-v1.ckpt: it is as much the last one
LAST = re.compile(r"last(-v\d+)?\.ckpt")
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


def config_values(cfg: DictConfig) -> dict[str, object]:
    # unresolved: ${hydra:...} has no value outside hydra, and the raw text is what was set
    tree = OmegaConf.to_container(cfg, resolve=False)
    return flatten({k: v for k, v in tree.items() if k not in UNCOMPARED})


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
    it links to, for save_last="link") and unreadable files whatever their score."""
    files = sorted(RunDir(run_dir).checkpoints.glob("*.ckpt"))
    pinned = {p.resolve() for p in files if LAST.fullmatch(p.name)}
    kept = [
        Checkpoint(p, note="last" if LAST.fullmatch(p.name) else "what last.ckpt links to")
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


# commands


def list_runs(args: argparse.Namespace) -> None:
    runs = [summarize(d) for d in find_runs(args.dirs)]
    print(json.dumps([asdict(r) for r in runs], indent=2) if args.json else list_table(runs))


def compare_runs(args: argparse.Namespace) -> None:
    run_dirs = find_runs(args.runs)
    if len(run_dirs) < 2:
        raise UserError(
            f"compare needs two or more runs, and {', '.join(args.runs)} holds "
            f"{len(run_dirs)}: pass more run directories."
        )
    print(compare_table(run_dirs))


def prune_runs(args: argparse.Namespace) -> None:
    if args.keep < 0:
        raise UserError(
            f"--keep must be 0 or more, not {args.keep}: it is how many checkpoints besides "
            "last.ckpt to keep."
        )
    # every plan is made before anything is deleted, so a run that cannot be ranked stops all
    plans = [(d, *prune_plan(d, args.keep)) for d in find_runs(args.runs)]
    doomed = []
    for run_dir, kept, deleted in plans:
        print(f"{run_dir}: keep {len(kept)}, delete {len(deleted)}")
        rows = [["keep", c.path.name, describe(c)] for c in kept]
        rows += [["delete", c.path.name, describe(c)] for c in deleted]
        if rows:
            print(format_table(["", "checkpoint", "saved with"], rows))
        doomed += [c.path for c in deleted]
    if not doomed:
        print("Nothing to delete.")
    elif not args.yes:
        print(
            f"Dry run: would delete {len(doomed)} checkpoints ({megabytes(doomed)}); "
            "pass --yes to delete them."
        )
    else:
        size = megabytes(doomed)
        for path in doomed:
            path.unlink()
        print(f"Deleted {len(doomed)} checkpoints ({size}).")


class Parser(argparse.ArgumentParser):
    """argparse's mistakes (an unknown command, ``--keep x``) as the other CLIs report them."""

    def error(self, message: str):
        raise UserError(f"{message}; see python -m diffusion_lit.runs --help.")


def parser() -> argparse.ArgumentParser:
    cli = Parser(
        prog="python -m diffusion_lit.runs", description="List, compare and prune training runs."
    )
    commands = cli.add_subparsers(required=True, metavar="COMMAND")

    ls = commands.add_parser("list", help="a row per run: model, data, metrics, checkpoints")
    ls.add_argument(
        "dirs",
        nargs="*",
        default=["outputs"],
        metavar="DIR",
        help="run directories or folders of runs (default: outputs)",
    )
    ls.add_argument("--json", action="store_true", help="the rows as JSON, for scripts")
    ls.set_defaults(command=list_runs)

    compare = commands.add_parser("compare", help="the config keys that differ, and the metrics")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="two or more runs")
    compare.set_defaults(command=compare_runs)

    prune = commands.add_parser("prune", help="delete all but the N best checkpoints of runs")
    prune.add_argument("runs", nargs="+", metavar="RUN", help="runs or folders of runs")
    prune.add_argument(
        "--keep",
        type=int,
        required=True,
        metavar="N",
        help="checkpoints to keep besides last.ckpt, the best by their score",
    )
    prune.add_argument("--yes", action="store_true", help="delete (without it: a dry run)")
    prune.set_defaults(command=prune_runs)
    return cli


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.command(args)


if __name__ == "__main__":
    main()
