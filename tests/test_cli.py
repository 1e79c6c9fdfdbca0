import pytest
from conftest import assert_user_error, run_cli

from iee_deploy.io import write_json, write_text


def test_help_lists_pipeline_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("profile", "train", "build-engine", "validate", "demo", "validate-lut", "graph", "report"):
        assert command in result.stdout


def test_train_help_states_units():
    out = run_cli("train", "--help").stdout
    for unit in ("ms", "fraction", "0-1", "epochs"):
        assert unit in out


def test_user_errors_are_one_line():
    assert_user_error(run_cli("train", "--dataset", "imagefolder", "--data-dir", "/nonexistent"), "/nonexistent", "--data-dir")
    assert_user_error(run_cli("train", "--model", "resnet5"), "unknown model 'resnet5'")
    assert_user_error(run_cli("train", "--dataset", "mnist-foo"), "unknown dataset 'mnist-foo'")
    assert_user_error(run_cli("train", "--nm", "2-4"), "--nm")


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
