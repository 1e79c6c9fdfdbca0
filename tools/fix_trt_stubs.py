"""Mend the installed `tensorrt-stubs` (10.13) so that mypy can parse and use them.

The published stubs have three defects (see ../shared/notes/tensorrt.md): parameters named
`in` (a Python keyword), one parameter without a default after defaulted ones
(`add_scale_nd(..., channel_axis: int)`), and no `py.typed` marker. This script fixes the
installed copy in place; it is idempotent and does nothing when the stubs are absent.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path


def _site_dir(package: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry) / package
        if candidate.is_dir():
            return candidate
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def mend(text: str) -> str:
    """Return stub text with keyword parameter names and the defaultless trailing parameter fixed."""
    text = re.sub(r"(?<=[(,\s])in(?=\s*:\s*[A-Za-z\[])", "in_", text)
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    return text


def main() -> int:
    fixed = 0
    for package in ("tensorrt_bindings", "tensorrt"):
        folder = _site_dir(package)
        if folder is None:
            continue
        for stub in folder.glob("*.pyi"):
            old = stub.read_text()
            new = mend(old)
            if new != old:
                stub.write_text(new)
                fixed += 1
        (folder / "py.typed").touch()
    print(f"tensorrt-stubs: mended {fixed} file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
