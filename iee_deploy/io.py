"""Crash-safe file writing: write to a temporary file in the same folder, then rename.

A reader never sees a half-written report, LUT, checkpoint or engine, even if the process is
killed mid-write, because `os.replace` is atomic on one file system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    """The permissions `open()` gives a new file under the current umask (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _default_mode())  # a LUT or engine must be readable as any other new file
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[Any]], object], mode: str = "w") -> Path:
    """Open a temporary file with `mode`, let `writer` fill it, then atomically move it to `path`."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        writer(handle)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write `text` to `path`."""
    return atomic_write(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write `data` as indented JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON record as a line and flush it to disk (a log that survives a crash)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically `torch.save` an object (checkpoints, pruned models)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def check_writable(path: str | os.PathLike[str], field: str, folder: bool = False) -> Path:
    """`path` as a Path if a file (or, with `folder`, a folder) can be written there; else a UserError.

    Called before long work starts, so that an unwritable output fails in the first second rather than
    after the work. The check is a real one: a temporary file is created (and removed) in `path`'s
    folder, or in its nearest existing ancestor when folders are still to be made (permissions alone
    do not tell, e.g. for root on /sys). `field` names the parameter in the message.
    """
    from iee_deploy.errors import UserError

    target = Path(path)
    problem = None
    if not os.fspath(path).strip():  # Path("") is the current folder: an unset shell variable would write there
        problem = "is empty"
    elif os.fspath(path).strip() == "-":  # a file called '-', where a user may expect standard output
        problem = "would be a file named '-' (no output is written to standard output)"
    elif folder and target.exists() and not target.is_dir():
        problem = "is a file, not a folder"
    elif not folder and target.is_dir():
        problem = "is a folder, not a file"
    else:
        probe = target if folder else target.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            problem = f"cannot be made: '{probe}' is a file"
        else:
            try:
                fd, tmp = tempfile.mkstemp(prefix=".write-check.", dir=probe)
                os.close(fd)
                os.unlink(tmp)
            except OSError as err:
                problem = f"is not writable ({err.strerror} in '{probe}')"
    if problem is not None:
        raise UserError(f"`{field}` '{os.fspath(path)}' {problem}",
                        f"name the {'folder' if folder else 'file'} to write" if problem.startswith(("is empty", "would be"))
                        else "choose a writable location", fields=(field,))
    return target


@contextlib.contextmanager
def writer_lock(lock: str | os.PathLike[str], what: str, fix: str, fields: tuple[str, ...] = ()) -> Iterator[None]:
    """Hold an exclusive lock on file `lock` while one process writes `what` (a run folder, a LUT).

    A second writer gets a one-line UserError naming the holder and `fix` (quoting `fields`), at once (never two writers
    interleaving rows). The lock is released when the block ends or the process dies; on a clean release
    the lock file is removed, and so are the folders made for it that are still empty (a refused or
    finished run leaves no stale lock, a refused new run no empty folder).
    """
    from iee_deploy.errors import UserError

    path = Path(lock)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{what} is being written by {owner}", fix, fields=fields) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # still the file at `path` (not one a finishing holder has just removed)
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}\n")
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()


def _matches(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON has the type `hint` names (containers checked at their own level)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # a NaN or infinite latency or fraction is no value a run records (json reads NaN, Infinity)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin in (dict, Mapping) or hint is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, hint) if isinstance(hint, type) else True


def field_type_problem(cls: type, data: Mapping[str, Any]) -> str | None:
    """The first field of dataclass `cls` whose value in `data` (read from a JSON file) has another type than
    declared, as words ("num_classes is 'ten'"), or None. A file edited by hand or damaged on disk is then
    refused as corrupt where it is read, instead of failing somewhere later with a raw exception."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data and not _matches(data[f.name], hints[f.name]):
            return f"{f.name} is {str(repr(data[f.name]))[:40]}"
    return None
