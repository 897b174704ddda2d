"""Bad input from the user, and how the command-line tools report it."""

import functools
import sys


class UserError(Exception):
    """Something the user can fix (a path, a config value, a prompt). The message names the
    problem and the fix in one line; the command-line tools print it without a traceback."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """An exception's message cut to its first line, for a one-line report."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def report_user_errors(main):
    """Wraps a CLI entry point: a ``UserError`` becomes ``error: <message>`` on stderr and exit
    status 2, instead of a traceback. Anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
