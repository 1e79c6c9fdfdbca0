"""Trace a model into a flat list of operations (the graph's intermediate form).

Two front ends produce the same `Trace`:

- ``fx`` (preferred): `torch.fx` symbolic tracing, then one pass over the nodes with *meta* tensors
  (shapes only, no arithmetic), so tracing ResNet-50 at 224 px costs a few milliseconds whatever the
  resolution. fx also records which view/reshape sizes are computed from the input (`x.size(1) // 2`)
  rather than written as literals, which the channel analysis uses to allow pruning through a channel
  shuffle.
- ``eager`` (fallback for models fx cannot trace, e.g. Python control flow on tensor values): one real
  forward pass in eval mode under `torch.no_grad`, recording every torch function call with a
  `TorchFunctionMode` and every leaf layer with module hooks. Sizes are plain integers there, so the
  analysis treats every explicit reshape size as a literal (safe, may fix more channels than fx).

Leaf layers are torch.nn modules (fx's default rule), the attention modules of `attention.py` and
modules declared with `register_op`; everything else is traced through.
Unknown operations are refused here, before anything is evaluated (see `ops.py`).
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import functools
import gc
import math
import operator
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.fx.node import map_arg
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

try:  # fx's own patching helpers: a lean trace of a module uses them as fx's `Tracer.trace` does
    from torch.fx._symbolic_trace import (
        _constant_attribute_types,
        _create_wrapped_func,
        _create_wrapped_method,
        _get_is_fx_tracing,
        _new_patcher,
        _set_is_fx_tracing,
        _wrapped_fns_to_patch,
        _wrapped_methods_to_patch,
    )
    _LEAN_TRACE = True
except ImportError:  # another torch: fx's `Tracer.trace` as it is
    _LEAN_TRACE = False

from iee_deploy.errors import UserError
from iee_deploy.graph.ops import (
    PASS_THROUGH,
    Category,
    classify_function,
    classify_method,
    classify_module,
    is_declared_leaf,
    makes_data,
)

_LEAN_NODES = all(hasattr(fx.Graph(), a) for a in ("_graph_namespace", "_insert", "_find_nodes_lookup_table", "_len",
                                                  "_target_to_str")) and all(
    hasattr(fx.graph, a) for a in ("_name_regex", "_illegal_char_regex", "_illegal_names")) and all(
    hasattr(fx.graph._Namespace(), a) for a in ("_used_names", "_base_count"))
"""Whether `_Tracer.create_node` may make fx's nodes itself (this torch's fx has the internals it uses)."""
_NAMING = fx.Graph()
"""A graph whose `_target_to_str` names node targets (it reads nothing of the graph)."""


@functools.lru_cache(maxsize=4096)
def _target_name(target: Any) -> str:
    """fx's name for a node of `target` (``Tensor.view`` -> "view"), once per target and process."""
    return _NAMING._target_to_str(target)


@functools.lru_cache(maxsize=16384)
def _name_parts(candidate: str) -> tuple[str, str, int | None]:
    """fx's `_Namespace.create_name` work on a candidate name that does not depend on the namespace: the candidate
    made a valid identifier, its base and its numeric suffix (None if it has none). Once per string and process."""
    match = fx.graph._name_regex.match(candidate)
    if match is None:
        candidate = fx.graph._illegal_char_regex.sub("_", candidate) or "_unnamed"
        if candidate[0].isdigit():
            candidate = f"_{candidate}"
        match = fx.graph._name_regex.match(candidate)
        assert match is not None
    base, num = match.group(1, 2)
    return candidate, base, None if num is None else int(num)


def _unique_name(namespace: Any, candidate: str) -> str:
    """The name fx's `_Namespace.create_name(candidate, None)` gives, without its per-call regex work (a tenth of
    a node's cost in fx)."""
    candidate, base, num = _name_parts(candidate)
    used = namespace._used_names
    if num is None or candidate in used:
        num = namespace._base_count.get(base, 0)
        if candidate in fx.graph._illegal_names:
            num += 1
            candidate = f"{base}_{num}"
    while candidate in used:
        num += 1
        candidate = f"{base}_{num}"
    used.add(candidate)
    namespace._base_count[base] = num
    return candidate


PLAIN_ARGS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout})
"""Argument types fx stores in a node as they are (its own `create_arg` reaches that after a chain of checks)."""


@functools.cache
def _wrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fx's wrapper of an autowrapped function (``math.sqrt``): it finds the tracer in its arguments, so one wrapper
    serves every trace (fx made ~90 a trace, one per function of the math module)."""
    return _create_wrapped_func(fn)


def _patch_registered(patcher: Any) -> None:
    """fx's `_patch_wrapped_functions`: patch, for the trace, every function registered with `torch.fx.wrap` (timm
    and transformers register dozens), each with its one wrapper per process (`_wrapped`) instead of a new one."""
    for (_, name), frame_dict in _wrapped_fns_to_patch.copy().items():
        fn = getattr(builtins, name) if name not in frame_dict and hasattr(builtins, name) else frame_dict[name]
        patcher.patch(frame_dict, name, _wrapped(fn))
    for cls, name in _wrapped_methods_to_patch:
        patcher.patch_method(cls, name, _create_wrapped_method(cls, name))


_AUTOWRAP_NAMES: dict[int, tuple[dict[str, Any], int, frozenset[int], list[str]]] = {}
"""id(globals dict) -> (the dict, its length then, the function ids asked for, the names holding one of them)."""


def _autowrap(patcher: Any, frame_dict: dict[str, Any], function_ids: set[int]) -> None:
    """fx's `_autowrap_check`: patch, for the trace, each name of `frame_dict` bound to an autowrapped function. Each
    dict is scanned once per process (again when its length changed), not once per trace: a module's globals are
    hundreds of names, and a trace visits the globals of every module class's file."""
    if not patcher.visit_once(frame_dict):
        return
    entry = _AUTOWRAP_NAMES.get(id(frame_dict))
    if entry is None or entry[0] is not frame_dict or entry[1] != len(frame_dict) or entry[2] != function_ids:
        names = [name for name, value in frame_dict.items()
                 if not name.startswith("_") and callable(value) and id(value) in function_ids]
        entry = _AUTOWRAP_NAMES[id(frame_dict)] = (frame_dict, len(frame_dict), frozenset(function_ids), names)
    for name in entry[3]:
        fn = frame_dict.get(name)
        if fn is not None and id(fn) in function_ids:  # still bound to it
            patcher.patch(frame_dict, name, _wrapped(fn))


class _Tracer(fx.Tracer):
    """fx's tracer, with modules declared by `register_op` kept as single (leaf) operations.

    Four of fx's documented override points are made lean (a quarter of the tracing time, which is
    most of a graph build): a module call keeps a plain stack of (path, type) instead of fx's scope
    objects and per-node copies of `nn_module_stack`; common argument types skip fx's checks for
    parameters, constants and opaque objects (which never match them); a parameter read in forward (a
    layer scale, a position embedding) or a buffer passed to an op is found by a dict lookup instead of a
    scan of the model's parameters or buffers."""

    def __init__(self, named: list[tuple[str, nn.Module]] | None = None) -> None:
        super().__init__()
        self.named = named  # the traced model's `named_modules()`, walked once per trace (`_fx_trace`)
        self.where: list[tuple[str, type[nn.Module]]] = []  # enclosing modules of the current call
        self.tensor_names: dict[int, str] | None = None  # id(parameter) -> its path, on first use
        self.buffer_names: dict[int, str] | None = None  # id(buffer) -> its path, on first use
        self.values: _FxValues | None = None  # the values of the nodes traced so far, when asked for (`concrete`)
        self.evaluating = False  # computing those values: module calls and attributes are the real ones then
        self.tensor_attrs_ready = True  # fx's map of tensor attributes made (`trace` defers it to first need)

    def trace(self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """fx's `Tracer.trace` of a module, leaner (a sixth of a small model's graph build), with the same graph.

        fx intercepts module calls and attribute reads by patching `nn.Module.__call__` and `__getattr__`
        for the duration; a change to a class that every layer of every imported library subclasses
        costs about a millisecond each way. Here the classes of the model's own modules are patched
        instead (none may define its own `__call__` or `__getattr__`: otherwise, and for anything but a
        plain module, fx's own trace runs). fx's map of every tensor attribute of every module, for a
        constant tensor passed to an op, is made when one is first passed (`create_arg`), not before."""
        names = self._named(root) if isinstance(root, nn.Module) else []
        classes = {type(m) for _, m in names}
        if (not _LEAN_TRACE or concrete_args is not None or not names or isinstance(root, fx.GraphModule)
                or any(c.__call__ is not _MODULE_CALL or c.__getattr__ is not _MODULE_GETATTR for c in classes)):
            self.tensor_attrs_ready = True
            return super().trace(root, concrete_args)
        assert isinstance(root, nn.Module)
        flag = _get_is_fx_tracing()
        _set_is_fx_tracing(True)
        try:
            self.root = root
            fn = type(root).forward
            self.root_module_name = root._get_name()
            self.submodule_paths = {m: name for name, m in names}
            self.graph = fx.Graph(tracer_cls=type(self))
            self.tensor_attrs = {}
            self.tensor_attrs_ready = False
            fn_globals = fn.__globals__
            fn, args = self.create_args_for_root(fn, True, None)
            parameter_proxy_cache: dict[str, Any] = {}

            def module_getattr(mod: nn.Module, attr: str) -> Any:
                return self.getattr(attr, _MODULE_GETATTR(mod, attr), parameter_proxy_cache)

            def module_call(mod: nn.Module, *args: Any, **kwargs: Any) -> Any:
                def forward(*args: Any, **kwargs: Any) -> Any:
                    return _MODULE_CALL(mod, *args, **kwargs)

                _autowrap(patcher, getattr(getattr(mod, "forward", mod), "__globals__", {}), self._autowrap_function_ids)
                return self.call_module(mod, forward, args, kwargs)

            with _new_patcher() as patcher, _classes_patched(classes, module_call, module_getattr):
                _patch_registered(patcher)
                _autowrap(patcher, fn_globals, self._autowrap_function_ids)
                for module in self._autowrap_search:
                    _autowrap(patcher, module.__dict__, self._autowrap_function_ids)
                self.create_node("output", "output", (self.create_arg(fn(*args)),), {})
            self.submodule_paths = None
        finally:
            _set_is_fx_tracing(flag)
        return self.graph

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """fx's rule: one proxy per path for the model's parameters, anything else as is (buffers too:
        fx's `proxy_buffer_attributes` is off, they become get_attr nodes when passed to an op)."""
        if self.evaluating or not isinstance(attr_val, nn.Parameter):
            return attr_val
        if self.tensor_names is None:
            assert isinstance(self.root, nn.Module)
            self.tensor_names = _tensor_paths(self._named(self.root), "_parameters")
        path = self.tensor_names.get(id(attr_val))
        if path is None:
            return attr_val
        if path not in parameter_proxy_cache:
            parameter_proxy_cache[path] = self.create_proxy("get_attr", path, (), {})
        return parameter_proxy_cache[path]

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if self.evaluating:
            return forward(*args, **kwargs)
        if type(m) in PASS_THROUGH and len(args) == 1 and not kwargs:
            return args[0]
        path = self.path_of_module(m)
        self.where.append((path, type(m)))
        try:
            if self.is_leaf_module(m, path):
                return self.create_proxy("call_module", path, args, kwargs)
            return forward(*args, **kwargs)
        finally:
            self.where.pop()

    def create_arg(self, a: Any) -> Any:
        kind = type(a)
        if kind is _Proxy or kind is fx.Proxy or kind is fx.proxy.Attribute:  # an attribute's node is made on first use
            return a.node
        if kind is tuple:
            return tuple([self.create_arg(e) for e in a])
        if kind is list:
            return [self.create_arg(e) for e in a]
        if kind is dict and all(type(k) is str for k in a):  # keyword arguments
            return {k: self.create_arg(v) for k, v in a.items()}
        if kind in PLAIN_ARGS:
            return a
        if kind is torch.Tensor:  # a buffer passed to an op (F.batch_norm's running statistics): its get_attr node
            if self.buffer_names is None:
                assert isinstance(self.root, nn.Module)
                self.buffer_names = _tensor_paths(self._named(self.root), "_buffers")
            path = self.buffer_names.get(id(a))
            if path is not None:
                return self.create_node("get_attr", path, (), {})
        if not self.tensor_attrs_ready and isinstance(a, _constant_attribute_types):
            self.tensor_attrs_ready = True  # fx's map of the modules' tensor attributes, made on first need
            assert isinstance(self.root, nn.Module)
            for path, module in self._named(self.root):
                prefix = f"{path}." if path else ""
                for key, value in vars(module).items():
                    if isinstance(value, _constant_attribute_types):
                        self.tensor_attrs.setdefault(value, prefix + key)  # type: ignore[arg-type]
        return super().create_arg(a)

    def _named(self, root: nn.Module) -> list[tuple[str, nn.Module]]:
        """`root.named_modules()`: the walk `_fx_trace` made when `root` is the model it gave."""
        return self.named if self.named and self.named[0][1] is root else list(root.named_modules())

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def concrete(self, proxy: fx.Proxy) -> bool | int | float:
        """The value of a traced size, comparison or other number the model's code branches on or converts
        (``if x.shape[-1] % 2``, ``int(h / 2)``), from the example input's shapes: the trace then follows the
        branch this input takes, as a forward pass would. The node is recorded (`Trace.branched`): a pruned
        model would take another branch if a width it reads changed, so the analysis pins those widths. A value
        computed from tensor data cannot be known from shapes: fx's refusal then stands (and the eager tracer
        takes over)."""
        value = self.values.value(proxy.node) if self.values is not None else None
        if isinstance(value, (bool, int, float)):
            assert self.values is not None
            self.values.trace.branched.append(self.values.node_refs[proxy.node].index)  # the sizes it reads are pinned
            return value
        raise fx.proxy.TraceError("symbolically traced variables cannot be used as inputs to control flow")

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.concrete(obj))

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_declared_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def create_node(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    name: str | None = None, type_expr: Any | None = None) -> fx.Node:
        """fx's node, with the innermost enclosing module in its meta (`_WHERE`). Made as `Graph.create_node`
        makes it, but for its scan of every argument for a symbolic size (a warning the trace here cannot
        need, its sizes being concrete; pytree's walk was a tenth of a small model's trace), where this torch's
        fx has the graph internals it uses; else by `Graph.create_node` itself."""
        graph = self.graph
        if _LEAN_NODES and graph.owning_module is None:
            namespace = graph._graph_namespace
            if name is None:
                try:
                    name = _target_name(target)
                except TypeError:  # an unhashable target
                    name = graph._target_to_str(target)
            name = _unique_name(namespace, name)
            node = fx.Node(graph, name, kind, target, args or (), kwargs or immutable_dict(), type_expr)
            namespace.associate_name_with_obj(name, node)
            graph._insert(node)
            graph._find_nodes_lookup_table.insert(node)
            graph._len += 1
        else:
            node = graph.create_node(kind, target, args, kwargs, name, type_expr)
        if self.where:
            node.meta[_WHERE] = self.where[-1]
        return node


@functools.lru_cache(maxsize=4096)
def _unpacks(code: CodeType) -> dict[int, int]:
    """{bytecode offset: n} of every ``UNPACK_SEQUENCE n`` in `code`: read once per function and process (a
    function's bytecode does not change; a model's forward and its helpers are a few hundred code objects)."""
    return {i.offset: int(i.argval) for i in dis.get_instructions(code) if i.opname == "UNPACK_SEQUENCE"}


class _Proxy(fx.Proxy):
    """fx's proxy, whose iteration reads each calling function's bytecode once per process: fx disassembles the
    caller's whole code at every ``a, b = x.shape``-style unpacking (a tenth of a second per HaloNet build).
    Iteration fx refuses (``(*x.shape[:-1], -1, d)``, as transformers' attention writes its view shapes; ``for``
    over a shape) goes over the value's elements as a forward pass would: a shape's length is its rank, and a
    tensor's is its first size, read as ``len()`` reads it (so pinned)."""

    def __iter__(self) -> Iterator[fx.Proxy]:
        # the caller's frame, not this one's (inspect.currentframe()): a frame held in its own locals is a reference
        # cycle, which kept every caller's frame and the trace they hold alive until the garbage collector ran
        caller = sys._getframe(1)
        tracer = self.tracer
        if not isinstance(tracer, _Tracer):
            return super().__iter__()
        code = caller.f_code
        count = _unpacks(code).get(caller.f_lasti)
        if count is None and tracer.values is not None and _has_value(self.node):
            value = tracer.values.value(self.node)
            count = len(value) if isinstance(value, (tuple, list)) else len(self) if isinstance(value, torch.Tensor) else None
        if count is not None:
            return (self[i] for i in range(count))  # type: ignore[index]  # Proxy.__getitem__ is made at import
        return tracer.iter(self)

    def keys(self) -> Any:
        """The names a ``**kwargs`` expansion of the forward's own ``**kwargs`` passes on: none (the trace is of a call
        with the example inputs alone); fx's rule for any other mapping."""
        if self.node.op == "placeholder" and str(self.node.target).startswith("**"):
            return []
        return super().keys()

    def __int__(self) -> int:
        assert isinstance(self.tracer, _Tracer)
        return int(self.tracer.concrete(self))

    def __index__(self) -> int:
        return self.__int__()

    def __len__(self) -> int:
        """``len(y[0])`` as a forward pass computes it: a tensor's first size, traced as ``y.size(0)`` and answered
        from the example input's shapes (so a width read this way is pinned, as by ``y.shape[0]``); the length of
        any other value (a tuple of outputs) as it is."""
        tracer = self.tracer
        if not isinstance(tracer, _Tracer) or tracer.values is None:
            return super().__len__()
        value = tracer.values.value(self.node)
        if isinstance(value, torch.Tensor):
            return int(tracer.concrete(self.size(0)))  # type: ignore[operator]  # Proxy.size is made at import
        return len(value)

    @classmethod
    def __torch_function__(cls, orig_method: Callable[..., Any], types: tuple[type, ...],
                           args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None) -> Any:
        """fx's rule for a torch function or tensor method called on proxies, with the proxies' tracer found by a walk
        of the plain tuples, lists and dicts the arguments are, not pytree's (a tenth of a trace); fx's own rule where
        another container, another tracer, a script method or a higher-order operator takes part."""
        args, kwargs = args or (), kwargs or {}
        tracers: set[Any] = set()
        if (_proxy_tracers(args, tracers) and _proxy_tracers(kwargs, tracers) and len(tracers) == 1
                and not isinstance(orig_method, (torch._C.ScriptMethod, torch._ops.HigherOrderOperator))):
            tracer = next(iter(tracers))
            if torch.overrides.is_tensor_method_or_property(orig_method):
                return tracer.create_proxy("call_method", orig_method.__name__, args, kwargs)
            return tracer.create_proxy("call_function", orig_method, args, kwargs,
                                       name=tracer.graph._target_to_str(orig_method.__name__))
        return super().__torch_function__(orig_method, types, args, kwargs)


_LEAVES = PLAIN_ARGS | {slice, torch.Tensor, nn.Parameter}
"""What pytree takes as a leaf among the arguments of a torch call on proxies."""


def _proxy_tracers(value: Any, tracers: set[Any]) -> bool:
    """Add the tracer of every proxy in `value` (plain tuples, lists and dicts walked) to `tracers`; False where
    `value` holds anything else whose insides pytree would walk (a named tuple, another container)."""
    kind = type(value)
    if isinstance(value, fx.Proxy):
        tracers.add(value.tracer)
        return True
    if kind is tuple or kind is list:
        return all(_proxy_tracers(v, tracers) for v in value)
    if kind is dict:
        return all(_proxy_tracers(v, tracers) for v in value.values())
    return kind in _LEAVES


def _tensor_paths(named: list[tuple[str, nn.Module]], kind: str) -> dict[int, str]:
    """id -> path of every parameter (`kind` "_parameters") or buffer ("_buffers") of the modules `named`, as
    `named_parameters()` / `named_buffers()` name them (a tensor held twice: its first path)."""
    paths: dict[int, str] = {}
    for path, module in named:
        for key, tensor in getattr(module, kind).items():
            if tensor is not None and id(tensor) not in paths:
                paths[id(tensor)] = f"{path}.{key}" if path else key
    return paths


_FX_STASHES = ("_tensor_constant", "_torchbind_obj", "_tree_spec_constant", "_opaque_obj")
"""The names under which fx's `create_arg` keeps a constant made during the forward on the traced model."""


def _has_value(node: fx.Node) -> bool:
    """Whether the trace knows `node`'s value: every node but a placeholder of an argument the example inputs do not
    give (the forward's *args and **kwargs are known: empty)."""
    return node.op != "placeholder" or str(node.target).startswith("*")


_MODULE_CALL = nn.Module.__call__
_MODULE_GETATTR = nn.Module.__getattr__


@contextlib.contextmanager
def _classes_patched(classes: set[type[nn.Module]], call: Callable[..., Any], getattr_: Callable[..., Any]) -> Iterator[None]:
    """`__call__` and `__getattr__` of each of `classes` set to `call` and `getattr_` for the duration, then
    restored exactly (removed where the class did not define its own, so that it inherits again)."""
    saved: list[tuple[type[nn.Module], str, Any]] = []
    try:
        for cls in classes:
            for name, fn in (("__call__", call), ("__getattr__", getattr_)):
                saved.append((cls, name, cls.__dict__.get(name, _ABSENT)))
                setattr(cls, name, fn)
        yield
    finally:
        for cls, name, before in reversed(saved):
            if before is _ABSENT:
                delattr(cls, name)
            else:
                setattr(cls, name, before)


_WHERE = "iee_deploy_where"
"""fx node meta key: (path, type) of the innermost module being traced when the node was created."""


@dataclass(frozen=True)
class Ref:
    """An argument that is the value of another node (by index in `Trace.nodes`)."""

    index: int


def ref_indices(arg: Any) -> list[int]:
    """The node indices an argument refers to, through tuples, lists, dicts and slices."""
    found: list[int] = []
    _collect_refs(arg, found)
    return found


def _collect_refs(arg: Any, found: list[int]) -> None:
    kind = type(arg)
    if kind in PLAIN_ARGS:  # most arguments (a permute's or view's sizes): no Ref in them
        return
    if kind is Ref:
        found.append(arg.index)
    elif isinstance(arg, (tuple, list)):
        for a in arg:
            _collect_refs(a, found)
    elif isinstance(arg, dict):
        for a in arg.values():
            _collect_refs(a, found)
    elif kind is slice:
        for a in (arg.start, arg.stop, arg.step):
            _collect_refs(a, found)


@dataclass
class Node:
    """One traced operation.

    `value` holds the node's result with every tensor replaced by a meta tensor of the same shape
    (so shapes and concrete sizes are known without keeping activations). `fn` re-applies the
    operation to other tensors (used on channel-id tensors for movement ops); for layers it is None.
    """

    name: str
    kind: str  # "input" | "attr" | "module" | "call" | "output"
    op: str  # canonical op name, e.g. "conv", "add", "view"; the module path for module nodes
    category: Category | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    where: str  # enclosing module path (and type) for messages
    value: Any
    fn: Callable[..., Any] | None = None
    module: nn.Module | None = None
    target: str = ""  # module path for layers, attribute path for attrs
    pinned: tuple[str, ...] = ()  # a layer's sides ("in", "out") whose channels may never be pruned

    @functools.cached_property
    def inputs(self) -> tuple[int, ...]:
        """The indices of the nodes its arguments refer to (`ref_indices`), found once: the analysis asks per node."""
        return tuple(ref_indices((self.args, self.kwargs)))


@dataclass
class Trace:
    nodes: list[Node] = field(default_factory=list)
    tracer: str = "fx"
    branched: list[int] = field(default_factory=list)  # nodes whose value the model's code branched on or converted


def _meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):  # the common case, without pytree's per-call overhead
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    return tree_map(lambda v: torch.empty(v.shape, dtype=v.dtype, device="meta") if isinstance(v, torch.Tensor) else v,
                    value)


def _empty(like: torch.Tensor, shape: Any) -> torch.Tensor:
    """A tensor of `shape` with `like`'s dtype and device: `like.new_empty(shape)`, a third of its cost (the
    shape shortcuts below make one per traced op)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _window(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a sliding window along one dim (torch's conv formula; < 1: torch refuses the input)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...] | None:
    """A plain conv's output shape by arithmetic (torch's meta conv costs ~0.1 ms a call); None where
    torch itself must decide (a bad input to refuse, a padding mode, layout or dtype its kernel treats apart)."""
    if (not isinstance(module, nn.modules.conv._ConvNd) or isinstance(module, nn.modules.conv._ConvTransposeNd)
            or not isinstance(x, torch.Tensor)):
        return None
    nd, shape = len(module.kernel_size), tuple(x.shape)  # a tuple: slicing a torch.Size costs microseconds
    weight = module._parameters.get("weight")  # its own parameter, without nn.Module's attribute lookup
    if (module.padding_mode != "zeros" or len(shape) not in (nd + 1, nd + 2) or shape[-nd - 1] != module.in_channels
            or x.dtype != (weight if weight is not None else module.weight).dtype or not x.is_contiguous()):
        return None
    if module.padding == "same":
        spatial = shape[-nd:]
    else:
        padding = (0,) * nd if isinstance(module.padding, str) else tuple(module.padding)  # "valid"
        spatial = tuple(_window(n, k, s, p, d) for n, k, s, p, d in
                        zip(shape[-nd:], module.kernel_size, module.stride, padding, module.dilation))
    if min(spatial, default=1) < 1:
        return None
    return (*shape[:-nd - 1], module.out_channels, *spatial)


_ADAPTIVE_POOLS: dict[type[nn.Module], int] = {
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3}


def _adaptive_pool_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...] | None:
    """An adaptive pool's output shape (its size, None entries keeping the input's); None where torch
    must decide (indices returned, a bad or empty input)."""
    nd = _ADAPTIVE_POOLS.get(type(module))
    if (nd is None or not isinstance(x, torch.Tensor) or getattr(module, "return_indices", False)
            or x.dim() not in (nd + 1, nd + 2) or 0 in x.shape):
        return None
    size: Any = module.output_size
    sizes = (size,) * nd if isinstance(size, int) else tuple(size)
    return (*x.shape[:-nd], *(n if s is None else s for n, s in zip(x.shape[-nd:], sizes)))


def _rnn_value(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An nn.LSTM's, GRU's or RNN's (output, h_n[, c_n]) on a batched input with no initial state, by arithmetic
    (torch's meta kernels run the recurrence step by step in Python: most of a Sequencer build); None where torch
    must decide (an initial state, an unbatched or packed input, a width other than the module's)."""
    if not isinstance(module, nn.RNNBase) or len(args) != 1 or kwargs:
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != module.input_size:
        return None
    directions = 2 if module.bidirectional else 1
    batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
    width = module.proj_size or module.hidden_size
    out = _empty(x, (batch, steps, directions * width) if module.batch_first else (steps, batch, directions * width))
    h = _empty(x, (directions * module.num_layers, batch, width))
    if isinstance(module, nn.LSTM):
        return out, (h, _empty(x, (directions * module.num_layers, batch, module.hidden_size)))
    return out, h


def _module_value(module: nn.Module, category: Category, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Output of a leaf module on meta inputs (weights replaced by meta tensors of their shape)."""
    x = args[0]
    shape = (_conv_shape(module, x) if category == "conv"
             else _adaptive_pool_shape(module, x) if category == "spatial" and len(args) == 1 and not kwargs else None)
    if shape is not None:
        return _empty(x, shape)
    if category == "conv" and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        assert isinstance(module, nn.modules.conv._ConvNd)
        weight = torch.empty(module.weight.shape, device="meta")
        return module._conv_forward(x, weight, None)  # type: ignore[operator]
    if category == "linear":
        assert isinstance(module, nn.Linear)
        return _empty(x, (*x.shape[:-1], module.out_features))
    if category in ("bn", "pointwise", "norm"):
        return _empty(x, x.shape)
    if category == "mixing" and (value := _rnn_value(module, args, kwargs)) is not None:
        return value
    if category in ("attention", "mixing", "conv"):  # run it on meta copies of its weights
        state = {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                 for k, v in (*module.named_parameters(), *module.named_buffers())}
        with torch.no_grad():
            return _meta(functional_call(module, state, args, kwargs))
    return module(*args, **kwargs)


_CATS = (torch.cat, torch.concat, torch.concatenate)


def _cat_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """torch.cat's output shape by arithmetic (its meta kernel is a Python decomposition, ~0.3 ms a call,
    most of DenseNet's trace); None where torch must decide (mixed dtypes or layouts, sizes that do not
    match, empty inputs, other arguments)."""
    if not args or len(args) > 2 or set(kwargs) - {"dim"}:
        return None
    tensors, dim = args[0], args[1] if len(args) == 2 else kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int):
        return None
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or not -first.dim() <= dim < first.dim():
        return None
    shape, dim = list(first.shape), dim % first.dim()
    for t in tensors:
        if (not isinstance(t, torch.Tensor) or t.dtype != first.dtype or t.dim() != len(shape) or not t.numel()
                or not t.is_contiguous() or any(a != b for d, (a, b) in enumerate(zip(t.shape, shape)) if d != dim)):
            return None
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return tuple(shape)


def _attention_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """F.scaled_dot_product_attention's output shape, (..., L, Ev) from query (..., L, E) and value (..., S, Ev):
    its meta kernel runs the whole math decomposition (tens of ms a call at ViT sizes). None where torch must
    decide (other than three same-dtype tensors of one batch shape that fit together)."""
    if len(args) < 3 or not all(isinstance(t, torch.Tensor) for t in args[:3]):
        return None
    q, k, v = args[:3]
    if (q.dim() < 2 or not q.dim() == k.dim() == v.dim() or not q.dtype == k.dtype == v.dtype
            or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2] or q.shape[-1] != k.shape[-1]
            or k.shape[-2] != v.shape[-2] or 0 in q.shape or 0 in k.shape or 0 in v.shape):
        return None
    return (*q.shape[:-1], v.shape[-1])


_REDUCTIONS = (torch.mean, torch.sum, torch.amax, torch.amin, torch.Tensor.mean, torch.Tensor.sum, torch.Tensor.amax,
               torch.Tensor.amin)


def _reduce_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """The output shape of a mean/sum/amax/amin of a float tensor over given dims (squeeze-excitation's
    ``x.mean((2, 3), keepdim=True)``: its meta kernel is a Python reference, ~1 ms a call). None where torch
    must decide (no or repeated dims, out of range, a dtype, an empty or non-float input)."""
    if not args or not isinstance(args[0], torch.Tensor) or len(args) > 3:
        return None
    x, given = args[0], dict(zip(("dim", "keepdim"), args[1:]))
    if set(kwargs) - {"dim", "keepdim"} or set(kwargs) & set(given):
        return None
    given.update(kwargs)
    dim, keepdim = given.get("dim"), given.get("keepdim", False)
    dims = (dim,) if type(dim) is int else tuple(dim) if isinstance(dim, (tuple, list)) else ()
    if (not dims or not all(type(d) is int and -x.dim() <= d < x.dim() for d in dims) or type(keepdim) is not bool
            or not x.is_floating_point() or 0 in x.shape):
        return None
    reduced = {d % x.dim() for d in dims}
    if len(reduced) != len(dims):
        return None
    return tuple(1 if d in reduced else n for d, n in enumerate(x.shape) if keepdim or d not in reduced)


def broadcast_shape(shapes: list[torch.Size]) -> tuple[int, ...] | None:
    """The shape the given shapes broadcast to (numpy's rule), None where they do not (torch then raises its own
    error). torch.broadcast_shapes runs a Python reference: tens of microseconds for every ``x * gamma``."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for shape in shapes:
        for i, n in enumerate(shape, rank - len(shape)):
            if n != out[i]:
                if out[i] != 1 and n != 1:
                    return None
                if out[i] == 1:
                    out[i] = n
    return tuple(out)


def _pad_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """F.pad's output shape with a constant fill: each of the last len(pad) / 2 dims grown by its pair. None where
    torch must decide (another mode, a negative pad, which crops, an odd or non-integer pad)."""
    given = dict(zip(("input", "pad", "mode", "value"), args))
    if set(kwargs) & set(given) or set(kwargs) - {"input", "pad", "mode", "value"}:
        return None
    given.update(kwargs)
    x, pad, mode = given.get("input"), given.get("pad"), given.get("mode", "constant")
    if (not isinstance(x, torch.Tensor) or mode != "constant" or not isinstance(pad, (tuple, list)) or len(pad) % 2
            or len(pad) // 2 > x.dim() or not all(type(p) is int and p >= 0 for p in pad)):
        return None
    shape = list(x.shape)
    for k in range(len(pad) // 2):
        shape[-1 - k] += pad[2 * k] + pad[2 * k + 1]
    return tuple(shape)


def _interpolate_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """F.interpolate's output shape by torch's rule (a `size`, or floor(input size x `scale_factor`)): its meta
    kernels for the linear modes are Python decompositions, tens of ms a call at CoaT's sizes. None where torch
    must decide (both or neither given, a recomputed or non-positive scale, a size of the wrong length, an empty
    or non-float input)."""
    names = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    if not args or not isinstance(args[0], torch.Tensor) or len(args) > 1 + len(names):
        return None
    x, given = args[0], dict(zip(names, args[1:]))
    if set(kwargs) - set(names) or set(kwargs) & set(given):
        return None
    given.update(kwargs)
    nd = x.dim() - 2
    size, scale = given.get("size"), given.get("scale_factor")
    if nd not in (1, 2, 3) or not x.is_floating_point() or 0 in x.shape or (size is None) == (scale is None):
        return None
    if size is not None:
        sizes = (size,) * nd if type(size) is int else tuple(size) if isinstance(size, (tuple, list)) else ()
        if len(sizes) != nd or not all(type(n) is int and n > 0 for n in sizes):
            return None
        return (*x.shape[:2], *sizes)
    if given.get("recompute_scale_factor"):
        return None
    scales = (scale,) * nd if isinstance(scale, (int, float)) else tuple(scale) if isinstance(scale, (tuple, list)) else ()
    if len(scales) != nd or not all(isinstance(f, (int, float)) and f > 0 for f in scales):
        return None
    out = tuple(math.floor(n * float(f)) for n, f in zip(x.shape[2:], scales))
    return (*x.shape[:2], *out) if min(out) > 0 else None


_NEW_DTYPE = frozenset({"to", "type", "type_as", "half", "float", "double", "bfloat16", "bool", "long", "int", "short",
                        "byte", "char", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
                        "logical_xor", "isnan", "isinf", "isfinite", "signbit", "where"})
"""Per-element ops whose result has another dtype than their first input (casts, comparisons, predicates)."""


def _keeps_dtype(fn: Callable[..., Any]) -> bool:
    """Whether the shape shortcut may give `fn`'s result its first input's dtype (else torch computes it)."""
    return getattr(fn, "__name__", "").strip("_") not in _NEW_DTYPE


def _meta_key(value: Any) -> Any:
    """What a meta kernel's result depends on in `value`: a meta tensor's shape, strides and dtype, any other
    value with its type (1, 1.0 and True give results of different dtypes). Raises TypeError for what no key
    describes (a tensor with data, an unhashable value)."""
    kind = type(value)
    if kind is torch.Tensor or kind is nn.Parameter:
        if not value.is_meta:
            raise TypeError("a tensor with data")
        return (kind, tuple(value.shape), value.stride(), value.dtype)
    if kind is tuple or kind is list or kind is immutable_list:
        return (kind, *(_meta_key(v) for v in value))
    if kind is dict or kind is immutable_dict:
        return (kind, *((k, _meta_key(v)) for k, v in value.items()))
    if kind is slice:
        return (kind, _meta_key(value.start), _meta_key(value.stop), _meta_key(value.step))
    hash(value)
    return (kind, value)


def _fresh(value: Any) -> Any:
    """A copy of a meta result with new tensors of the same shapes and strides (a node's value is its own)."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh(v) for v in value) if not hasattr(value, "_fields") else type(value)(
            *(_fresh(v) for v in value))
    return value


def _all_meta(value: Any) -> bool:
    """Whether every tensor in `value` (a tensor, or a tuple or list of them and other values) is a meta tensor."""
    if isinstance(value, torch.Tensor):
        return value.is_meta
    return all(_all_meta(v) for v in value) if isinstance(value, (tuple, list)) else True


def _memoised_call(memo: dict[Any, Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """fn(*args, **kwargs) on meta tensors, computed once per function and argument shapes in a trace (`memo`): a
    meta kernel written in Python (``Tensor.norm``, ``var``, ``F.pad``) costs a tenth of a millisecond to a
    millisecond a call, and a network repeats each at a handful of shapes. Not for in-place methods (the result
    aliases an argument), arguments no key describes, or results holding data."""
    name = getattr(fn, "__name__", "")
    if name.endswith("_") and not name.endswith("__"):
        return fn(*args, **kwargs)
    try:
        key = (fn, _meta_key(args), _meta_key(kwargs))
    except TypeError:
        return fn(*args, **kwargs)
    if key in memo:
        return _fresh(memo[key])
    value = fn(*args, **kwargs)
    if _all_meta(value):  # a result with data (a creation op's arange on the CPU) is its node's alone
        memo[key] = _fresh(value)  # a copy: an in-place op on the node's own value must not change the memo
    return value


def _linear_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """F.linear's output shape: the input's with its last size the weight's rows (None where torch must decide)."""
    given = dict(zip(("input", "weight", "bias"), args))
    given.update(kwargs)
    x, w, b = given.get("input"), given.get("weight"), given.get("bias")
    if (len(given) != len(args) + len(kwargs) or set(given) - {"input", "weight", "bias"}
            or not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor) or w.dim() != 2 or x.dim() < 1
            or x.shape[-1] != w.shape[1] or x.dtype != w.dtype or not x.is_floating_point()
            or (b is not None and (not isinstance(b, torch.Tensor) or tuple(b.shape) != (w.shape[0],)))):
        return None
    return (*x.shape[:-1], w.shape[0])


_FUNCTIONAL_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _functional_conv_shape(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """F.conv1d/2d/3d's output shape by arithmetic (timm's TF-'same' convolutions call it on their padded input;
    torch's meta kernel costs a tenth of a millisecond); None where torch must decide (a bad input, a string padding,
    a dtype or channel count its kernel refuses)."""
    nd = _FUNCTIONAL_CONVS[fn]
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    given = dict(zip(names, args))
    if len(args) > len(names) or set(kwargs) & set(given) or set(kwargs) - set(names):
        return None
    given.update(kwargs)
    x, w = given.get("input"), given.get("weight")
    if (not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor) or w.dim() != nd + 2
            or x.dim() not in (nd + 1, nd + 2) or x.dtype != w.dtype or not x.is_floating_point()):
        return None

    def per_dim(value: Any) -> tuple[int, ...] | None:
        values = (value,) * nd if type(value) is int else tuple(value) if isinstance(value, (tuple, list)) else ()
        return values if len(values) == nd and all(type(v) is int for v in values) else None

    stride, padding, dilation = (per_dim(given.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    groups, shape = given.get("groups", 1), tuple(x.shape)
    if (stride is None or padding is None or dilation is None or type(groups) is not int or groups < 1
            or shape[-nd - 1] != w.shape[1] * groups or w.shape[0] % groups or min(stride) < 1 or min(dilation) < 1
            or min(padding) < 0):
        return None
    spatial = tuple(_window(n, k, s, p, d) for n, k, s, p, d in zip(shape[-nd:], w.shape[2:], stride, padding, dilation))
    return (*shape[:-nd - 1], int(w.shape[0]), *spatial) if min(spatial) >= 1 else None


_STATISTICS: dict[Any, tuple[str, ...]] = {
    torch.norm: ("p", "dim", "keepdim"), torch.Tensor.norm: ("p", "dim", "keepdim"),
    torch.linalg.vector_norm: ("ord", "dim", "keepdim"),
    torch.var: ("dim", "unbiased", "keepdim"), torch.Tensor.var: ("dim", "unbiased", "keepdim"),
    torch.std: ("dim", "unbiased", "keepdim"), torch.Tensor.std: ("dim", "unbiased", "keepdim")}
"""Norms and moments over given dims -> their positional arguments after the input."""


def _statistic_shape(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """The output shape of a vector norm, variance or standard deviation over given dims (ConvNeXt-V2's GRN,
    RMS norms: their meta kernels are Python references, a millisecond a call); None where torch must decide (no
    dims, a matrix norm, a dtype, another argument)."""
    names = _STATISTICS[fn]
    if not args or len(args) - 1 > len(names):
        return None
    given = dict(zip(names, args[1:]))
    if set(kwargs) & set(given) or set(kwargs) - {*names, "correction"}:
        return None
    given.update(kwargs)
    order = given.get("p", given.get("ord", 2))
    if not isinstance(order, (int, float)) or isinstance(order, bool):
        return None
    if not isinstance(given.get("unbiased", True), bool) or not isinstance(given.get("correction", 0), (int, float)):
        return None
    return _reduce_shape((args[0], given.get("dim"), given.get("keepdim", False)), {})


def _by_arguments(rule: Callable[[tuple[Any, ...], dict[str, Any]], tuple[int, ...] | None]) -> _ShapeRule:
    return lambda fn, args, kwargs: rule(args, kwargs)


_ShapeRule = Callable[[Any, tuple[Any, ...], dict[str, Any]], "tuple[int, ...] | None"]
_SHAPE_RULES: dict[Any, _ShapeRule] = {
    F.linear: _by_arguments(_linear_shape), F.pad: _by_arguments(_pad_shape),
    F.interpolate: _by_arguments(_interpolate_shape), F.scaled_dot_product_attention: _by_arguments(_attention_shape),
    **{fn: _by_arguments(_reduce_shape) for fn in _REDUCTIONS}, **{fn: _by_arguments(_cat_shape) for fn in _CATS},
    **{fn: _functional_conv_shape for fn in _FUNCTIONAL_CONVS}, **{fn: _statistic_shape for fn in _STATISTICS}}
"""Function -> its output shape by arithmetic (None where torch must decide): the calls `_call_value` answers without
torch's meta kernels (a cat's result takes its first tensor's dtype, any other its first argument's)."""


_OPERATORS = frozenset(f for f in vars(operator).values() if callable(f) and not isinstance(f, type))
"""The `operator` module's functions: on plain numbers (traced sizes), a call costs less than its memo key."""


def _call_value(category: Category, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                memo: dict[Any, Any] | None = None) -> Any:
    """The meta result of a call; shape-preserving, broadcasting, concatenating, reducing, linear and attention ops
    skip torch's (slow) meta kernels, and any other call but a plain attribute read or index is computed once per
    argument shapes (`memo`, see `_memoised_call`)."""
    if category == "meta" or fn is operator.getitem:  # sizes, attributes, indexing: cheaper than any rule or key
        return fn(*args, **kwargs)
    rule = _SHAPE_RULES.get(fn)
    if rule is not None:
        shape = rule(fn, args, kwargs)
        if shape is not None:
            return _empty(args[0][0] if fn in _CATS else args[0], shape)
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if tensors and category in ("pointwise", "elementwise") and _keeps_dtype(fn):  # fresh meta tensors, as in eager
        shapes = [t.shape for t in tensors]
        same = all(s == shapes[0] for s in shapes)
        common = shapes[0] if same else broadcast_shape(shapes)
        if common is not None:
            return _empty(tensors[0], common)
    if category in ("norm", "bn") and args and isinstance(args[0], torch.Tensor):  # keep their input's shape (the
        return _empty(args[0], args[0].shape)  # meta kernels of F.layer_norm/batch_norm are decompositions: ms a call)
    if memo is None or not tensors and fn in _OPERATORS:  # plain numbers (sizes compared, as TF-'same' padding does
        return fn(*args, **kwargs)  # per conv): cheaper than their key
    return _memoised_call(memo, fn, args, kwargs)


def _where(path: str, module: nn.Module | None) -> str:
    kind = f" ({type(module).__name__})" if module is not None else ""
    return f"'{path or '<model>'}'{kind}"


# --------------------------------------------------------------------------------------------- fx


def _holds_tensor(value: Any) -> bool:
    """Whether `value` is a tensor or a tuple, list or dict holding one (pytree's flatten, without its
    per-node type lookups: this runs once per traced node)."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    return isinstance(value, dict) and any(_holds_tensor(v) for v in value.values())


class _FxValues:
    """Turns the nodes of the fx graph being traced into `Trace` nodes with their meta values, in graph order:
    all of them once the trace is done, or, while it runs, those up to a value the model's own code asks for
    (`_Tracer.concrete`)."""

    def __init__(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], tracer: _Tracer,
                 named: list[tuple[str, nn.Module]]) -> None:
        self.model, self.inputs, self.tracer = model, inputs, tracer
        self.trace = Trace(tracer="fx")
        self.placeholders = 0
        self.data: set[fx.Node] = set()  # tensors computed from an input; an unknown op on none of them: a constant
        self.modules = dict(named)  # fx names each module by its first path here (path_of_module)
        self.last: fx.Node | None = None  # the last node converted
        self.memo: dict[Any, Any] = {}  # meta results by function and argument shapes (`_memoised_call`)
        self.node_refs: dict[fx.Node, Any] = {}  # each converted node's Ref (its index) and value
        self.node_values: dict[fx.Node, Any] = {}
        self.wheres: dict[tuple[str, Any], str] = {}  # (module path, type) -> its `Node.where`

    def value(self, node: fx.Node) -> Any:
        """The meta value of `node` (every node before it converted first), computed while fx is tracing: with
        its patches of nn.Module's calls and attributes switched off meanwhile (`_Tracer.evaluating`)."""
        evaluating, self.tracer.evaluating = self.tracer.evaluating, True
        try:
            self.extend(node)
        finally:
            self.tracer.evaluating = evaluating
        return self.node_values[node]

    def extend(self, until: fx.Node | None = None) -> None:
        """Convert the graph's nodes not converted yet, up to `until` (None: all): from the node after the last one
        converted, along the graph's linked list (fx's own sentinel, op "root", ends it), so that a model branching on
        sizes at every block costs one pass over its nodes, not one per branch."""
        n = self.last.next if self.last is not None else next(iter(self.tracer.graph.nodes), None)
        while n is not None and n.op != "root":
            self._add(n)
            self.last = n
            if n is until:
                return
            n = n.next

    def _value_of(self, arg: Any) -> Any:
        """`arg` with each fx node replaced by its value (fx's native `map_arg`: its lists and dicts come back
        immutable)."""
        return map_arg(arg, self.node_values.__getitem__)

    def _refs(self, arg: Any) -> Any:
        """`arg` with each fx node replaced by its Ref."""
        return map_arg(arg, self.node_refs.__getitem__)

    def _add(self, n: fx.Node) -> None:
        at = n.meta.get(_WHERE, ("", type(self.model)))
        where = self.wheres.get(at)
        if where is None:  # one string per enclosing module, not per node
            where = self.wheres[at] = f"'{at[0] or '<model>'}' ({getattr(at[1], '__name__', at[1])})"
        args, kwargs = self._refs(n.args), self._refs(n.kwargs) if n.kwargs else {}
        reads_data = n.op == "placeholder" or not self.data.isdisjoint(n.all_input_nodes)
        if n.op == "placeholder":
            if self.placeholders < len(self.inputs):
                value = _meta(self.inputs[self.placeholders])
            elif n.args:
                value = n.args[0]
            elif str(n.target).startswith("*"):  # the forward's *args or **kwargs: none beyond the example inputs
                value = {} if str(n.target).startswith("**") else ()
            else:
                raise UserError(f"the model's forward takes input '{n.name}' but only {len(self.inputs)} example "
                                "input(s) were given", "pass one example tensor per forward argument")
            node = Node(n.name, "input", "input", None, (), {}, where, value)
            self.placeholders += 1
        elif n.op == "get_attr":
            attr: Any = self.model
            for part in str(n.target).split("."):
                attr = getattr(attr, part)
            stashed = str(n.target).startswith(_FX_STASHES) and isinstance(attr, torch.Tensor) and attr.dim() == 0
            value = attr if stashed else _meta(attr)  # a scalar the forward made (a fill value, a stride): as it is
            node = Node(n.name, "attr", "attr", None, (), {}, where, value, target=str(n.target))
        elif n.op == "call_module":
            module = self.modules[str(n.target)]
            module_where = _where(str(n.target), module)
            category = classify_module(module, module_where)
            node = Node(n.name, "module", type(module).__name__, category, args, kwargs, module_where,
                        _module_value(module, category, self._value_of(n.args), self._value_of(n.kwargs)),
                        module=module, target=str(n.target))
        elif n.op == "call_function":
            op, category = classify_function(n.target, where, constant=not reads_data)
            fn = n.target
            assert callable(fn)
            node = Node(n.name, "call", op, category, args, kwargs, where,
                        _call_value(category, fn, self._value_of(n.args), self._value_of(n.kwargs), self.memo), fn=fn)
        elif n.op == "call_method":
            name = str(n.target)
            op, category = classify_method(name, where, constant=not reads_data)
            fn = getattr(torch.Tensor, name)
            node = Node(n.name, "call", op, category, args, kwargs, where,
                        _call_value(category, fn, self._value_of(n.args), self._value_of(n.kwargs), self.memo), fn=fn)
        else:  # output
            node = Node(n.name, "output", "output", None, args, {}, where, self._value_of(n.args[0]))
        self.node_refs[n], self.node_values[n] = Ref(len(self.trace.nodes)), node.value
        self.trace.nodes.append(node)
        if reads_data and _holds_tensor(node.value) and makes_data(
                node.op, node.category, n.op == "placeholder" or bool(n.args) and n.args[0] in self.data):
            self.data.add(n)


_ABSENT = object()
"""A value no attribute holds: what `_state_kept` compares an attribute added during the trace with."""


def _traced_value(value: Any) -> bool:
    """Whether `value` is a product of a trace (an fx proxy, a meta tensor) rather than of a forward pass."""
    return isinstance(value, fx.Proxy) or isinstance(value, torch.Tensor) and value.is_meta


@contextlib.contextmanager
def _state_kept(modules: list[nn.Module]) -> Iterator[None]:
    """Undo what a traced forward writes into the model's modules: an attribute or buffer set to a traced value is
    restored (or removed), and an entry holding one is dropped from a module's public dict (LeViT's and EfficientViT's
    eval-mode `attention_bias_cache`, keyed by the traced device). Kept, such an entry is a stale proxy that
    holds the whole trace alive and that the next trace of the same model reads back as its own."""
    # torch.nn's own layers and containers write nothing in an eval-mode forward: only the model's own classes are
    # watched (a fifth of a timm CNN's modules; copying every module's state cost a tenth of a small model's build)
    before = [(m, dict(vars(m)), dict(m._buffers)) for m in modules
              if not type(m).__module__.startswith("torch.nn.")]
    public_dicts = [value for _, attrs, _ in before for key, value in attrs.items()  # torch's own dicts are `_`-named
                    if isinstance(value, dict) and key[0] != "_"]
    try:
        yield
    finally:
        for module, attrs, buffers in before:
            now = vars(module)
            _undo(now, attrs, [key for key, value in now.items() if value is not attrs.get(key, _ABSENT)])  # set or added
            _undo(module._buffers, buffers, list(module._buffers))  # a buffer registered or set by the traced forward
        for value in public_dicts:  # a public dict, filled in place
            for stale in [k for k, v in value.items() if _traced_value(v)]:
                del value[stale]


def _undo(now: dict[str, Any], before: dict[str, Any], keys: list[str]) -> None:
    """Of `keys`, restore each entry of `now` that holds a traced value to its value in `before` (remove it if new)."""
    for key in keys:
        if _traced_value(now[key]):
            if key in before:
                now[key] = before[key]
            else:
                del now[key]


def _fx_trace(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Trace:
    named = list(model.named_modules())  # one walk of the model for the whole trace
    tracer = _Tracer(named)
    tracer.values = _FxValues(model, inputs, tracer, named)
    before = set(vars(model))
    with _state_kept([m for _, m in named]):
        try:
            tracer.trace(model)
            tracer.values.extend()
        finally:  # fx stashes a tensor made in forward (not an attribute of the model) on the model itself
            for key in [k for k in vars(model) if k not in before and k.startswith(_FX_STASHES)]:
                delattr(model, key)
    return tracer.values.trace


# ------------------------------------------------------------------------------------------ eager


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the duration, then restored: a graph build allocates
    tens of thousands of short-lived objects, and the collector's passes over a large heap (torch, timm
    imported) cost 5-10% of a build. Cycles made meanwhile are collected once it runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no BN statistics update, no dropout) and restore every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class _Recorder(TorchFunctionMode):
    """Records torch function calls made outside leaf layers; leaf layers are recorded by hooks."""

    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace
        self.node_of: dict[int, int] = {}  # id(tensor) -> node index
        self.alive: list[Any] = []  # keeps traced tensors alive so that ids are not reused
        self.stack: list[tuple[str, nn.Module]] = []
        self.leaf_depth = 0
        self.counter: dict[str, int] = {}
        self.names: dict[int, str] = {}  # id(parameter or buffer) -> its path in the model
        self.data: set[int] = set()  # nodes computed from an input; an unknown op on none of them makes a constant

    def where(self) -> str:
        path, module = self.stack[-1] if self.stack else ("", None)
        return _where(path, module)

    def ref(self, value: Any) -> Any:
        def one(v: Any) -> Any:
            if not isinstance(v, torch.Tensor):
                return v
            if id(v) not in self.node_of:  # a parameter or buffer read directly in forward
                self.add(Node(f"attr_{len(self.trace.nodes)}", "attr", "attr", None, (), {}, self.where(), _meta(v),
                              target=self.names.get(id(v), "")), v, data=False)
            return Ref(self.node_of[id(v)])

        return tree_map(one, value)

    def add(self, node: Node, result: Any, data: bool = True) -> None:
        """Append `node` (`data`: computed from an input); tensors in a tuple result get one getitem node each."""
        self.trace.nodes.append(node)
        index = len(self.trace.nodes) - 1
        if data:
            self.data.add(index)
        if isinstance(result, torch.Tensor):
            self.node_of[id(result)] = index
            self.alive.append(result)
        elif isinstance(result, (tuple, list)):
            for i, v in enumerate(result):
                if isinstance(v, torch.Tensor):
                    self.add(Node(f"{node.name}_{i}", "call", "getitem", "movement", (Ref(index), i), {}, node.where,
                                  _meta(v), fn=operator.getitem), v, data)

    def name(self, op: str) -> str:
        self.counter[op] = self.counter.get(op, 0) + 1
        return op if self.counter[op] == 1 else f"{op}_{self.counter[op] - 1}"

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.leaf_depth:
            return func(*args, **kwargs)
        qualname = getattr(func, "__qualname__", "")
        reads_data = any(isinstance(t, torch.Tensor) and self.node_of.get(id(t)) in self.data
                         for t in tree_flatten((args, kwargs))[0])
        if qualname.startswith(("TensorBase.", "Tensor.")):
            op, category = classify_method(func.__name__, self.where(), constant=not reads_data)
        elif getattr(func, "__name__", "") == "__get__":  # a property such as x.shape or x.device
            op, category = "getattr", "meta"
        else:
            op, category = classify_function(func, self.where(), constant=not reads_data)
        result = func(*args, **kwargs)
        if category != "meta":
            node = Node(self.name(op), "call", op, category, self.ref(args), self.ref(kwargs), self.where(),
                        _meta(result), fn=func)
            first = bool(args) and isinstance(args[0], torch.Tensor) and self.node_of.get(id(args[0])) in self.data
            self.add(node, result, reads_data and makes_data(op, category, first))
        else:
            self._size_read(func, args, kwargs, result)
        return result

    def _size_read(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        """Record a read of a traced tensor's sizes (x.size(k), x.numel(), len(x); x.shape and x.size(): every dim,
        as a torch.Size cannot tell which ones the code takes) as a node the analysis pins (`Trace.branched`): a
        forward pass turns them into plain numbers whose use (a branch, a scale) is not seen, so every width read
        this way is kept; spatial and batch sizes hold one unit and pin nothing."""
        name = getattr(func, "__name__", "")
        tensor = args[0] if args else None
        if not isinstance(tensor, torch.Tensor) or id(tensor) not in self.node_of:
            return
        source = Ref(self.node_of[id(tensor)])
        if name == "__get__" and getattr(getattr(func, "__self__", None), "__name__", "") == "shape":
            node_args: tuple[Any, ...] = (source, "shape")
            op = "getattr"
        elif name == "size":
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            node_args, op = ((source,) if dim is None else (source, dim)), "size"
        elif name == "numel":
            node_args, op = (source,), "numel"
        elif name == "__len__":
            node_args, op = (source, 0), "size"
        else:
            return
        self.trace.nodes.append(Node(self.name(op), "call", op, "meta", node_args, {}, self.where(), result, fn=func))
        self.trace.branched.append(len(self.trace.nodes) - 1)


def _leaf_modules(model: nn.Module) -> dict[nn.Module, str]:
    tracer = _Tracer()
    return {m: name for name, m in model.named_modules() if name and tracer.is_leaf_module(m, name)}


def _eager_trace(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Trace:
    trace = Trace(tracer="eager")
    rec = _Recorder(trace)
    rec.names = {id(t): name for name, t in (*model.named_parameters(), *model.named_buffers())}
    leaves = _leaf_modules(model)
    names = {m: name for name, m in model.named_modules()}
    handles = []

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        rec.stack.append((names[module], module))
        if module in leaves:
            if rec.leaf_depth == 0:
                classify_module(module, rec.where())
            rec.leaf_depth += 1

    def post(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        rec.stack.pop()
        if module not in leaves:
            return
        if rec.leaf_depth == 1:  # still > 0 while recording, so nothing done here is traced itself
            category = classify_module(module, _where(leaves[module], module))
            node = Node(leaves[module], "module", type(module).__name__, category, rec.ref(args), rec.ref(kwargs),
                        _where(leaves[module], module), _meta(output), module=module, target=leaves[module])
            rec.add(node, output)
        rec.leaf_depth -= 1

    for module in names:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        for i, x in enumerate(inputs):
            rec.add(Node("input" if len(inputs) == 1 else f"input_{i}", "input", "input", None, (), {}, "'<model>'",
                         _meta(x)), x)
        with eval_mode(model), torch.no_grad(), rec:
            out = model(*inputs)
        trace.nodes.append(Node("output", "output", "output", None, (rec.ref(out),), {}, "'<model>'", _meta(out)))
    finally:
        for handle in handles:
            handle.remove()
    return trace


def trace_model(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...],
                tracer: str = "auto") -> Trace:
    """Trace `model` on `example_input` with torch.fx, falling back to eager recording ('auto').

    `tracer` may force "fx" or "eager". A UserError (unsupported op) is raised by either front end
    and is never hidden by the fallback.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if tracer not in ("auto", "fx", "eager"):
        raise UserError(f"unknown tracer '{tracer}'", "choose auto, fx or eager")
    if tracer in ("auto", "fx"):
        try:
            return _fx_trace(model, inputs)
        except UserError:
            raise
        except Exception as exc:
            if tracer == "fx":
                raise UserError(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc})",
                                "use tracer='eager' (or 'auto')") from None
    return _eager_trace(model, inputs)
