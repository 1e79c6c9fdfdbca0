"""Sparsification methods sharing one interface (`SparsityMethod`) and one training loop.

`build_method(config, model, dist)` is the only place that maps a method name to a class; a
method registers itself in `METHODS` (unstructured: weights) or `STRUCTURED_METHODS` (channels
under a latency budget, chosen when the config has one). Structured IEE is the same `IEE` class
on a `ChannelSpace`; from a dense start (a trained checkpoint) it is HALP's progressive pruning
down to Psi followed by IEE (`Sequential`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError
from iee_deploy.methods.base import SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.baselines import GMP, SET, RigL, Static
from iee_deploy.methods.halp import HALP
from iee_deploy.methods.iee import IEE, ExplorationSpace, GrowCriterion
from iee_deploy.methods.sequential import Sequential
from iee_deploy.sparse.distributions import Distribution
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.weight_space import WeightSpace
from iee_deploy.structured.budget import open_latency_model
from iee_deploy.structured.space import ChannelSpace, Start

__all__ = ["METHODS", "STRUCTURED_METHODS", "ExplorationSpace", "GrowCriterion", "SparsityConfig", "SparsityMethod",
           "TrainContext", "build_method", "channel_space", "parse_nm", "weight_space"]


def parse_nm(text: str | None) -> NMPattern | None:
    """'2:4' -> NMPattern(2, 4), or a UserError naming the expected form."""
    if text is None:
        return None
    try:
        n, m = (int(p) for p in text.split(":"))
        return NMPattern(n, m)
    except ValueError:
        raise UserError(f"--nm '{text}' is not an N:M pattern with 0 < N < M", "pass e.g. --nm 2:4") from None


def weight_space(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int,
                 dense_start: bool = False) -> WeightSpace:
    """The unstructured space of `model` for `config` (sparsity, distribution, N:M)."""
    nm = parse_nm(config.nm)
    if nm is not None and Distribution(config.distribution) is Distribution.GLOBAL:
        raise UserError("--nm fixes every layer's density, so it cannot be combined with --distribution global",
                        "use --distribution uniform (or erk) with --nm")
    if nm is not None and abs(config.sparsity - (1 - nm.density)) > 1e-9:
        raise UserError(f"--sparsity {config.sparsity:g} contradicts --nm {nm} (sparsity {1 - nm.density:g})",
                        "leave --sparsity out with --nm")
    if not 0 <= config.sparsity < 1:
        raise UserError(f"--sparsity {config.sparsity:g} is not a fraction in [0, 1)", "pass e.g. --sparsity 0.9")
    return WeightSpace(model, config.sparsity, config.distribution, nm, seed, dense_start, dist)


def channel_space(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int, start: Start) -> ChannelSpace:
    """The channel space of `model` under `config`'s latency budget, measured by its LUT (checked against the model)."""
    source = open_latency_model(config.lut, config.target, model)
    return ChannelSpace(model, source, latency_ms=config.latency_ms, latency_ratio=config.latency_ratio, start=start,
                        seed=seed, dist=dist)


def _start(config: SparsityConfig) -> Start:
    if config.start not in {s.value for s in Start}:
        raise UserError(f"start '{config.start}' is not one of {', '.join(s.value for s in Start)}",
                        "start from scratch, or from a --checkpoint (dense)")
    return Start(config.start)


def structured_iee(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int) -> SparsityMethod:
    """IEE on channels: from a random Theta_K at Psi, or (dense start) HALP's descent to Psi, then IEE."""
    start = _start(config)
    if start is Start.SCRATCH:
        if config.delta_t is not None or config.descent != SparsityConfig.descent:
            raise UserError("--delta-t and --descent set the descent from a dense model, but this run starts from scratch",
                            "leave them out, or start from a trained model with --checkpoint")
        return IEE(channel_space(model, config, dist, seed, start), config)
    if not 0 < config.descent < 1:
        raise UserError(f"--descent {config.descent:g} is not a fraction in (0, 1)", "pass e.g. --descent 0.5")
    space = channel_space(model, config, dist, seed, start)
    window = replace(config, update_end=1.0)  # each phase fills its share of the update window
    return Sequential(space, config, [(HALP(space, window), config.descent),
                                      (IEE(space, replace(window, delta_t=None)), 1.0)])


MethodFactory = Callable[[nn.Module, SparsityConfig, Distributed, int], SparsityMethod]

METHODS: dict[str, tuple[type[SparsityMethod], MethodFactory]] = {
    "iee": (IEE, lambda model, cfg, dist, seed: IEE(weight_space(model, cfg, dist, seed), cfg)),
    "rigl": (RigL, lambda model, cfg, dist, seed: RigL(weight_space(model, cfg, dist, seed), cfg)),
    "set": (SET, lambda model, cfg, dist, seed: SET(weight_space(model, cfg, dist, seed), cfg)),
    "static": (Static, lambda model, cfg, dist, seed: Static(weight_space(model, cfg, dist, seed), cfg)),
    "gmp": (GMP, lambda model, cfg, dist, seed: GMP(weight_space(model, cfg, dist, seed, dense_start=True), cfg)),
}
"""name -> (class, factory(model, config, dist, seed)); the class declares which options it reads."""

STRUCTURED_METHODS: dict[str, tuple[frozenset[str], MethodFactory]] = {
    "iee": (IEE.options | {"delta_t", "descent"}, structured_iee),
    "halp": (HALP.options, lambda model, cfg, dist, seed: HALP(channel_space(model, cfg, dist, seed, Start.DENSE), cfg)),
}
"""name -> (options it reads, factory) of the methods under a latency budget (`config.kind == "structured"`)."""

FLAGS = {"freeze": "--no-freeze"}
"""CLI spelling of config fields whose flag is not simply --field-name."""


def build_method(config: SparsityConfig, model: nn.Module, dist: Distributed | None = None, seed: int = 0) -> SparsityMethod:
    """The method named `config.method` on `model` (initial masks applied; random choices seeded by `seed`).

    Structured methods load and check the LUT and the budget here, before any training step.
    """
    if config.kind == "structured":
        if config.method not in STRUCTURED_METHODS:
            raise UserError(f"--method {config.method} has no latency-budget (structured) form",
                            f"use --method {' or '.join(STRUCTURED_METHODS)} with --latency-ms / --latency-ratio")
        options, factory = STRUCTURED_METHODS[config.method]
    elif config.lut is not None or config.target is not None:
        raise UserError("--lut and --target only make sense with a latency budget",
                        "pass --latency-ms or --latency-ratio, or leave --lut and --target out")
    elif config.method in METHODS:
        cls, factory = METHODS[config.method]
        options = cls.options
    elif config.method in STRUCTURED_METHODS:
        raise UserError(f"--method {config.method} prunes channels under a latency budget",
                        "pass --latency-ms or --latency-ratio with --lut")
    else:
        raise UserError(f"unknown method '{config.method}'", f"choose one of: {', '.join({**METHODS, **STRUCTURED_METHODS})}")
    foreign = sorted(config.non_default() - options)
    if foreign:
        flags = ", ".join(FLAGS.get(name, "--" + name.replace("_", "-")) for name in foreign)
        raise UserError(f"--method {config.method} does not use {flags}", "leave them out or choose another method")
    return factory(model, config, dist or Distributed(), seed)
