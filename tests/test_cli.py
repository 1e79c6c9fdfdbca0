import re
import tokenize
from pathlib import Path

import click
import pytest
from conftest import ROOT, assert_user_error, run_cli, run_cli_here

from iee_deploy.io import write_json, write_text


def test_help_lists_pipeline_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("profile", "train", "build-engine", "validate", "demo", "validate-lut", "graph", "report"):
        assert command in result.stdout


TRAIN_UNITS = {
    "latency_ms": "ms", "latency_ratio": "fraction", "sparsity": "fraction", "omega0": "fraction", "update_end": "fraction",
    "gmp_start": "fraction", "descent": "share", "epochs": "epochs", "warmup_epochs": "epochs", "delta_t": "steps",
    "hjq": "steps", "checkpoint_every": "steps", "resolution": "pixels", "batch_size": "images",
}
"""train option -> the unit its help must state."""


def test_train_help_states_each_options_unit():
    from iee_deploy.cli.train import train

    helps = {p.name: p.help or "" for p in train.params if isinstance(p, click.Option)}
    missing = {name: unit for name, unit in TRAIN_UNITS.items() if unit not in helps[name].lower()}
    assert not missing, missing
    out = run_cli("train", "--help").stdout  # and the rendered help shows the click ranges
    assert "--latency-ratio" in out and "0<x<=1" in out


def test_user_errors_are_one_line():
    assert_user_error(run_cli("train", "--dataset", "imagefolder", "--data-dir", "/nonexistent"), "/nonexistent", "--data-dir")
    assert_user_error(run_cli_here("train", "--model", "resnet5"), "unknown model 'resnet5'")
    assert_user_error(run_cli_here("train", "--dataset", "mnist-foo"), "unknown dataset 'mnist-foo'")
    assert_user_error(run_cli_here("train", "--nm", "2-4"), "--nm")


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_text(target, object())  # type: ignore[arg-type]  # fails mid-write
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        written = write_text(tmp_path / "lut.csv", "x\n")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644  # mkstemp alone would leave 0600


def test_lazy_command_table_matches_the_command_modules():
    import importlib
    import pkgutil

    import iee_deploy.cli as cli

    declared = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"iee_deploy.cli.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            declared[command.name] = info.name
    assert declared == {name: module for name, (module, _) in cli.LAZY_COMMANDS.items()}


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
FOREIGN_FLAGS = {"--nproc_per_node", "--standalone", "--nnodes"}
"""Flags of other tools (torchrun) that library docs may quote; they are not iee-deploy's."""


def library_flag_strings(root: Path) -> list[str]:
    """'path:line: flag' for every command-line flag in a string literal (docstrings included) of the library.

    Scanned: profiler/, solvers/ and iee_deploy/ except iee_deploy/cli/. The library names config
    fields; only the CLI spells flags, so an error, warning, log line or docstring that a library
    caller sees never names a flag. Comments are not scanned: no user or caller ever reads them.
    """
    hits = []
    for top in ("profiler", "solvers", "iee_deploy"):
        for path in sorted((root / top).rglob("*.py")):
            if path.is_relative_to(root / "iee_deploy" / "cli"):
                continue
            with tokenize.open(path) as handle:
                for token in tokenize.generate_tokens(handle.readline):
                    if token.type != tokenize.STRING:
                        continue
                    for offset, line in enumerate(token.string.splitlines()):
                        for flag in FLAG.findall(line):
                            if flag not in FOREIGN_FLAGS:
                                hits.append(f"{path.relative_to(root)}:{token.start[0] + offset}: {flag}")
    return hits


def test_no_cli_flag_outside_the_cli_package():
    hits = library_flag_strings(ROOT)
    assert not hits, f"{len(hits)} CLI flag strings outside iee_deploy/cli/ (name the config field instead):\n" + \
        "\n".join(hits)


def test_the_flag_scan_finds_flags_in_strings_and_docstrings_only(tmp_path):
    package = tmp_path / "iee_deploy" / "sparse"
    package.mkdir(parents=True)
    (tmp_path / "iee_deploy" / "cli").mkdir()
    (tmp_path / "iee_deploy" / "cli" / "ok.py").write_text('X = "--lr"\n')
    (package / "bad.py").write_text('"""Doc naming --model."""\n# a comment with --lr is fine\n'
                                    'def f():\n    raise ValueError(\n        "pass --sparsity 0.9"\n    )\n'
                                    'CMD = "torchrun --nproc_per_node 2"\nA = "x--y"\n')
    assert library_flag_strings(tmp_path) == ["iee_deploy/sparse/bad.py:1: --model", "iee_deploy/sparse/bad.py:5: --sparsity"]
