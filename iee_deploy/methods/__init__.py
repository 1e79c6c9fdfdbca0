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
from iee_deploy.methods.base import SparsityConfig, SparsityMethod, TrainContext, parse_nm
from iee_deploy.methods.baselines import GMP, SET, RigL, Static
from iee_deploy.methods.halp import HALP
from iee_deploy.methods.iee import IEE, ExplorationSpace, GrowCriterion
from iee_deploy.methods.sequential import Sequential
from iee_deploy.sparse.weight_space import WeightSpace
from iee_deploy.structured.budget import open_latency_model
from iee_deploy.structured.measured import MeasuredBudget
from iee_deploy.structured.space import ChannelSpace, Start

__all__ = ["METHODS", "STRUCTURED_METHODS", "ExplorationSpace", "GrowCriterion", "SparsityConfig", "SparsityMethod",
           "TrainContext", "build_method", "channel_space", "parse_nm", "weight_space"]


def weight_space(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int,
                 dense_start: bool = False) -> WeightSpace:
    """The unstructured space of `model` for `config` (sparsity, distribution, N:M; checked by the config)."""
    return WeightSpace(model, config.sparsity, config.distribution, config.pattern, seed, dense_start, dist)


def channel_space(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int, start: Start) -> ChannelSpace:
    """The channel space of `model` under `config`'s latency budget, measured by its LUT (checked against the model)."""
    source = open_latency_model(config.lut, config.target, model)
    measured = (MeasuredBudget.on_target(source, config.budget_tolerance, config.measure_seconds, dist.world)
                if config.measure_budget else None)
    return ChannelSpace(model, source, latency_ms=config.latency_ms, latency_ratio=config.latency_ratio, start=start,
                        seed=seed, dist=dist, measured=measured)


def structured_iee(model: nn.Module, config: SparsityConfig, dist: Distributed, seed: int) -> SparsityMethod:
    """IEE on channels: from a random Theta_K at Psi, or (dense start) HALP's descent to Psi, then IEE."""
    if config.start is Start.SCRATCH:
        if config.delta_t is not None or config.descent != SparsityConfig.descent:
            raise UserError("`delta_t` and `descent` set the descent from a dense model, but this run starts from scratch",
                            "leave them out, or start from a trained model (`init_checkpoint`)",
                            fields=("delta_t", "descent", "init_checkpoint"))
        return IEE(channel_space(model, config, dist, seed, config.start), config)
    space = channel_space(model, config, dist, seed, config.start)
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

MEASURED = frozenset({"measure_budget", "budget_tolerance", "measure_seconds"})
"""The measured budget's options, read by every structured method (`iee_deploy.structured.measured`)."""

STRUCTURED_METHODS: dict[str, tuple[frozenset[str], MethodFactory]] = {
    "iee": (IEE.options | MEASURED | {"delta_t", "descent"}, structured_iee),
    "halp": (HALP.options | MEASURED, lambda model, cfg, dist, seed: HALP(channel_space(model, cfg, dist, seed, Start.DENSE), cfg)),
}
"""name -> (options it reads, factory) of the methods under a latency budget (`config.kind == "structured"`)."""

def build_method(config: SparsityConfig, model: nn.Module, dist: Distributed | None = None, seed: int = 0) -> SparsityMethod:
    """The method named `config.method` on `model` (initial masks applied; random choices seeded by `seed`).

    Structured methods load and check the LUT and the budget here, before any training step.
    """
    if config.kind == "structured":
        if config.method not in STRUCTURED_METHODS:
            raise UserError(f"`method` {config.method} has no latency-budget (structured) form",
                            f"use `method` {' or '.join(STRUCTURED_METHODS)} with `latency_ms` or `latency_ratio`",
                            fields=("method", "latency_ms", "latency_ratio"))
        options, factory = STRUCTURED_METHODS[config.method]
    elif config.lut is not None or config.target is not None:
        raise UserError("`lut` and `target` only make sense with a latency budget",
                        "set `latency_ms` or `latency_ratio`, or leave `lut` and `target` out",
                        fields=("lut", "target", "latency_ms", "latency_ratio"))
    elif config.method in METHODS:
        cls, factory = METHODS[config.method]
        options = cls.options
    elif config.method in STRUCTURED_METHODS:
        raise UserError(f"`method` {config.method} prunes channels under a latency budget",
                        "set `latency_ms` or `latency_ratio` with a `lut`", fields=("method", "latency_ms", "latency_ratio", "lut"))
    else:
        raise UserError(f"unknown method '{config.method}'", f"choose one of: {', '.join({**METHODS, **STRUCTURED_METHODS})}",
                        fields=("method",))
    foreign = sorted(config.non_default() - options)
    if foreign:
        names = ", ".join(f"`{name}`" for name in foreign)
        raise UserError(f"`method` {config.method} does not use {names}", "leave them out or choose another method",
                        fields=("method", *foreign))
    return factory(model, config, dist or Distributed(), seed)
