"""Thread counts with physical limits: 0 is every core, more than the cores is capped with a warning; the CPU identity
that tells apart two hosts with one model name."""

from runtime.machine import (
    cap_threads,
    cpu_identity,
    machine_info,
    parse_cpu_identity,
    same_cpu,
    same_machine,
    usable_cores,
)


def test_cap_threads_is_exact():
    assert cap_threads(0, 2) == (2, None)
    assert cap_threads(1, 2) == (1, None)
    assert cap_threads(2, 2) == (2, None)
    threads, warning = cap_threads(1000, 2)
    assert threads == 2
    assert warning == "warning: 1000 threads asked for but this machine has 2 cores; using 2"


def test_usable_cores_is_positive():
    assert usable_cores() >= 1


ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cache size\t: 1024 KB
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni

processor\t: 1
cpu family\t: 99
"""


def test_cpu_identity_tells_apart_hosts_that_share_a_model_name():
    assert parse_cpu_identity(ZEN4) == "family 25, model 17, stepping 1, cache 1024 KB, avx512"
    zen3 = ZEN4.replace("model\t\t: 17", "model\t\t: 1").replace(" avx512f avx512_vnni", "").replace("1024", "512")
    assert parse_cpu_identity(zen3) == "family 25, model 1, stepping 1, cache 512 KB, avx2"
    assert parse_cpu_identity("processor\t: 0\nflags\t: amx_tile avx512f avx2\n") == "amx"
    assert parse_cpu_identity("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n") == ""  # ARM: no such fields
    assert parse_cpu_identity("") == ""


def test_machine_info_records_the_cpu_identity_where_it_is_known():
    info = machine_info()
    assert info.get("cpu_identity", "") == cpu_identity()


def test_same_cpu_compares_identities_and_does_not_guess_from_a_model_name():
    zen3, zen4 = {"cpu": "AMD EPYC", "cpu_identity": "family 25, model 1"}, {"cpu": "AMD EPYC", "cpu_identity": "family 25, model 17"}
    assert same_cpu(zen4, dict(zen4)) is True
    assert same_cpu(zen3, zen4) is False
    assert same_cpu({"cpu": "AMD EPYC"}, zen4) is None  # a record from before the identity was kept
    assert same_cpu(zen4, {"cpu": "AMD EPYC", "cpu_identity": ""}) is None


def test_same_machine_decides_by_the_cpu_where_both_name_it_else_by_the_platform():
    zen3 = {"platform": "Linux-v1272", "cpu_identity": "family 25, model 1"}
    zen4 = {"platform": "Linux-v1300", "cpu_identity": "family 25, model 17"}
    assert same_machine(zen4, {**zen4, "platform": "Linux-v1301"})  # one CPU under two kernel builds
    assert not same_machine(zen3, {**zen4, "platform": "Linux-v1272"})  # one kernel build on two CPUs
    old = {"platform": "Linux-v1272"}  # a record from before the identity was kept
    assert same_machine(old, {**zen4, "platform": "Linux-v1272"}) and not same_machine(old, zen4)
    assert not same_machine({}, zen4)  # a record that names no machine is not this one
