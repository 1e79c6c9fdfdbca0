"""What a measurement records about where it ran: the machine, its CPU and GPUs, library versions.

One helper for every report that states its machine (LUT metadata, engine and validation reports,
LUT validation), so they describe a machine the same way.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
from importlib import metadata
from pathlib import Path

from iee_deploy.errors import UserError

VERSIONED = ("torch", "onnx", "onnxruntime", "tensorrt")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_memory_bytes() -> int | None:
    """Memory the OS can still give this process (MemAvailable), or None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(batch: int, image_bytes: int, what: str, free: int | None) -> None:
    """Refuse, before allocating, a batch whose `image_bytes` per image (`what` they hold) take over a quarter
    of the `free` memory: with the rest of the work it would swap or be killed."""
    if free is not None and batch * image_bytes > 0.25 * free:
        largest = max(1, int(0.25 * free) // image_bytes)
        raise UserError(f"a batch of {batch} images is {batch * image_bytes / 2**30:.1f} GiB of {what}, more than a "
                        f"quarter of the {free / 2**30:.1f} GiB free", f"use a `batch` of at most {largest}",
                        fields=("batch",))


def cap_threads(requested: int, cores: int) -> tuple[int, str | None]:
    """(threads to use, a warning or None): 0 means every core; more threads than cores only oversubscribe
    them (a thousand threads on two cores hang for minutes), so they are capped to the cores."""
    if requested <= 0:
        return cores, None
    if requested > cores:
        return cores, f"warning: {requested} threads asked for but this machine has {cores} cores; using {cores}"
    return requested, None


def cpu_name() -> str:
    """Human-readable CPU model of this machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_cpu_identity(cpuinfo: str) -> str:
    """The CPU's identity in `/proc/cpuinfo` text beyond its model name: family, model and stepping, cache size and
    the widest x86 vector extension ("" where none of these is given, e.g. on ARM).

    A virtual machine's model name is often only its vendor's line ("AMD EPYC"), while two such hosts time the same
    layers differently: one with AVX-512 runs dense convolutions faster relative to depthwise ones than one without.
    A latency table holds for the CPU it was measured on, and this is what tells two of them apart."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    parts = [f"{name} {fields[key]}" for key, name in (("cpu family", "family"), ("model", "model"),
                                                        ("stepping", "stepping")) if key in fields]
    if "cache size" in fields:
        parts.append(f"cache {fields['cache size']}")
    flags = set(fields.get("flags", "").split())
    vector = next((isa for isa, flag in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2")) if flag in flags),
                  None)
    return ", ".join(parts + ([vector] if vector else []))


def cpu_identity() -> str:
    """`parse_cpu_identity` of this machine ("" where /proc/cpuinfo cannot be read)."""
    try:
        return parse_cpu_identity(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ""


def same_cpu(a: dict[str, str], b: dict[str, str]) -> bool | None:
    """Whether two machine records (`machine_info`) describe the same CPU, by their `cpu_identity`; None when either
    predates that field or could not read it, since a model name alone ("AMD EPYC") does not tell."""
    if not a.get("cpu_identity") or not b.get("cpu_identity"):
        return None
    return a["cpu_identity"] == b["cpu_identity"]


def same_machine(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether two machine records (`machine_info`) time alike: the same CPU where both name their identity
    (`same_cpu`), else the same platform string (kernel build: another virtual host may sit on another CPU)."""
    same = same_cpu(a, b)
    return same if same is not None else a.get("platform") == b.get("platform")


def detect_gpus() -> list[str]:
    """Names of the CUDA GPUs torch can use here (empty without a GPU, a driver or a CUDA build of torch)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def library_versions(packages: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    """Installed versions of `packages`; absent ones are left out."""
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine_info(threads: int | None = None) -> dict[str, str]:
    """Host, platform, CPU (name and identity), CPU count, GPUs, Python, date and library versions (and the threads used, if given)."""
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": cpu_name(),
            "cpu_count": str(os.cpu_count()), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if identity := cpu_identity():
        info["cpu_identity"] = identity
    gpus = detect_gpus()
    if gpus:
        info["gpus"] = ", ".join(gpus)
    if threads is not None:
        info["threads"] = str(threads)
    return {**info, **library_versions()}
