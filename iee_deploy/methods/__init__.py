"""Sparsification methods sharing one interface (`SparsityMethod`) and one training loop.

`build_method(config, model, dist)` is the only place that maps a method name to a class;
a new method (e.g. HALP, structured IEE) registers itself in `METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError
from iee_deploy.methods.base import SparsityConfig, SparsityMethod, TrainContext
from iee_deploy.methods.baselines import GMP, SET, RigL, Static
from iee_deploy.methods.iee import IEE, ExplorationSpace, GrowCriterion
from iee_deploy.sparse.distributions import Distribution
from iee_deploy.sparse.nm import NMPattern
from iee_deploy.sparse.weight_space import WeightSpace

__all__ = ["METHODS", "ExplorationSpace", "GrowCriterion", "SparsityConfig", "SparsityMethod", "TrainContext",
           "build_method", "parse_nm", "weight_space"]


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


MethodFactory = Callable[[nn.Module, SparsityConfig, Distributed, int], SparsityMethod]

METHODS: dict[str, tuple[type[SparsityMethod], MethodFactory]] = {
    "iee": (IEE, lambda model, cfg, dist, seed: IEE(weight_space(model, cfg, dist, seed), cfg)),
    "rigl": (RigL, lambda model, cfg, dist, seed: RigL(weight_space(model, cfg, dist, seed), cfg)),
    "set": (SET, lambda model, cfg, dist, seed: SET(weight_space(model, cfg, dist, seed), cfg)),
    "static": (Static, lambda model, cfg, dist, seed: Static(weight_space(model, cfg, dist, seed), cfg)),
    "gmp": (GMP, lambda model, cfg, dist, seed: GMP(weight_space(model, cfg, dist, seed, dense_start=True), cfg)),
}
"""name -> (class, factory(model, config, dist, seed)); the class declares which options it reads."""

FLAGS = {"freeze": "--no-freeze"}
"""CLI spelling of config fields whose flag is not simply --field-name."""


def build_method(config: SparsityConfig, model: nn.Module, dist: Distributed | None = None, seed: int = 0) -> SparsityMethod:
    """The method named `config.method` on `model` (initial masks applied; random choices seeded by `seed`)."""
    if config.method not in METHODS:
        raise UserError(f"unknown method '{config.method}'", f"choose one of: {', '.join(METHODS)}")
    cls, factory = METHODS[config.method]
    foreign = sorted(config.non_default() - cls.options)
    if foreign:
        flags = ", ".join(FLAGS.get(name, "--" + name.replace("_", "-")) for name in foreign)
        raise UserError(f"--method {config.method} does not use {flags}", "leave them out or choose another method")
    return factory(model, config, dist or Distributed(), seed)
