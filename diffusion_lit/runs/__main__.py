"""``python -m diffusion_lit.runs``: list, compare and prune training runs.

    python -m diffusion_lit.runs list [DIR ...] [--json]        # a row per run under DIR (outputs/)
    python -m diffusion_lit.runs compare RUN RUN [RUN ...]      # the config keys that differ
    python -m diffusion_lit.runs compare RUN                    # a fine-tune beside its bases
    python -m diffusion_lit.runs prune RUN ... --keep N [--yes]  # all but the N best checkpoints

A run is a training run directory (``outputs/runs/<date_time>/``, a sweep's
``outputs/multirun/<date_time>/<n>/``): ``.hydra/config.yaml``, ``accuracy_log.txt``,
``logs/metrics.csv``, ``checkpoints/`` and the evaluations in ``checkpoints/eval-*/eval.json``.
A folder of runs (``outputs/``) stands for every run in it. What a missing or unreadable file
would have told shows as ``?``."""

import argparse
import json
from dataclasses import asdict

from diffusion_lit.errors import UserError, report_user_errors
from diffusion_lit.runs.housekeeping import (
    compare_table,
    describe,
    format_table,
    list_table,
    megabytes,
    prune_plan,
)
from diffusion_lit.runs.summary import find_runs, lineage_runs, summarize


def list_runs(args: argparse.Namespace) -> None:
    runs = [summarize(d) for d in find_runs(args.dirs)]
    print(json.dumps([asdict(r) for r in runs], indent=2) if args.json else list_table(runs))


def compare_runs(args: argparse.Namespace) -> None:
    run_dirs = find_runs(args.runs)
    if len(run_dirs) == 1:  # a fine-tune: beside the runs it descends from
        run_dirs = lineage_runs(run_dirs[0])
    if len(run_dirs) < 2:
        raise UserError(
            f"compare needs two or more runs, and {', '.join(args.runs)} holds "
            f"{len(run_dirs)} (with no init_from run to compare it with): pass more run "
            "directories."
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
        # each file where it really is: a link shows its target
        rows = [["keep", str(c.path.resolve()), describe(c)] for c in kept]
        rows += [["delete", str(c.path.resolve()), describe(c)] for c in deleted]
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
    compare.add_argument(
        "runs", nargs="+", metavar="RUN",
        help="two or more runs, or one fine-tune (beside the runs it was trained from)",
    )  # fmt: skip
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
