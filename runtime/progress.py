"""Progress of long work, readable on a terminal and in a log file alike.

On a terminal `progress` is a tqdm bar. Without one (a CI log, `> run.log`, `nohup`), tqdm's
carriage-return redraws would pile up as one endless line, so progress is printed as whole lines
instead: the first step, then at most one line every `LOG_EVERY_S` seconds, then the last.
Every long loop of the project (training epochs, profile calibration, LUT validation, validate) uses
this helper, and `write` prints a result line (an epoch's metrics) whole in either mode.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY_S = 10.0


class LogProgress(Generic[T]):
    """A tqdm-like counter that writes whole lines ("desc: 3/10 step (30%), 12 s") to a log stream."""

    def __init__(self, iterable: Iterable[T] | None, total: int | None, desc: str, unit: str, stream: IO[str],
                 initial: int = 0, every_s: float = LOG_EVERY_S) -> None:
        self.iterable, self.total, self.desc, self.unit, self.stream = iterable, total, desc, unit, stream
        self.n, self.every_s = initial, every_s
        self.started = self.last = time.monotonic()
        self._printed_n = -1
        self._updates = 0
        self.postfix = ""

    def _line(self) -> None:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        self.stream.write(f"{self.desc}: {done} {self.unit}{pct}, {time.monotonic() - self.started:.0f} s{postfix}\n")
        self.stream.flush()
        self._printed_n = self.n
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._updates += 1
        if self._updates == 1 or time.monotonic() - self.last >= self.every_s or (self.total and self.n >= self.total):
            self._line()

    def set_postfix_str(self, postfix: str) -> None:
        """Text shown after the count (tqdm's postfix), on the next line written."""
        self.postfix = postfix

    def close(self) -> None:
        if self._printed_n != self.n:
            self._line()

    def __enter__(self) -> LogProgress[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update()
        self.close()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             enabled: bool = True, initial: int = 0, stream: IO[str] | None = None) -> Any:
    """A tqdm bar on a terminal, whole log lines otherwise, nothing when not `enabled`; iterable or `update()`d."""
    out = stream or sys.stderr
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if out.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=out, initial=initial, smoothing=0.05, leave=False)
    return LogProgress(iterable, total, desc, unit, out, initial)


def write(line: str, stream: IO[str] | None = None) -> None:
    """Print `line` whole (default: to stdout): above a live bar on a terminal, as a plain line in a log."""
    tqdm.write(line, file=stream or sys.stdout)
