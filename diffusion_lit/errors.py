"""Bad input from the user: what the user can fix, in one line, and how a command reports it."""

import functools
import sys


class UserError(Exception):
    """Something the user can fix (a path, a config value, a prompt). The message names the
    problem and the fix in one line; the command-line tools print it without a traceback."""


def show(x) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


class BadValue(UserError, ValueError):
    """A value its owner does not take. The owner (a constructor, a dataclass) names the value
    by its own argument, ``key``; the command that built the owner from a config group names it
    as the user wrote it (:meth:`under`: ``base_channels`` → ``model.base_channels``)."""

    def __init__(self, key: str, value, expected: str, example: str | None = None):
        self.key, self.value, self.expected, self.example = key, value, expected, example
        super().__init__(
            f"{key}={show(value)} is not {expected}; pass {key}={example or f'<{expected}>'}."
        )

    def under(self, prefix: str) -> "BadValue":
        """The same refusal, its key inside the config group ``prefix``."""
        return BadValue(f"{prefix}.{self.key}", self.value, self.expected, self.example)


def first_line(err: BaseException, limit: int = 160) -> str:
    """An exception's message cut to its first line, for a one-line report."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def report_user_errors(main):
    """Wraps a command's entry point: a ``UserError`` becomes ``error: <message>`` on stderr and
    exit status 2, instead of a traceback. Anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
