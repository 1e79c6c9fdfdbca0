"""The run folder contract: evaluation outside updates, safe loading, one writer, interrupted starts,
time-based checkpoints."""

import json
import os
import shutil
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from conftest import assert_user_error, run_cli

from iee_deploy.cli import main
from iee_deploy.data import build_datasets
from iee_deploy.deploy.run_models import load_run_models
from iee_deploy.errors import UserError
from iee_deploy.methods import SparsityConfig
from iee_deploy.models import build_model, load_checkpoint
from iee_deploy.runs import RunFolder
from iee_deploy.train import TrainConfig, Trainer

SMALL = ("--model", "resnet20", "--resolution", "8", "--subset", "96", "--batch-size", "16", "--no-progress")


def cli_error(*args: str, fragment: str) -> None:
    """The command (run in-process, as `iee-deploy ARGS`) fails with one line naming the problem."""
    result = CliRunner().invoke(main, list(args))
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output and len(lines) == 1, result.output
    assert fragment in lines[0], lines[0]


def tiny(epochs: float = 2, **sparsity) -> TrainConfig:
    return TrainConfig(resolution=8, subset=96, batch_size=16, epochs=epochs,
                       sparsity=SparsityConfig(**({"hjq": (2, 1, 2)} | sparsity)))


@pytest.fixture(scope="module")
def data():
    return build_datasets("digits", resolution=8, subset=160)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("finished")
    Trainer(tiny(), out, data=data, progress_bar=False).fit()
    return out


def test_no_evaluation_between_prune_and_grow(tmp_path, data, one_thread):
    """10 steps an epoch and a period of 7: epochs end inside updates (e.g. step 9 prunes at p = H = 2)."""
    config = TrainConfig(resolution=8, subset=160, batch_size=16, epochs=5,
                         sparsity=SparsityConfig(sparsity=0.8, hjq=(2, 2, 3)))
    Trainer(config, tmp_path, data=data, progress_bar=False).fit()
    run = RunFolder(tmp_path)
    updates, epochs = run.updates(), run.epochs()
    windows = [(p["step"], g["step"]) for p, g in zip(updates[::2], updates[1::2])]
    assert all(p["event"] == "prune" and g["event"] == "grow" for p, g in zip(updates[::2], updates[1::2]))
    target = updates[1]["sparsity"]  # after a Grow, Theta_K is at its budget
    assert target == pytest.approx(0.8, abs=1e-5)
    # an evaluation after step s sees the structure of step s + 1's start minus its events: inside a window
    # when prune_step <= s < grow_step
    assert not [(e["step"], w) for e in epochs for w in windows if w[0] <= e["step"] < w[1]]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5]
    deferred = [e for e in epochs if (e["step"] + 1) % 10 != 0]
    assert deferred, "no epoch ended inside an update: the test would show nothing"
    assert all(e["sparsity"] == target for e in epochs)  # every logged evaluation at the target exactly


def test_malicious_pickles_are_refused_without_running(finished, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the file

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, evil)
    cli_error("train", *SMALL, "--checkpoint", str(evil), "--out", str(tmp_path / "a"), fragment="is corrupt or not a weights-only torch file")
    assert not marker.exists()
    with pytest.raises(UserError, match="weights-only"):
        load_checkpoint(build_model("resnet20", 10, 8), evil)
    for name in ("checkpoint.pt", "final_model.pt"):
        run = tmp_path / name.replace(".", "-")
        shutil.copytree(finished, run)
        shutil.copy(evil, run / name)
        with pytest.raises(UserError, match="weights-only"):
            if name == "checkpoint.pt":
                Trainer(tiny(), run, resume=True, progress_bar=False).fit()
            else:
                load_run_models(run)
        assert not marker.exists()
    cli_error("build-engine", "--run", str(tmp_path / "final_model-pt"), "--out", str(tmp_path / "e"),
              fragment="is corrupt or not a weights-only torch file")
    assert not marker.exists()


def test_checkpoint_of_another_shape_names_the_first_tensor(tmp_path):
    other = tmp_path / "other.pt"
    torch.save(build_model("resnet20", 100, 8).state_dict(), other)
    cli_error("train", *SMALL, "--checkpoint", str(other), "--out", str(tmp_path / "run"),
              fragment="'fc.weight' is (100, 64) in the checkpoint, (10, 64) in the model")


def test_a_second_writer_is_refused(finished):
    with RunFolder(finished).lock():  # the first run, alive
        cli_error("train", *SMALL, "--epochs", "2", "--hjq", "2,1,2", "--out", str(finished), "--resume",
                  fragment=f"run folder '{finished}' is being written by process")
    with RunFolder(finished).lock():  # released again
        pass


def test_a_checkpoint_trained_otherwise_than_config_json_is_refused(finished, tmp_path, data):
    """config.json edited to match a resume's options (or a checkpoint copied from another run): the checkpoint's own
    settings are the ones it trained with, so the resume is refused instead of running on under the other ones."""
    edited = tmp_path / "edited"
    shutil.copytree(finished, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "lr": 1e6}))
    with pytest.raises(UserError, match=r"trained with other settings than config.json holds \(`lr` 0.1, not 1000000.0\)"):
        Trainer(replace(tiny(), lr=1e6), edited, resume=True, data=data, progress_bar=False).fit()


def test_a_run_that_died_at_once_starts_again(tmp_path, data, one_thread):
    """A folder without a checkpoint (killed while setting up) is started afresh; after the first step it resumes."""
    out = tmp_path / "run"
    out.mkdir()
    RunFolder(out).write_config(tiny().to_json())
    (out / "run.json").write_text(json.dumps({"model": "resnet20", "num_classes": 10, "resolution": 8, "dataset": "digits"}))
    Trainer(tiny(), out, data=data, progress_bar=False).fit()
    assert RunFolder(out).read_info().finished

    class Crash(Exception):
        pass

    def crash(step, model, method):
        raise Crash

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        Trainer(tiny(), crashed, data=data, progress_bar=False, on_step_end=crash).fit()
    assert RunFolder(crashed).load_checkpoint()["progress"]["step"] == 0  # the checkpoint written at the start
    Trainer(tiny(), crashed, data=data, progress_bar=False, resume=True).fit()
    a, b = RunFolder(out).load_final_model(), RunFolder(crashed).load_final_model()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_are_also_time_based(tmp_path, data, one_thread):
    seen = []

    def look(step, model, method):
        seen.append(RunFolder(tmp_path).load_checkpoint()["progress"]["step"])

    Trainer(tiny(epochs=1), tmp_path, data=data, progress_bar=False, on_step_end=look, checkpoint_seconds=1e-9).fit()
    assert seen == list(range(len(seen))) and len(seen) > 2  # a checkpoint after every step, not only at epoch ends


def test_writer_lock_refuses_a_second_writer_and_leaves_nothing_behind(tmp_path):
    """A second writer is refused in one line naming the holder; on release the lock file goes, and so do
    the folders made for it that are still empty (a refused run leaves no folder behind)."""
    from iee_deploy.io import writer_lock

    lock = tmp_path / "new" / "deeper" / ".lock"
    with writer_lock(lock, "run folder 'x'", "wait"):
        assert lock.read_text() == f"process {os.getpid()}\n"
        with pytest.raises(UserError, match=f"run folder 'x' is being written by process {os.getpid()}; wait"), \
                writer_lock(lock, "run folder 'x'", "wait"):
            pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with writer_lock(tmp_path / "kept" / ".lock", "it", "wait"):
        (tmp_path / "kept" / "run.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["run.json"]


def test_two_profiles_of_one_lut_do_not_interleave(tmp_path):
    """The second `profile` on the same --out is refused at once while the first holds the LUT."""
    from iee_deploy.io import writer_lock

    out = tmp_path / "cpu.csv"
    with writer_lock(tmp_path / "cpu.csv.lock", "the LUT", "wait"):
        result = run_cli("profile", "--target", "cpu", "--model", "resnet20", "--resolution", "8", "--out", str(out))
    assert_user_error(result, f"the LUT '{out}' is being written by process", "--resume")
    assert not out.exists()


@pytest.mark.parametrize("content", [b'{"conv1": [1, 2', b"\xff\xfe\x00binary", b"[1, 2]"], ids=["truncated", "binary", "a-list"])
def test_a_damaged_run_file_is_corrupt_not_missing(tmp_path, content):
    """channels.json (or any run file read strictly) that is there but damaged says "corrupt", never
    "training has not finished"; absent it is None."""
    run = RunFolder(tmp_path)
    assert run.read_json(run.CHANNELS, strict=True) is None
    (tmp_path / run.CHANNELS).write_bytes(content)
    assert run.read_json(run.CHANNELS) is None
    with pytest.raises(UserError, match=r"channels.json' is corrupt"):
        run.read_json(run.CHANNELS, strict=True)


@pytest.mark.parametrize("budget", ["NaN", "Infinity"])
def test_a_non_finite_number_in_run_json_is_corrupt(tmp_path, budget):
    """A NaN budget edited into run.json was read, and `validate` failed later with "limit nan"."""
    (tmp_path / "run.json").write_text('{"model": "resnet20", "num_classes": 10, "resolution": 8, "dataset": "digits", '
                                       f'"budget_ms": {budget}}}')
    with pytest.raises(UserError, match=rf"run.json' is corrupt \(budget_ms is {budget.lower()[:3]}"):
        RunFolder(tmp_path).read_info()


def test_a_file_that_is_no_torch_file_is_not_a_checkpoint(tmp_path):
    """A LUT's .json passed as a checkpoint quoted torch's long "Weights only load failed. In PyTorch 2.6" text."""
    from iee_deploy.runs import load_weights

    for name, content in (("lut.json", b'{"model": "resnet20"}'), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=rf"'.*{name}' is not a torch checkpoint \(torch.load cannot read it\); pass a "
                                            r"\.pt/\.pth file saved with torch.save$"):
            load_weights(tmp_path / name)
    torn = tmp_path / "torn.pt"
    torch.save({"w": torch.zeros(64)}, torn)
    torn.write_bytes(torn.read_bytes()[:200])  # a damaged checkpoint is still called corrupt
    with pytest.raises(UserError, match="is corrupt or not a weights-only torch file"):
        load_weights(torn)
