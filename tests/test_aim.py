"""solvers.aim: where to aim a predicted budget so that the measured result lands on the target (exact cases)."""

import pytest

from solvers.aim import STRETCH, best_try, next_aim, within


def test_next_aim_aims_through_the_bracket_else_proportionally():
    # mobilenet_v3_small's IEE at 0.35: the pilot and the two earlier aims (ratio run at, final engines x dense)
    points = [(0.386719, 0.326822), (0.414144, 0.395004), (0.366959, 0.284)]
    line = 0.386719 + (0.35 - 0.326822) * (0.414144 - 0.386719) / (0.395004 - 0.326822)
    assert next_aim(points, 0.35, floor=0.2) == pytest.approx(line)  # the bracket 0.327-0.395, not the far 0.284
    assert next_aim([(0.5, 0.55), (0.4, 0.45), (0.45, 0.52)], 0.5, floor=0.2) == pytest.approx(0.45 - 0.02 / 0.07 * 0.05)
    # no bracket, the two tries in the order of their aims: the line through them (a longer step than 0.5 * 0.5 / 0.56)
    assert next_aim([(0.6, 0.65), (0.5, 0.56)], 0.5, floor=0.2) == pytest.approx(0.5 - 0.06 * 0.1 / 0.09)
    assert next_aim([(0.5, 0.56)], 0.5, floor=0.2) == pytest.approx(0.5 * 0.5 / 0.56)  # one try: proportionally
    assert next_aim([(0.2, 0.4)], 0.35, floor=0.19) == 0.19  # never below the smallest ratio the knapsack accepts
    assert next_aim([(0.9, 0.6)], 0.7, floor=0.2) == 1.0
    # the FLOPs knapsack on resnet20 at 0.7: every engine too fast, though not in the order of its aims; the step from
    # the nearest (0.6822) would repeat its first aim, the step from the largest aim goes on up, along the line through
    # the two largest (0.6709 -> 0.6790), 3.4 times the proportional step
    middle = 0.4765625 * 0.7 / 0.6822
    flat = [(0.4765625, 0.6822), (middle, 0.6709), (0.5095, 0.6790)]
    line = 0.5095 + (0.7 - 0.6790) * (0.5095 - middle) / (0.6790 - 0.6709)
    assert next_aim(flat, 0.7, floor=0.2) == pytest.approx(line)
    # a measured budget on it, every engine too slow: on from the smallest aim, not the nearest (0.569 -> 0.784)
    slow = [(0.7, 0.861), (0.569, 0.784), (0.508, 0.789)]  # the two smallest aims out of order: proportionally
    assert next_aim(slow, 0.7, floor=0.2) == pytest.approx(0.508 * 0.7 / 0.789)
    assert next_aim([(0.2, 0.4), (0.25, 0.41)], 0.35, floor=0.2) is None  # at the floor: nothing smaller to try
    assert next_aim([(0.2, 0.4)], 0.35, floor=0.2) is None  # at the floor already


def test_next_aim_steps_on_along_the_line_through_the_outermost_tries_at_most_stretch_times_proportionally():
    # HALP on mobilenet_v3_small at 0.35: every structure a little fast, each proportional step (x 1.023) too short
    # to move it; the line through the two largest aims steps 2.56 times as far
    creeping = [(0.30, 0.234), (0.40, 0.339), (0.4092, 0.342)]
    line = 0.4092 + (0.35 - 0.342) * (0.4092 - 0.40) / (0.342 - 0.339)
    assert next_aim(creeping, 0.35, floor=0.2) == pytest.approx(line)
    assert line - 0.4092 == pytest.approx(2.56 * (0.4092 * 0.35 / 0.342 - 0.4092), rel=0.01)
    # nearly flat: the line would point far off; the step stops at STRETCH times the proportional one
    far = [(0.40, 0.3419), (0.41, 0.342)]
    assert next_aim(far, 0.35, floor=0.2) == pytest.approx(0.41 + STRETCH * (0.41 * 0.35 / 0.342 - 0.41))
    # a steep line (latency moving faster than the aim) steps less than proportionally, so as not to overshoot
    steep = [(0.5, 0.60), (0.55, 0.70)]
    assert next_aim(steep, 0.5, floor=0.2) == pytest.approx(0.5 - 0.1 * 0.05 / 0.1)


def test_next_aim_respects_a_ceiling():
    assert next_aim([(0.9, 0.8)], 0.95, floor=0.2, ceiling=0.95) == 0.95
    assert next_aim([(0.9, 0.8)], 0.85, floor=0.2) == pytest.approx(0.9 * 0.85 / 0.8)


def test_within_is_relative():
    assert within(0.5099, 0.5, 0.02) and within(0.4901, 0.5, 0.02)
    assert not within(0.511, 0.5, 0.02) and not within(0.489, 0.5, 0.02)


def test_best_try_keeps_the_nearest():
    assert best_try([(0.5, 0.47), (0.52, 0.503), (0.53, 0.509)], 0.5) == 1  # nearest of the two within
    # none within: the nearest, above or below (mobilenet_v3_small at 0.35 after one epoch: 0.20 and 0.394 measured)
    assert best_try([(0.35, 0.1999), (0.439, 0.4258), (0.409, 0.3943)], 0.35) == 2
    assert best_try([(0.5, 0.45), (0.55, 0.54), (0.52, 0.47)], 0.5) == 2
    with pytest.raises(ValueError):
        best_try([], 0.5)
