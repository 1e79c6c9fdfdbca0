"""Progress in a log: whole lines (no carriage returns), the first step, then at most one line per interval, the last."""

from __future__ import annotations

import io

from runtime.progress import LogProgress, progress


def test_log_progress_writes_whole_lines():
    stream = io.StringIO()  # not a TTY
    items = list(progress(range(5), total=5, desc="calibration", unit="net", stream=stream))
    assert items == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and lines[0].startswith("calibration: 1/5 net (20%)")
    assert lines[-1].startswith("calibration: 5/5 net (100%)") and len(lines) == 2  # first and last, interval 10 s


def test_log_progress_counts_updates_from_an_initial_value():
    stream = io.StringIO()
    with LogProgress(None, 10, "profile", "row", stream, initial=6, every_s=0.0) as bar:
        bar.update()
        bar.update(3)
    assert stream.getvalue().splitlines()[0].startswith("profile: 7/10 row (70%)")
    assert stream.getvalue().splitlines()[-1].startswith("profile: 10/10 row (100%)")


def test_disabled_progress_prints_nothing(capsys):
    with progress(total=3, desc="x", enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
