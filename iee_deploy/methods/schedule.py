"""Every schedule of the sparse training methods, as pure functions of the step.

- `iee_step`: Algorithm 1's stage schedule (which IEE stage a step is in, which update starts it).
- `update_fraction`: the update budget Omega_t as a fraction of the active budget (cosine or
  exponential decay); RigL's and SET's drop fraction is the same function.
- `update_window`: the steps in which structure updates happen (the first `update_end` of training).
- `resolve_period`: the update period that fits a run (the paper's, or shorter for short runs).
- `iee_period`: IEE's H, J, Q for a run of a given length (the paper's, or the short-run rule), with the reason.
- `dst_update_due`: when RigL / SET update.
- `gmp_sparsity`, `gmp_update_due`: Zhu & Gupta's gradual magnitude pruning schedule.
- `halp_target`, `halp_prune_due`: HALP's exponential latency schedule and its prune steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum


class Stage(str, Enum):
    """What a training step trains (Section 3.1)."""

    IMPORTANCE_ESTIMATION = "importance_estimation"  # train Theta_K for H iterations, gather I(Theta_K)
    ACCURACY_IMPROVEMENT = "accuracy_improvement"  # train the pruned Theta_K for J iterations
    REACTIVATE_EXPLORE = "reactivate_explore"  # train Theta_P (Theta_K frozen) for Q iterations, gather I(Theta_P)
    FINAL = "final"  # after the last IEE update: train Theta_K to the end


class Event(str, Enum):
    """A structure change applied at the start of a step, before its forward pass."""

    PRUNE = "prune"  # Eq. 2: Theta_K loses its Omega_t least important units
    REACTIVATE = "reactivate"  # Theta_P is switched on with its MRU values
    GROW = "grow"  # Eq. 4: Theta_K gains the Omega_t most important units of Theta_P


@dataclass(frozen=True)
class IEEStep:
    stage: Stage
    events: tuple[Event, ...]  # in the order they apply
    t: int  # the IEE update step (0 .. T-1) this step belongs to; T once updates are over


def iee_step(step: int, h: int, j: int, q: int, updates: int) -> IEEStep:
    """Stage and events of 0-based training `step` under Algorithm 1 with T = `updates`.

    With period dT = H + J + Q and position p = step mod dT, update t = step // dT:
      p = 0 (t >= 1): Grow of update t-1 (Algorithm 1, line 9: i mod dT = 0)
      p < H:          Importance Estimation
      p = H:          Prune (line 4: (i + J + Q) mod dT = 0)
      H <= p < H+J:   Accuracy Improvement
      p = H+J:        Reactivate (line 7: (i + Q) mod dT = 0; with J = 0 right after Prune)
      p >= H+J:       Reactivate & Explore
    Algorithm 1's iteration i is `step` here; its first iteration i = 1 leaves the first
    Importance Estimation one step short, and step 0 has no Grow since nothing was explored.
    An update t runs only while t < T, so the last Grow is at step T * dT.
    """
    if h < 1 or j < 0 or q < 1:
        raise ValueError(f"IEE needs H >= 1, J >= 0, Q >= 1; got {h}, {j}, {q}")
    period = h + j + q
    t, p = divmod(step, period)
    events: tuple[Event, ...] = (Event.GROW,) if p == 0 and 1 <= t <= updates else ()
    if t >= updates:
        return IEEStep(Stage.FINAL, events, updates)
    if p < h:
        return IEEStep(Stage.IMPORTANCE_ESTIMATION, events, t)
    if p == h:
        events += (Event.PRUNE,)
    if p < h + j:
        return IEEStep(Stage.ACCURACY_IMPROVEMENT, events, t)
    if p == h + j:
        events += (Event.REACTIVATE,)
    return IEEStep(Stage.REACTIVATE_EXPLORE, events, t)


def update_window(total_steps: int, update_end: float) -> int:
    """Steps in the structure-update window: the first `update_end` of `total_steps`, floored.

    The 1e-9 absorbs float error, so that e.g. 0.75 * 400 counts as 300 steps, never 299.
    """
    return int(math.floor(update_end * total_steps + 1e-9))


def iee_updates(total_steps: int, period: int, update_end: float) -> int:
    """T: how many whole IEE periods fit in the first `update_end` of training."""
    return update_window(total_steps, update_end) // period


class Decay(StrEnum):
    COSINE = "cosine"
    EXPONENTIAL = "exponential"


UNSTRUCTURED_UPDATE_END = 0.75
"""Unstructured updates stop at 3/4 of training (RigL's T_end; the paper's appendix 3)."""

STRUCTURED_UPDATE_END = 5 / 130
"""The paper's structured IEE stops updating at epoch 5 of 130 (appendix 3), following HALP's exponential scheduler."""


def fraction_words(fraction: float) -> str:
    """A fraction of training as people read it: "5/130" for the paper's structured end, "3/4", else "0.3"."""
    if fraction == STRUCTURED_UPDATE_END:
        return "5/130"
    from fractions import Fraction

    simple = Fraction(fraction).limit_denominator(20)
    if abs(float(simple) - fraction) < 1e-12 and simple.denominator > 1 and simple.denominator not in (2, 5, 10):
        return f"{simple.numerator}/{simple.denominator}"
    return f"{fraction:g}"

EXPONENTIAL_FINAL = 0.01
"""Exponential decay ends at this share of Omega_0 (a geometric interpolation, as FORCE/HALP)."""


def update_fraction(progress: float, omega0: float = 0.3, decay: Decay | str = Decay.COSINE) -> float:
    """Omega_t / Psi at `progress` = t / T in [0, 1) of the update window.

    cosine (default): omega0 * (1 + cos(pi * progress)) / 2, RigL's drop-fraction schedule. The
    paper's Omega_0 = 0.3 Psi and its end at 3/4 of training are RigL's alpha = 0.3 and
    T_end = 3/4, and IEE with J = Q = 1 "reduces to RigL" (Table 4) only with RigL's budget
    schedule, so the default makes IEE and RigL differ only in how they choose what to move.
    exponential: omega0 * 0.01 ** progress, the geometric schedule of the scheduler the paper
    cites ([6], FORCE), also used by HALP; it moves more late in training than cosine.
    """
    if Decay(decay) is Decay.COSINE:
        return omega0 * (1 + math.cos(math.pi * progress)) / 2
    return omega0 * EXPONENTIAL_FINAL ** progress


MIN_UPDATES = 4
"""Short runs shorten the update period until at least this many updates fit the update window."""


def resolve_period(paper_period: int, total_steps: int, update_end: float, min_updates: int = MIN_UPDATES) -> int:
    """The paper's update period, or a shorter one so that >= `min_updates` updates fit a short run (>= 1 step)."""
    return max(1, min(paper_period, update_window(total_steps, update_end) // min_updates))


PAPER_HJQ = (150, 150, 150)
"""The paper's IEE period (Table 4's best; 450 iterations, 3x RigL's dT = 100)."""

SHORT_RUN_EXPLORE_SHARE = 1 / 10
"""Share of a shortened IEE period spent in Reactivate & Explore (Q) and, equally, in Accuracy Improvement (J).

From benchmarks/results/hjq_sweep.md (310-step runs, 3 paired seeds): 1/10 had the best mean of the
splits tried (+0.75 points over the equal split 1/3, 95% CI [-1.11, +2.61]; 1/6: -0.58) at the
lowest training cost, and freezes Theta_K for 7.5% of the update window instead of 25%. The
splits are not resolved from each other; every one trailed static by 2.4-3.8 points."""


@dataclass(frozen=True)
class IEEPeriod:
    """IEE's H, J, Q for a run, and why they were chosen (written into the run summary)."""

    h: int
    j: int
    q: int
    reason: str

    @property
    def hjq(self) -> tuple[int, int, int]:
        return self.h, self.j, self.q


def iee_period(total_steps: int, update_end: float, min_updates: int = MIN_UPDATES,
               explore_share: float = SHORT_RUN_EXPLORE_SHARE) -> IEEPeriod:
    """IEE's H, J, Q for a run of `total_steps` whose updates end after `update_end` of training.

    A pure function of the run's length. The paper's H = J = Q = 150 when `min_updates` such
    periods fit the update window. Otherwise the period is the longest one with `min_updates`
    updates (a long period lets the explored weights move, since they train for Q steps, and
    gives Theta_K long exploitation stages), split as Q = J = round(`explore_share` x period)
    (at least 1) and H = the rest: a small frozen share keeps Theta_K from starving.
    """
    if min_updates < 1 or not 0 < explore_share <= 1 / 3:
        raise ValueError(f"min_updates must be >= 1 and explore_share in (0, 1/3]; got {min_updates}, {explore_share}")
    window = update_window(total_steps, update_end)
    paper = sum(PAPER_HJQ)
    if window // paper >= min_updates:
        return IEEPeriod(*PAPER_HJQ, reason=f"the paper's period (450 steps) fits {window // paper} >= {min_updates} "
                                            f"updates in the {window}-step update window")
    period = max(3, window // min_updates)
    q = max(1, math.floor(explore_share * period + 0.5))
    length = (f"{window} // {min_updates} = {period} steps" if period == window // min_updates else
              f"{period} steps, the shortest that holds H, J and Q ({window} // {min_updates} = {window // min_updates})")
    return IEEPeriod(period - 2 * q, q, q,
                     reason=f"short run: the paper's period fits {window // paper} < {min_updates} updates in the "
                            f"{window}-step update window, so the period is {length} "
                            f"with Q = J = max(1, round({explore_share:.3g} x {period})) = {q} (short-run rule)")


def dst_update_due(step: int, delta_t: int, end_step: int) -> bool:
    """RigL / SET update every `delta_t` steps before `end_step` (not at step 0)."""
    return 0 < step < end_step and step % delta_t == 0


def gmp_sparsity(step: int, final: float, start_step: int, end_step: int) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i = 0."""
    if step <= start_step:
        return 0.0
    progress = min(1.0, (step - start_step) / max(1, end_step - start_step))
    return final * (1 - (1 - progress) ** 3)


def gmp_update_due(step: int, delta_t: int, start_step: int, end_step: int) -> bool:
    """GMP prunes every `delta_t` steps after `start_step`, and once more exactly at `end_step`."""
    return start_step < step <= end_step and ((step - start_step) % delta_t == 0 or step == end_step)


def halp_target(progress: float, start_ms: float, target_ms: float) -> float:
    """HALP's latency goal after `progress` = i / n of its n prune steps: exp(a log L_target + (1 - a) log L_0).

    A geometric interpolation from the start latency L_0 (a = 0) to the budget L_target (a = 1),
    as NVlabs/HALP's `set_latency_prune_target` (after FORCE): large steps early, small ones late.
    """
    a = min(max(progress, 0.0), 1.0)
    if a == 1.0:  # exactly the budget, not exp(log(.)) of it
        return target_ms
    return math.exp(a * math.log(target_ms) + (1 - a) * math.log(start_ms))


def halp_prune_due(step: int, interval: int, prunes: int) -> bool:
    """HALP prunes every `interval` steps, `prunes` times: at steps interval, 2 interval, ..., prunes * interval."""
    return 0 < step <= prunes * interval and step % interval == 0
