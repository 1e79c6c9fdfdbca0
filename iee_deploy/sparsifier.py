"""`Sparsifier`: drive any sparsification method from your own model, optimizer and training loop.

    sparsifier = Sparsifier(model, optimizer, total_steps, method="iee", sparsity=0.9, resolution=32)
    for images, labels in loader:
        with sparsifier.step(len(labels)):  # Prune / Reactivate / Grow when due, before the forward
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()                # hooked inside the context: masked gradients, masks kept
    deployable = sparsifier.deployable()    # physically smaller for channel budgets

It calls the `SparsityMethod` hooks in the one fixed order (`method_step`, see
`iee_deploy.methods.base`): `on_step_start` when the step's context opens; `after_backward` and
`before_optimizer_step` from an optimizer step pre-hook; `after_optimizer_step` from its post-hook. `iee-deploy train`
(`iee_deploy.train.Trainer`) is one user of this class, so the same seed, data and optimizer give
the same masks and weights in both. Any method of `build_method` works (IEE, RigL, SET, static,
GMP; IEE and HALP under a latency budget: `latency_ms` or `latency_ratio` with `lut`).

It records what the run folder records: every structure update (`history`: IoU, survival, FLOPs)
and the training FLOPs. Under DDP, build it on every rank after `init_process_group`, with the
DDP-wrapped model or the model inside it: structure decisions are broadcast from rank 0, so all
ranks hold one Theta_K and, with DDP's averaged gradients, the same weights (tests/ddp_user_loop.py).
Evaluate only while `in_update` is False: inside an IEE update Theta_K is short of its budget.

One Sparsifier per model at a time: a second one on a model (or on any of its parameters) that a live
Sparsifier holds is refused, since each would keep its own masks; `detach()` the first one to replace it.
`state_dict()` records the settings and layers it belongs to, so `load_state_dict` refuses another
method's, another model's or another schedule's state in one line instead of mixing them.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
from typing import Any

import torch
from torch import nn

from iee_deploy.distributed import Distributed
from iee_deploy.errors import UserError, is_whole
from iee_deploy.flops import forward_flops, layer_costs, train_step_flops
from iee_deploy.methods import SparsityConfig, SparsityMethod, TrainContext, build_method, parse_nm
from iee_deploy.models import first_non_finite
from iee_deploy.models.detection import network_part
from iee_deploy.seeding import MAX_SEED
from iee_deploy.sparse.tracking import UpdateRecord


@contextmanager
def method_step(method: SparsityMethod, optimizer: torch.optim.Optimizer, step: int) -> Iterator[list[UpdateRecord]]:
    """Context of training step `step` of `method`: the one place that orders the method's hooks.

    Entering applies the structure updates due (`on_step_start`); `optimizer.step()` inside the
    context runs `after_backward` and `before_optimizer_step` just before the update and
    `after_optimizer_step` just after it. Yields the step's `UpdateRecord`s (complete on exit).
    """
    records = method.on_step_start(step)
    stepped = []

    def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        records.extend(method.after_backward(step))
        method.before_optimizer_step(step)

    def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        method.after_optimizer_step(step)
        stepped.append(True)

    def before_once(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if stepped:  # the schedule counts one optimizer step per context: a second one would run unseen
            raise UserError(f"optimizer.step() was called twice inside the context of training step {step}",
                            "open one `with sparsifier.step():` per optimizer.step()")
        before(opt, args, kwargs)

    hooks = [optimizer.register_step_pre_hook(before_once), optimizer.register_step_post_hook(after)]
    try:
        yield records
    finally:
        for hook in hooks:
            hook.remove()
    if not stepped:
        raise UserError(f"optimizer.step() was not called inside the context of training step {step}",
                        "call optimizer.step() inside `with sparsifier.step():`")


def check_arguments(model: Any, optimizer: Any, total_steps: Any, config: SparsityConfig | None,
                    fields: dict[str, Any], resolution: Any, seed: Any = 0) -> None:
    """One UserError naming the argument for each way a Sparsifier can be built wrongly."""
    if config is not None and fields:
        raise UserError("pass either `config` or SparsityConfig fields as keywords, not both",
                        f"drop {', '.join(sorted(fields))} or `config`", fields=("config",))
    if config is not None and not isinstance(config, SparsityConfig):
        raise UserError(f"`config` must be a SparsityConfig, got {type(config).__name__} {config!r}"[:200],
                        "pass SparsityConfig(method=..., ...), or its fields as keywords (method='iee', ...)",
                        fields=("config",))
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        raise UserError(f"`model` must be a torch.nn.Module with parameters, got {type(model).__name__}",
                        "pass the network you train", fields=("model",))
    if isinstance(model, torch.jit.ScriptModule):  # its layers are compiled: no Conv2d or Linear to mask
        raise UserError("`model` is a TorchScript module, whose layers cannot be sparsified",
                        "sparsify the Python model while it trains, then script (or export) it", fields=("model",))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UserError(f"`optimizer` must be a torch.optim.Optimizer, got {type(optimizer).__name__}",
                        "pass the optimizer of your training loop", fields=("optimizer",))
    if any(p.is_meta for p in model.parameters()):  # no values to mask or copy
        raise UserError("`model` has parameters on the meta device (shapes without values)",
                        "materialise it first, e.g. model.to_empty(device='cpu') and load its weights", fields=("model",))
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter of `model` is frozen (requires_grad=False): there is nothing to train",
                        "unfreeze the layers to sparsify, e.g. p.requires_grad_(True)", fields=("model",))
    owned = {id(p) for p in model.parameters()}
    if not any(id(p) in owned for group in optimizer.param_groups for p in group["params"]):
        raise UserError("`optimizer` holds none of the model's parameters",
                        "build it from this model, e.g. torch.optim.SGD(model.parameters(), ...)", fields=("optimizer",))
    if not is_whole(total_steps) or total_steps < 1:
        raise UserError(f"`total_steps` must be a positive whole number of optimizer steps, got {total_steps!r}",
                        "pass epochs x steps per epoch", fields=("total_steps",))
    if resolution is not None and (not is_whole(resolution) or resolution < 1):
        raise UserError(f"`resolution` must be a positive number of pixels, got {resolution!r}",
                        "pass the input size, e.g. 32", fields=("resolution",))
    if not is_whole(seed) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"`seed` must be a whole number in [0, 2**63 - 1], got {seed!r}", "pass e.g. 0", fields=("seed",))


_ATTACHED: weakref.WeakSet[Sparsifier] = weakref.WeakSet()
"""The live, attached Sparsifiers: at most one holds any parameter."""

STATE_SKIPS = ("lut", "target")
"""Settings a saved state may differ in: where the LUT lies and the target's name or path."""


def attached_to(model: nn.Module) -> Sparsifier | None:
    """The live Sparsifier that holds any of `model`'s parameters, or None."""
    own = {id(p) for p in model.parameters()}
    for _ in range(2):  # a Sparsifier the user dropped may wait for the cycle collector
        holder = next((s for s in list(_ATTACHED) if any(id(p) in own for p in s.model.parameters())), None)
        if holder is None:
            return None
        gc.collect()
    return holder


def settings_of(config: SparsityConfig) -> dict[str, Any]:
    """The settings a state belongs to, as plain JSON types (enums as values, tuples as lists)."""
    return {f.name: json.loads(json.dumps(getattr(config, f.name), default=str))
            for f in dataclass_fields(config) if f.name not in STATE_SKIPS}


class Sparsifier:
    """A sparsification method attached to `model` and `optimizer` for `total_steps` optimizer steps.

    Give either `config` or the `SparsityConfig` fields as keywords (`method="rigl", sparsity=0.8`); with `nm`
    and no `sparsity`, the sparsity is the pattern's 1 - N/M (as the `train` command takes it).
    `resolution` (input px) enables FLOP counting. `dist` defaults to the current process group.
    """

    config: SparsityConfig

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int,
                 config: SparsityConfig | None = None, *, seed: int = 0, resolution: int | None = None,
                 dist: Distributed | None = None, **fields: Any) -> None:
        check_arguments(model, optimizer, total_steps, config, fields, resolution, seed)
        seed, resolution = int(seed), (int(resolution) if resolution is not None else None)  # numpy integers too
        self.model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        holder = attached_to(self.model)
        if holder is not None:
            raise UserError(f"`model` ({type(self.model).__name__}) already has a Sparsifier attached (method "
                            f"'{holder.config.method}'); two would each keep their own masks on the same weights",
                            "call .detach() on the first one before attaching another", fields=("model",))
        self.optimizer = optimizer
        self.total_steps = int(total_steps)  # a numpy integer too: the state_dict and its JSON hold an int
        if config is None and isinstance(fields.get("nm"), str) and "sparsity" not in fields:
            fields = {**fields, "sparsity": 1 - parse_nm(fields["nm"]).density}  # as `train --nm`: not the default 0.9
        try:
            self.config = config or SparsityConfig(**fields)
        except TypeError as exc:  # an unknown keyword
            raise UserError(f"Sparsifier got an unknown argument ({exc})",
                            "pass SparsityConfig's fields, e.g. method='iee', sparsity=0.9") from None
        device = next(self.model.parameters()).device
        self.dist = dist or Distributed.current(device)
        before = {name: t.detach().to("cpu", copy=True) for name, t in self.model.state_dict(keep_vars=True).items()}
        self.method: SparsityMethod = build_method(self.config, self.model, self.dist, seed)
        self.method.setup(TrainContext(self.total_steps, optimizer))
        # the tensors the initial masks changed: (tensor, value before, version after); `load_state_dict` before
        # the first step puts back those not written since (weights loaded before this Sparsifier was built)
        self._unmasked = {name: (t, before[name], t._version) for name, t in self.model.state_dict(keep_vars=True).items()
                          if not torch.equal(before[name], t.detach().cpu())}
        _ATTACHED.add(self)
        self.costs = layer_costs(self.model, resolution) if resolution else {}
        self.resolution = resolution
        # a classifier's first forward checks the size the FLOP counts assume (the hook removes itself); a detector
        # pads or resizes its images itself
        self._size_check = (self.model.register_forward_pre_hook(self._check_input_size)
                            if resolution and network_part(self.model) is None else None)
        self.dense_flops = float(forward_flops(self.costs))
        self.sparse_flops = self._sparse_flops()
        self.steps_done = 0  # optimizer steps finished
        self.train_flops = 0.0
        self.history: list[dict[str, Any]] = []
        self._open = False
        self._unentered = False  # a step() context made but not yet entered

    # --- the step ----------------------------------------------------------------------------
    def step(self, batch_size: int = 0) -> AbstractContextManager[list[UpdateRecord]]:
        """Context around one training step (forward, backward, `optimizer.step()`).

        On entry the structure updates due now are applied; the context yields this step's
        `UpdateRecord`s (complete once it closes). `batch_size` (this rank's samples) adds the
        step's training FLOPs, counted for every rank. A step() that is never entered (called bare, as a
        scheduler's step is) does nothing: the next call refuses, rather than let training go on unsparsified.
        """
        if self._unentered:
            raise UserError("the previous Sparsifier.step() was called but never entered, so its optimizer step "
                            "kept no mask", "wrap each training step: `with sparsifier.step(len(labels)):` "
                            "around forward, backward and optimizer.step()")
        self._unentered = True
        return self._step(batch_size)

    @contextmanager
    def _step(self, batch_size: int) -> Iterator[list[UpdateRecord]]:
        self._unentered = False
        if self not in _ATTACHED:
            raise UserError("this Sparsifier was detached from its model", "build a new Sparsifier to sparsify it again")
        if not is_whole(batch_size) or batch_size < 0:
            raise UserError(f"`batch_size` must be the step's number of samples (0 or more), got {batch_size!r}",
                            "pass len(labels), or leave it out", fields=("batch_size",))
        if self._open:
            raise UserError("Sparsifier.step() contexts cannot nest", "close the previous step first")
        if self.steps_done >= self.total_steps:
            raise UserError(f"all {self.total_steps} steps the Sparsifier was built for are done",
                            "build it with the loop's real total of optimizer steps", fields=("total_steps",))
        step = self.steps_done
        self._unmasked = {}
        cost = self.method.step_cost(step)
        self._open = True
        try:
            with method_step(self.method, self.optimizer, step) as records:
                yield records
        finally:
            self._open = False
        if records:
            self.sparse_flops = self._sparse_flops()
        self.train_flops += train_step_flops(cost, self.sparse_flops, self.dense_flops) * batch_size * self.dist.world
        for record in records:
            data = asdict(record)
            extra = data.pop("extra")
            self.history.append({**data, **extra, "forward_flops": self.sparse_flops,
                                 "dense_forward_flops": self.dense_flops, "train_flops": self.train_flops})
        self.steps_done = step + 1

    def _sparse_flops(self) -> float:
        return float(forward_flops(self.costs, self.method.state.active_weights()))

    # --- what a loop asks --------------------------------------------------------------------
    @property
    def in_update(self) -> bool:
        """True between an update's Prune and its Grow (after the last finished step): do not evaluate now."""
        return self.steps_done > 0 and self.method.in_update(self.steps_done - 1)

    def evaluation(self) -> AbstractContextManager[None]:
        """Context in which the model computes with Theta_K only (evaluation, export)."""
        return self.method.evaluation()

    def detach(self) -> None:
        """Stop sparsifying the model, so that another Sparsifier may attach to it.

        The weights stay as they are (inactive ones at zero); this Sparsifier's `step()` is refused from now.
        """
        _ATTACHED.discard(self)
        if self._size_check is not None:
            self._size_check.remove()
            self._size_check = None

    def _check_input_size(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Refuse a first image batch (N, C, H, W) of another size than `resolution`: the FLOP counts (and `history`'s
        FLOPs) would describe inputs the model never sees. Inputs of other forms (a detector's image list) pass."""
        assert self._size_check is not None
        self._size_check.remove()
        self._size_check = None
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            height, width = (int(v) for v in x.shape[-2:])
            raise UserError(f"the model's first input is {height} x {width} px, but the Sparsifier was given `resolution` "
                            f"{self.resolution} (its FLOP counts would be of another input size)",
                            f"pass resolution={height}" if height == width else
                            "leave `resolution` out (FLOPs are counted for square inputs)", fields=("resolution",))

    def deployable(self) -> nn.Module:
        """The deployable model of Theta_K on the CPU: masked weights, or physically fewer channels; a model whose
        weights went NaN or inf (a diverged loop, e.g. NaN inputs between structure updates) is refused."""
        bad = first_non_finite(self.model)
        if bad is not None:
            raise UserError(f"the model's weights hold NaN or inf values in '{bad}': training diverged",
                            "lower the learning rate, or check the inputs, the loss and the starting weights for NaN")
        return self.method.pruned_model(self.model)

    def active_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state_dict with Theta_K only (what `final_model.pt` holds), as CPU copies."""
        with self.evaluation():
            return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain types only (`torch.load(..., weights_only=True)` reads it back), with the settings,
        schedule length and layer sizes it belongs to."""
        return {"method": self.method.state_dict(), "steps_done": self.steps_done, "train_flops": self.train_flops,
                "history": [dict(r) for r in self.history], "settings": settings_of(self.config),
                "total_steps": self.total_steps, "layers": self.method.state.total_weights()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state()`; refused in one line if it belongs to another method, model or schedule.

        Load the model's weights before building the Sparsifier or after this call: either way the
        weights are the saved ones (the initial masks of a fresh Sparsifier never erase them).
        """
        self._check_state(state)
        with torch.no_grad():
            for tensor, value, version in self._unmasked.values():
                if tensor._version == version:  # not written since the initial masks zeroed part of it
                    tensor.copy_(value)
        self._unmasked = {}
        self.method.load_state_dict(state["method"])
        self.steps_done = int(state["steps_done"])
        self.train_flops = float(state["train_flops"])
        self.history = [dict(r) for r in state["history"]]
        self.sparse_flops = self._sparse_flops()

    def _check_state(self, state: Any) -> None:
        fix = "load the state_dict() of a Sparsifier built with the same model, method settings and total_steps"
        if not isinstance(state, dict) or not {"method", "steps_done", "train_flops", "history"} <= set(state):
            keys = ", ".join(map(str, state)) or "none" if isinstance(state, dict) else None
            raise UserError(f"`state` is not a Sparsifier's state_dict() (got a {type(state).__name__}"
                            f"{'' if keys is None else ' with keys: ' + keys})", fix)
        mine = settings_of(self.config)
        saved = state.get("settings", mine)  # states saved before settings were recorded: not checked
        differ = [k for k in mine if k in saved and saved[k] != mine[k]]
        if differ:
            raise UserError("`state` belongs to another Sparsifier: " + ", ".join(
                f"{k} {saved[k]!r} there, {mine[k]!r} here" for k in differ), fix)
        if state.get("total_steps", self.total_steps) != self.total_steps:
            raise UserError(f"`state` belongs to a schedule of {state['total_steps']} steps, this Sparsifier's has "
                            f"{self.total_steps}", fix, fields=("total_steps",))
        layers, own = state.get("layers", self.method.state.total_weights()), self.method.state.total_weights()
        if layers != own:
            other = next(f"layer '{k}': {layers.get(k)} weights there, {own.get(k)} here" for k in sorted({*layers, *own})
                          if layers.get(k) != own.get(k))
            raise UserError(f"`state` holds the masks of another model ({other})", fix, fields=("model",))
