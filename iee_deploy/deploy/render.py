"""Small renderers shared by the reports: markdown and HTML tables and numbers.

`environment` is `runtime.machine.machine_info` (the one machine description), under the name the
reports use.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from runtime.machine import machine_info as environment

__all__ = ["environment", "fmt", "html_table", "markdown_table"]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with `digits` decimals (scientific when tiny or huge), None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.2e}"  # small errors and huge counts stay readable
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells formatted by `fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
