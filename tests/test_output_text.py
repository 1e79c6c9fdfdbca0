"""Words and figures of a run's outputs: counts in the right number, arithmetic that is true, no one-point curves."""

from iee_deploy.methods.schedule import iee_period
from iee_deploy.runs import RunFolder
from iee_deploy.train.summary import plot_curves, plural, structure_stats, summary_markdown


def summary(updates: int) -> dict:
    """The smallest summary.json summary_markdown renders: an IEE run with `updates` structure updates."""
    return {
        "method": "iee", "model": "resnet20", "dataset": "digits", "resolution": 8, "epochs": 1, "steps": 20,
        "global_batch": 16, "val_acc": 0.5, "best_val_acc": 0.5, "seconds": 1.0,
        "sparsity": {"target": 0.9, "achieved": 0.9, "distribution": "erk", "nm": None, "layers": {}},
        "flops": {"dense_forward": 1e6, "sparse_forward": 1e5, "train_total": 1e9, "train_relative": 0.2,
                  "appendix_relative": None},
        "structure": structure_stats([]),
        "settings": {"h": 1, "j": 1, "q": 1, "updates": updates, "period_reason": iee_period(8, 0.75).reason},
    }


def test_counts_take_the_right_number():
    assert plural(1, "update") == "1 update" and plural(0, "update") == "0 updates" and plural(4, "update") == "4 updates"
    assert "(1 update):" in summary_markdown(summary(1)) and "(1 updates)" not in summary_markdown(summary(1))
    assert "(3 updates):" in summary_markdown(summary(3))


def test_short_run_period_states_true_arithmetic():
    # window 6: 6 // 4 = 1 step is too short for H, J and Q, so the period is the 3-step minimum
    p = iee_period(8, 0.75)
    assert p.hjq == (1, 1, 1)
    assert "6 // 4 = 3" not in p.reason and "3 steps, the shortest that holds H, J and Q (6 // 4 = 1)" in p.reason
    # a long enough window states its division as it is: 232 // 4 = 58
    assert "232 // 4 = 58 steps" in iee_period(310, 0.75).reason


def test_curves_need_two_evaluations(tmp_path):
    run = RunFolder(tmp_path)
    record = {"step": 9, "train_loss": 2.0, "val_loss": 2.1, "train_acc": 0.2, "val_acc": 0.25}
    assert not plot_curves([record], run) and not (tmp_path / run.CURVES).exists()  # a one-epoch run: no figure
    assert plot_curves([record, {**record, "step": 19}], run) and (tmp_path / run.CURVES).stat().st_size > 0


def test_brief_keeps_a_librarys_message_to_one_line_cut_at_a_word():
    from iee_deploy.errors import brief

    assert brief(RuntimeError("short")) == "short" and brief(ValueError("")) == "ValueError"
    assert brief(RuntimeError("first line\nsecond line")) == "first line"
    message = RuntimeError("Weights only load failed. This file can still be loaded, to do so you have two options")
    assert brief(message, 60) == "Weights only load failed. This file can still be loaded, to..."
    assert brief(RuntimeError("x" * 50), 20) == "x" * 20 + "..."  # one long word: cut where it must


def test_a_bad_option_value_reads_as_one_sentence():
    from click.testing import CliRunner

    from iee_deploy.cli import main

    result = CliRunner().invoke(main, ["train", "--distribution", "ERK"], prog_name="iee-deploy")
    line = result.stderr.strip()
    assert result.exit_code == 2 and "'global'; see `iee-deploy train --help`" in line and ".;" not in line
