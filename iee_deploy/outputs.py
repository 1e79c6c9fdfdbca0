"""Where a command may write a report of its own (the JSON of its figures): anywhere writable, but never over a file of
a run, an engine or a LUT, which later commands read back. A graph report written over a LUT's metadata loses the
table; over a run's config.json, the run."""

from __future__ import annotations

import os
from pathlib import Path

from iee_deploy.errors import UserError
from iee_deploy.io import check_writable
from iee_deploy.runs import RUN_INFO, RunFolder
from profiler.lut import meta_path


def owner_of(path: Path) -> str | None:
    """What existing file `path` belongs to ("the LUT 'x.csv'", "the run 'dir'", "the engine 'dir'"), else None."""
    from iee_deploy.deploy.build import ENGINE_REPORT  # lazily: the engine builder is a heavy import

    if not path.is_file():
        return None
    if path.suffix == ".json" and path.with_suffix(".csv").is_file():
        return f"the LUT '{path.with_suffix('.csv')}'"
    if path.suffix == ".csv" and meta_path(path).is_file():
        return f"the LUT '{path}'"
    folder = path.parent
    if (folder / RUN_INFO).is_file() or (folder / RunFolder.CONFIG).is_file():
        return f"the run '{folder}'"
    if (folder / ENGINE_REPORT).is_file():
        return f"the engine '{folder}'"
    return None


def check_report_output(path: str | os.PathLike[str], field: str) -> Path:
    """`check_writable(path)`, refusing a file of a run, an engine or a LUT (`owner_of`) in one line."""
    target = check_writable(path, field)
    owner = owner_of(target)
    if owner is not None:
        raise UserError(f"`{field}` '{path}' is a file of {owner}: the report would replace it",
                        "write the report to another file, e.g. report.json", fields=(field,))
    return target
