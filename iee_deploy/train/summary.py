"""The run's results: summary.json (machine-readable), summary.md (human-readable) and curves.png."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iee_deploy.io import atomic_path
from iee_deploy.runs import RunFolder


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def structure_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Update counts, survival rates and IoUs of the update records (Section 4.4)."""
    prunes = [r for r in records if r.get("type") == "update" and r["event"] == "prune"]
    grows = [r for r in records if r.get("type") == "update" and r["event"] == "grow"]
    survival = [r["survival"] for r in prunes if r.get("survival") is not None]
    return {
        "prunes": len(prunes),
        "grows": len(grows),
        "survival": survival,
        "mean_survival": _mean(survival),
        "iou_after_prune": [r["iou"] for r in prunes if r.get("iou") is not None],
        "iou_after_grow": [r["iou"] for r in grows if r.get("iou") is not None],
        "latency_trajectory": [{"step": r["step"], "event": r["event"], "predicted_latency_ms": r["predicted_latency_ms"]}
                               for r in records if r.get("type") == "update" and r.get("predicted_latency_ms") is not None],
    }


def plural(count: int, noun: str) -> str:
    """'1 update', '2 updates': a count with its noun in the right number."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def dense_reading(measured: dict[str, Any]) -> str:
    """The sentence on the dense reading a measured budget's ratios are over ("" for a record from a checkpoint of a
    release that did not keep it)."""
    if "dense_ms" not in measured:
        return ""
    table = measured.get("table_dense_ms")
    return (" Each structure counts at its lowest reading over passes spread in time, and every ratio is over the dense "
            f"network's lowest reading, {measured['dense_ms']:.4g} ms"
            + ("." if table is None else f" (the LUT's own timing of it: {table:.4g} ms)."))


def summary_markdown(s: dict[str, Any]) -> str:
    st, fl, sp = s["structure"], s["flops"], s["sparsity"]
    score = s.get("score", "val_acc")  # the task's validation figure (top-1; a detector's mAP@0.5)
    last_iou_p = st["iou_after_prune"][-1] if st["iou_after_prune"] else None
    last_iou_g = st["iou_after_grow"][-1] if st["iou_after_grow"] else None
    rows = [
        ("method", s["method"]),
        ("model / dataset", f"{s['model']} / {s['dataset']} ({s['resolution']} px)"),
        ("epochs / steps / global batch", f"{s['epochs']:g} / {s['steps']} / {s['global_batch']}"),
        (f"{s.get('score_label', 'top-1')} (final / best)", f"{_pct(s[score])} / {_pct(s['best_' + score])}"),
        ("sparsity (target / achieved)", f"{_pct(sp['target'])} / {_pct(sp['achieved'])} ({sp['distribution']}"
                                         + (f", N:M {sp['nm']}" if sp["nm"] else "") + ")")
        if sp["target"] is not None else ("weight sparsity (achieved)", _pct(sp["achieved"])),
        ("forward FLOPs (dense / sparse)", f"{fl['dense_forward']:.4g} / {fl['sparse_forward']:.4g}"),
        ("training FLOPs (measured, x dense training)", f"{fl['train_total']:.4g} (x{fl['train_relative']:.3f})"),
        ("training FLOPs (appendix 3 formula, x dense)",
         "-" if fl["appendix_relative"] is None else f"x{fl['appendix_relative']:.3f}"),
        ("structure updates (prune / grow)", f"{st['prunes']} / {st['grows']}"),
        ("grown-unit survival rate (mean)", _pct(st["mean_survival"])),
        ("IoU of Theta_K (last, after prune / after grow)", f"{_pct(last_iou_p)} / {_pct(last_iou_g)}"),
        ("wall time", f"{s['seconds']:.1f} s"),
    ]
    settings = s.get("settings", {})
    for phase in [settings, *settings.get("phases", [])]:  # IEE's period, and why (set, the paper's, or the short-run rule)
        if "period_reason" in phase:
            rows.append(("IEE period H, J, Q", f"{phase['h']}, {phase['j']}, {phase['q']} ({plural(phase['updates'], 'update')}): "
                                               f"{phase['period_reason']}"))
    lat = s.get("latency")
    if lat:
        rows[4:4] = [
            ("latency target / LUT", f"{lat['target']} (batch {lat['batch']}, {lat['precision']}) / {lat['lut']}"),
            ("predicted latency (final / budget / dense)",
             f"{lat['predicted_ms']:.4g} / {lat['budget_ms']:.4g} / {lat['dense_ms']:.4g} ms "
             f"(x{lat['ratio_to_dense']:.3f} of dense, {'within' if lat['within_budget'] else 'OVER'} "
             + ("budget)" if lat.get("measured_budget") is None else
                f"the aim Psi {lat['aim_ms']:.4g} ms that measured nearest the budget)")),
            ("start", f"{lat['start']} (initial predicted latency {lat['initial_ms']:.4g} ms)"),
        ]
    lines = [f"# Training run: {s['method']}", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if lat:
        lines += ["", "## Channels kept per group", "", "| group | kept / size |", "|---|---|"]
        lines += [f"| {g} | {v['kept']} / {v['size']} |" for g, v in lat["groups"].items()]
        measured = lat.get("measured_budget")
        if measured:
            lines += ["", "## Measured budget", "",
                      f"Psi re-aimed until the pruned network, timed on this machine beside the dense one, measured "
                      f"within {100 * measured['tolerance']:g}% of the budget's {measured['target_ratio']:.4f}x dense: "
                      f"{'within' if measured['within'] else 'NOT within'} at {measured['measured_ratio']:.4f}x "
                      f"(budget {lat['budget_ms']:.4g} ms, kept aim {lat['aim_ms']:.4g} ms, as the LUT predicts them)."
                      + dense_reading(measured), "",
                      "| try | aim (x dense, predicted) | measured (x dense) | dense ms | pruned ms |", "|---|---|---|---|---|"]
            lines += [f"| {i} | {t['aim']:.4f} | {t['measured_ratio']:.4f} | {t['dense_ms']:.4g} | {t['network_ms']:.4g} |"
                      for i, t in enumerate(measured["tries"], 1)]
        if st["latency_trajectory"]:
            lines += ["", "## Predicted latency after each update", "", "| step | event | predicted ms |", "|---|---|---|"]
            lines += [f"| {r['step']} | {r['event']} | {r['predicted_latency_ms']:.4g} |" for r in st["latency_trajectory"]]
    lines += ["", "## Per-layer sparsity", "", "| layer | sparsity |", "|---|---|"]
    lines += [f"| {name} | {_pct(v)} |" for name, v in sp["layers"].items()]
    return "\n".join(lines) + "\n"


def write_summary(run: RunFolder, summary: dict[str, Any]) -> None:
    run.write_json(run.SUMMARY, summary)
    run.write_text(run.SUMMARY_MD, summary_markdown(summary))


MIN_CURVE_POINTS = 2
"""Evaluations needed before curves.png is drawn: one point per line is no curve (a one-epoch run has none)."""


def plot_curves(epochs: Sequence[dict[str, Any]], run: RunFolder, score: str = "val_acc", label: str = "top-1") -> bool:
    """curves.png: training and validation loss and the task's score (`score`, e.g. top-1 accuracy, `label` in
    words) at each evaluation (x: training step); figures a task does not record (a detector's validation loss,
    its training accuracy) are left out.

    Drawn from the second evaluation on; returns whether it was drawn (summary.md has the single figures)."""
    if len(epochs) < MIN_CURVE_POINTS:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] + 1 for r in epochs]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(steps, [r["train_loss"] for r in epochs], "o-", label="training (epoch mean)")
    if "val_loss" in epochs[0]:
        loss_ax.plot(steps, [r["val_loss"] for r in epochs], "s-", label="validation")
    if "train_acc" in epochs[0]:
        acc_ax.plot(steps, [100 * r["train_acc"] for r in epochs], "o-", label="training (epoch mean)")
    acc_ax.plot(steps, [100 * r[score] for r in epochs], "s-", label="validation")
    loss_ax.set(xlabel="training step", ylabel="loss", title="Loss")
    acc_ax.set(xlabel="training step", ylabel=f"{label} (%)", ylim=(0, 100), title=label)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    with atomic_path(run / run.CURVES) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
