"""Thread counts with physical limits: 0 is every core, more than the cores is capped with a warning."""

from runtime.machine import cap_threads, usable_cores


def test_cap_threads_is_exact():
    assert cap_threads(0, 2) == (2, None)
    assert cap_threads(1, 2) == (1, None)
    assert cap_threads(2, 2) == (2, None)
    threads, warning = cap_threads(1000, 2)
    assert threads == 2
    assert warning == "warning: 1000 threads asked for but this machine has 2 cores; using 2"


def test_usable_cores_is_positive():
    assert usable_cores() >= 1
