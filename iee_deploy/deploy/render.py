"""Small renderers shared by the deployment reports: markdown tables, numbers, and the environment."""

from __future__ import annotations

import datetime
import html
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

VERSIONED = ("torch", "onnx", "onnxruntime", "tensorrt")


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
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def environment() -> dict[str, str]:
    """Machine, CPU count, date and library versions, recorded beside every measurement."""
    info = {
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()}, {platform.processor() or 'cpu'})",
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for package in VERSIONED:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return info
