"""User-facing errors: one line that names the problem and the fix.

Every mistake a user can make (missing or corrupt file, unknown name, infeasible budget,
mismatched LUT, wrong device) raises `UserError`. The CLI prints it as a single line and exits
non-zero; library callers can catch it like any exception.

The library speaks in the names of its config fields and function parameters, never in command
line flags: an error about a field lists it in `fields` and writes it as `` `field` `` in its
text. `str(err)` shows the field names as written; the CLI renders the same error with each
field replaced by the flag that sets it (`UserError.render`).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterable

_FIELD = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class UserError(Exception):
    """A problem with the user's input, with the fix to apply.

    `str(err)` is the one line the CLI prints: "<problem>; <fix>". `fields` names the config
    fields (or parameters) the problem is about; the text quotes each as `` `name` ``.
    """

    def __init__(self, problem: str, fix: str | None = None, fields: Iterable[str] = ()) -> None:
        if problem.startswith(f"Caught {type(self).__name__} ") and "\nOriginal Traceback" in problem:
            # torch's DataLoader re-raises a worker's error as exc_type("Caught ... Original Traceback ..."):
            # keep the worker's own one line (the traceback's last), not a traceback on the user's screen
            problem = problem.rstrip().splitlines()[-1].split(f"{type(self).__name__}: ", 1)[-1]
        self.problem = problem
        self.fix = fix
        self.fields = tuple(fields)
        super().__init__(self.render())

    @property
    def field(self) -> str | None:
        """The first (main) field the error concerns, or None."""
        return self.fields[0] if self.fields else None

    def render(self, name: Callable[[str], str] | None = None) -> str:
        """The one-line message, with each quoted field `f` written as `name(f)` (default: `f` in backticks)."""

        def spell(match: re.Match[str]) -> str:
            field = match.group(1)
            if name is None or field not in self.fields:
                return match.group(0)
            return name(field)

        text = f"{self.problem}; {self.fix}" if self.fix else self.problem
        return _FIELD.sub(spell, text)


class ConfigError(UserError, ValueError):
    """An impossible value of one config field (or a contradiction between fields), raised at construction.

    `ConfigError("sparsity", "`sparsity` 1.5 is not a fraction in [0, 1)", "pass e.g. 0.9")`.
    """

    def __init__(self, field: str | Iterable[str], problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix, (field,) if isinstance(field, str) else field)


class NotAvailableError(UserError):
    """A feature that needs something absent here (TensorRT, a GPU, CUDA in torch)."""


def is_whole(value: object) -> bool:
    """Whether `value` is a whole number: an int or a numpy integer (numbers.Integral), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(field: str, value: object) -> None:
    """A ConfigError naming `field` unless `value` is a real number (a string such as '0.9' is not, nor is True)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(field, f"`{field}` {value!r} is not a number", f"pass a number, e.g. `{field}`=0.5")


def check_fraction(field: str, value: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """`value` if it is a fraction in [0, 1] (open at the ends asked for), else a ConfigError naming `field`.

    The one place fraction-valued config fields are checked (NaN is never a fraction).
    """
    check_number(field, value)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):  # also False for NaN
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(field, f"`{field}` {value:g} is not a fraction in {interval}", "pass e.g. 0.5")
    return value


def check_whole(field: str, value: object, least: int, example: int) -> int:
    """`value` if it is a whole number >= `least` (numpy integers too, never a bool or 2.5), else a ConfigError
    naming `field` and suggesting `example`."""
    if not is_whole(value) or value < least:  # type: ignore[operator]
        raise ConfigError(field, f"`{field}` {value!r} is not a whole number >= {least}", f"pass e.g. {example}")
    return int(value)  # type: ignore[call-overload]


def check_positive(field: str, value: float, *, zero_ok: bool = False) -> float:
    """`value` if it is a finite number > 0 (>= 0 with `zero_ok`), else a ConfigError naming `field`."""
    check_number(field, value)
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        kind = "non-negative" if zero_ok else "positive"
        raise ConfigError(field, f"`{field}` {value:g} is not a {kind} finite number", f"pass a {kind} number")
    return value


def brief(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message for a one-line error, cut at a word with "..." when longer than
    `limit` characters (a library's message cut mid-word reads as garbled); its type's name when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit // 2 else line[:limit]) + "..."
