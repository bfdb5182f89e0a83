"""Run-time proof of what the fast engine assumes, for every batch.

The closed forms in :mod:`~lightning_dynamical.scoring.layers` are exact for a parameter only if

1. it is consumed by exactly one call of a covered function (``F.linear``, ``conv2d``, ...), and by nothing
   else: no second call (tied weights), no functional reuse (``h @ emb.weight.T``), no op hidden from Python;
2. dim 0 of that call's input holds the samples, one row each (a seq-first encoder feeds ``(T, B, E)``,
   which looks batch-first when ``T == B``);
3. samples are independent in the forward, so the output gradient's rows are per-sample gradients (given a
   loss that sums per-sample losses, each of its own logits row, as the task states with
   :attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`; the engines check that statement first);
4. the call's input is not changed in place afterwards.

A :class:`Watch` (a ``TorchFunctionMode``) sees every torch function that receives a selected parameter
during the forward and records the covered calls (1). The autograd graph is walked to count the nodes that
consume each parameter, which catches uses the mode cannot see (1). Two probe forwards of other counts of samples
than the batch (:func:`probe_positions`) must reproduce each covered call's input rows and the logits (2, 3); their
:class:`ProbeEvidence` holds for every later batch with the same :func:`proof_key` (same model version, inputs'
shapes and forward signature), the rest is checked on every batch. A batch whose samples all have the same inputs
cannot show (2) or (3) by values: its covered calls go to the exact path and its evidence is not kept. Anything not
proven goes to an exact path, with the reason.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_leaves

from lightning_dynamical.scoring.exact import buffers_kept
from lightning_dynamical.scoring.layers import OpCall, bind
from lightning_dynamical.scoring.layers.broadcast import BROADCAST, VIEW_OPS, View, bind_broadcast
from lightning_dynamical.scoring.norm_gradients import guard
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits, same_inputs, take
from lightning_dynamical.tasks.classification import CLASSIFICATION


@dataclass(eq=False)
class Site:
    """One covered call that consumed selected parameters during the forward."""

    index: int
    call: OpCall
    names: dict[str, str]
    version: int
    out: Tensor | None = None
    edge: GradientEdge | None = None
    problem: str | None = None
    wanted: dict[str, str] = field(default_factory=dict)

    def local(self, directions: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The directions restricted to this call's proven parameters, keyed by their role in the call."""
        return [{attr: v[name] for attr, name in self.wanted.items()} for v in directions]

    @property
    def active(self) -> bool:
        """Whether some of its parameters are proven covered (its statistics are then computed)."""
        return bool(self.wanted)


GradientHook = Callable[[Site, Tensor], None]


class Watch(TorchFunctionMode):
    """Records every use of the selected parameters during a forward; hooks covered calls' output gradients.

    View ops on a parameter (``reshape``, ``expand``, ...) are followed, not counted as uses, so that
    ``x * gamma.reshape(1, -1, 1, 1)`` or ``cat([cls_token.expand(B, -1, -1), x], 1)`` is one covered call.
    With ``batch`` known, an embedding looked up with one row of indices for the whole batch (position ids
    ``(1, T)``) returns its output expanded to the batch (same values), so that each sample's gradient
    arrives separately; ``expanded`` says whether that happened. A model that reduces over that dim gets other
    values, which the probes' logits show (other counts of samples); one that indexes or reorders it keeps its values,
    which ``unsound_expansion`` reports (:meth:`_follow_copies`); the fast engine then scores without expanding.
    """

    def __init__(self, params: Mapping[str, Tensor], hook: GradientHook | None = None, batch: int | None = None,
                 expand: bool = True) -> None:
        super().__init__()
        self.ids = {id(p): n for n, p in params.items()}
        self.hook = hook
        self.batch = batch
        self.expand = expand
        self.expanded = False
        self.unsound_expansion: str | None = None
        self._copies: dict[int, Tensor] = {}  # lookups expanded to the batch and what only they make, by id
        self.sites: list[Site] = []
        self.uses: dict[str, list[tuple[str, Site | None]]] = defaultdict(list)
        self.views: dict[int, tuple[View, Tensor]] = {}
        self.trace: list[tuple[Any, tuple[Any, ...]]] = []

    def _name(self, t: Any) -> str | None:
        if id(t) in self.ids:
            return self.ids[id(t)]
        if id(t) in self.views:
            return self.ids[id(self.views[id(t)][0].param)]
        return None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        guard(func, out)
        leaves = _leaves(args, kwargs)
        self.trace.append((func, tuple(map(_signature, leaves))))
        if self._copies:
            self._follow_copies(func, leaves, out)
        ids, views = self.ids, self.views
        found = [t for t in leaves if id(t) in ids or id(t) in views]
        if not found:
            return out
        names_found = sorted(str(self._name(t)) for t in found)
        if func in VIEW_OPS and len(found) == 1 and args and args[0] is found[0] and isinstance(out, Tensor):
            view = self.views[id(found[0])][0] if id(found[0]) in self.views else View(found[0])
            self.views[id(out)] = (view.then(func, args[1:], kwargs, self.batch or 0, found[0], out), out)
            return out
        call = bind(func, args, kwargs) if not any(id(t) in self.views for t in found) else None
        if call is None and len(found) == 1 and self.batch is not None:
            view = self.views[id(found[0])][0] if id(found[0]) in self.views else View(found[0])
            bound = bind_broadcast(func, args, kwargs, out, found[0], view, self.batch)
            if bound is not None:
                op, spec, x = bound
                call = OpCall(op, BROADCAST, spec, x, {"weight": found[0]})
        names = {} if call is None else {r: str(self._name(t)) for r, t in call.roles.items()
                                         if self._name(t) is not None}
        if call is None or sorted(names.values()) != names_found:
            if not _differentiable(out):
                return out
            what = function_name(func)
            for name in names_found:
                self.uses[name].append((what, None))
            return out
        expanding = (call.op == "embedding" and self.expand and self.batch is not None and self.batch > 1
                     and call.a.ndim > 0 and call.a.shape[0] == 1 and isinstance(out, Tensor)
                     and out.shape[:1] == (1,))
        if expanding:
            size = int(self.batch or 0)
            out = out.expand(size, *out.shape[1:])
            call.a = call.a.expand(size, *call.a.shape[1:])
            self.expanded = True
        site = Site(len(self.sites), call, names, call.a._version)
        self.sites.append(site)
        for name in names.values():
            self.uses[name].append((f"{call.op} (call {site.index})", site))
        out = self._hook(site, out)
        if expanding:
            self._copies[id(out)] = out
        return out

    def _follow_copies(self, func: Any, leaves: list[Any], out: Any) -> None:
        """An expanded lookup is one row per sample only while every op on it keeps dim 0 the batch: a reduction over
        that dim, an index into it or a move of it (``pos[0]``, ``pos.mean(0)``) would hand each sample's gradient to
        other rows, with the model's values unchanged (so the probe cannot see it); ``unsound_expansion`` says so.
        Outputs of ops on copies alone are copies too."""
        copies = self._copies
        if not any(isinstance(t, Tensor) and id(t) in copies for t in leaves):
            return
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if any(t.ndim == 0 or t.shape[0] != self.batch for t in outs) or _moves_rows(func, leaves):
            self.unsound_expansion = (f"{function_name(func)} changes the batch dim of a lookup expanded to the batch "
                                      "(e.g. reduces over it, indexes it or reorders it)")
            return
        batched = [t for t in leaves if isinstance(t, Tensor) and t.ndim and t.shape[0] == self.batch]
        if all(id(t) in copies for t in batched):
            copies.update((id(t), t) for t in outs)

    def drop_outputs(self) -> None:
        """Forget the covered calls' outputs once :func:`prove` has read them (their hooks and gradient edges stay):
        held to the end of the backward, outputs no later op saves would outlive their use, as in no training
        step."""
        for site in self.sites:
            site.out = None

    def release(self) -> None:
        """Drop every tensor this watch holds. A hooked output references its site through the hook, and the site
        references the output: a cycle through autograd's C++ storage that Python's collector cannot free."""
        for site in self.sites:
            site.out = site.edge = None
            site.call.a = site.call.a.new_empty(0)
        self.sites.clear()
        self.views.clear()
        self.uses.clear()
        self.trace.clear()
        self._copies.clear()

    def _hook(self, site: Site, out: Any) -> Any:
        """Keep the output and hook its gradient (registered now: before any in-place change downstream)."""
        if not isinstance(out, Tensor):
            site.problem = f"{site.call.op} returned {type(out).__name__}"
            return out
        if self.hook is None:
            site.out = out
            return out
        if not torch.is_grad_enabled():
            site.problem = f"{site.call.op} ran without gradients (e.g. inside reentrant checkpointing)"
            return out
        replaced = out
        if not out.requires_grad:  # nothing upstream needs grad: restart the graph here
            replaced = out.detach().requires_grad_().clone()
        site.out = replaced
        site.edge = get_gradient_edge(replaced)
        hook = self.hook
        replaced.register_hook(lambda d: hook(site, d))
        return replaced


#: Ops that can move rows along dim 0 while keeping its size (``flip(0)``, ``pos[perm]``): on a lookup expanded to the
#: batch they would hand a sample's gradient to another sample's row.
ROW_MOVERS = frozenset({
    "flip", "roll", "index_select", "gather", "take_along_dim", "sort", "argsort", "msort", "scatter", "scatter_add",
    "scatter_reduce", "index_add", "index_copy", "index_put", "index_fill", "masked_scatter", "take", "put", "cumsum",
    "cumprod", "cummax", "cummin", "logcumsumexp", "diff", "topk", "kthvalue", "unique", "unique_consecutive",
})


def _moves_rows(func: Any, leaves: list[Any]) -> bool:
    """Whether a call may move rows along dim 0: an op of :data:`ROW_MOVERS`, or an index whose first entry is not a
    full slice (``pos[idx]``; ``pos[:, :T]`` and ``pos[..., 0]`` keep the rows)."""
    name = getattr(func, "__name__", "")
    if name.rstrip("_") in ROW_MOVERS:
        return True
    if name != "__getitem__" or len(leaves) < 2:
        return False
    first = leaves[1]
    return not (first is Ellipsis or isinstance(first, slice) and first == slice(None))


_NESTED = (list, tuple, dict)


def _leaves(args: tuple, kwargs: Mapping[str, Any]) -> list[Any]:
    """The leaves of a call's arguments (lists, tuples and dicts opened): ``tree_leaves`` without its per-node
    dispatch, which costs more than the rest of the watch on small layers."""
    if not kwargs and not any(isinstance(x, _NESTED) for x in args):
        return list(args)
    out: list[Any] = []
    stack: list[Any] = [*reversed(list(kwargs.values())), *reversed(args)]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        else:
            out.append(x)
    return out


_VALUES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout)


def _signature(leaf: Any) -> Any:
    """What a call's argument contributes to the forward's signature: a tensor's shape and dtype (not its
    values), a plain value itself, a slice as a tuple, anything else its type."""
    if isinstance(leaf, Tensor):
        return leaf.shape, leaf.dtype
    if isinstance(leaf, _VALUES):
        return leaf
    if isinstance(leaf, slice):
        return "slice", leaf.start, leaf.stop, leaf.step
    return type(leaf)


def _differentiable(out: Any) -> bool:
    """Whether an output can carry gradient back to a parameter (``.dtype``, ``.shape``, ``.detach()`` cannot)."""
    tensors = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
    return any(t.requires_grad for t in tensors) if torch.is_grad_enabled() else bool(tensors)


def function_name(func: Any) -> str:
    """A readable name for a torch function: ``Tensor.T``, ``Tensor.mul``, ``torch.addmm``, ``F.linear``."""
    owner = getattr(func, "__self__", None)
    if type(owner).__name__ == "getset_descriptor":  # a property such as Tensor.T
        return f"Tensor.{getattr(owner, '__name__', '?')}"
    name = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func)))
    prefixes = (("_TensorBase.", "Tensor."), ("TensorBase.", "Tensor."), ("_VariableFunctionsClass.", "torch."))
    for prefix, short in prefixes:
        if name.startswith(prefix):
            return short + name[len(prefix):]
    return name


def consumers(root: Tensor, params: Mapping[str, Tensor]) -> dict[str, int]:
    """How many autograd nodes consume each parameter in the graph of ``root`` (0: not in the graph)."""
    ids = {id(p): n for n, p in params.items()}
    counts = dict.fromkeys(params, 0)
    if root.grad_fn is None:
        return counts
    seen = {root.grad_fn}
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            variable = getattr(nxt, "variable", None)
            if variable is not None and id(variable) in ids:
                counts[ids[id(variable)]] += 1
            elif nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return counts


def _close(probe: Tensor, full: Tensor) -> bool:
    """Whether a probe tensor reproduces the corresponding batch rows (shape, and values up to rounding)."""
    if probe.shape != full.shape or probe.dtype != full.dtype:
        return False
    if not probe.is_floating_point():
        return bool(torch.equal(probe, full))
    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(probe.dtype, 1e-2)
    scale = full.detach().abs().max().clamp_min(1e-30)
    return bool(((probe.detach() - full.detach()).abs().max() <= tol * scale).item())


def probe_positions(inputs: Inputs) -> tuple[list[list[int]], bool]:
    """The samples of each probe forward, and whether the batch has samples with different inputs.

    Two probes of the batch's last sample ``L`` and the first sample ``O`` whose inputs differ from it, taken
    alternately: ``L, O, L, ...`` as many as the smallest count of two or more that shares no factor with the batch
    size (3 for a batch of 32 or of 2, 2 for odd batches), then ``O, L, O, ...`` as many as the smallest odd such
    count of three or more. Each has another count than the batch, so that an input whose dim 0 is not the batch
    (a sequence-first ``(T, B, E)``) has other shapes in the probe than the batch's rows, and an op that reduces over
    a lookup expanded to the batch gives other logits; the first has ``L`` at least as often as ``O``, the second
    ``O`` more often than ``L``, so that their means differ and a mean over the batch (centring, standardising)
    equals at most one of them, whatever the other samples are; counts prime to the batch size, so that a batch of
    the two inputs alone (``[A, B, A, B]``) cannot have either probe's proportions; at least two samples, so that a
    parameter broadcast to the batch (``cls_token.expand(B, -1, -1)``) is not taken for a sample's row; the last
    sample first, so that a layout mix-up cannot pass unnoticed. ``False`` when every sample has the same inputs
    (one probe then): no probe can tell their rows apart."""
    b = batch_size(inputs)
    last = b - 1
    other = next((j for j in range(last) if not same_inputs(inputs, j, last)), None)
    first = next(n for n in itertools.count(2) if math.gcd(n, b) == 1)
    pair = (last, 0 if other is None else other)
    probes = [[pair[k % 2] for k in range(first)]]
    if other is not None:
        second = next(n for n in itertools.count(3, 2) if math.gcd(n, b) == 1)
        probes.append([pair[(k + 1) % 2] for k in range(second)])
    return probes, other is not None


def samples_independent(model: Any, inputs: Inputs, logits: Tensor, task: Task = CLASSIFICATION) -> bool:
    """Whether the batch's ``logits`` are reproduced by no-grad forwards of each of :func:`probe_positions`' probes
    alone (``False`` where every sample has the same inputs: nothing shows it then); buffers are left as they were."""
    probes, informative = probe_positions(inputs)
    if not informative:
        return False
    with torch.no_grad(), buffers_kept(model):
        return all(_close(forward_logits(model, take(inputs, positions), task), logits[positions])
                   for positions in probes)


@dataclass
class Probe:
    """A no-grad forward of some samples of a batch: its watch, its logits, which samples, and whether they differ."""

    watch: Watch
    logits: Tensor
    positions: list[int]
    informative: bool


def run_probe(model: Any, inputs: Inputs, params: Mapping[str, Tensor], expand: bool = True,
              task: Task = CLASSIFICATION) -> list[Probe]:
    """No-grad forwards of :func:`probe_positions`' probes of the batch, each under a :class:`Watch` (logits checked
    by ``task``)."""
    sets, informative = probe_positions(inputs)
    probes = []
    for positions in sets:
        watch = Watch(params, batch=len(positions), expand=expand)
        with torch.no_grad(), watch:
            logits = forward_logits(model, take(inputs, positions), task)
        probes.append(Probe(watch, logits, positions, informative))
    return probes


def proof_key(model: Any, inputs: Inputs, params: Mapping[str, Tensor], task: Task, expand: bool,
              watch: Watch) -> tuple[Any, ...]:
    """What the probe's evidence depends on: the model version (every parameter's and buffer's identity and
    in-place version counter, every module's mode), the selected parameters (they decide which calls are watched,
    and the evidence is kept per watched call), the task, the inputs' structure, shapes and dtypes, and the
    forward's signature (every torch function it called, with its arguments' shapes and plain values; a branch on
    the data changes it). Two batches with equal keys run the same computation on different values."""
    leaves, spec = tree_flatten(inputs)
    version: list[Any] = []
    for m in model.modules():  # one walk: modes, parameters and buffers
        version.append(m.training)
        version.extend((id(p), p._version, p.requires_grad) for p in m._parameters.values() if p is not None)
        version.extend((id(t), t._version) for t in m._buffers.values() if t is not None)
    selected = tuple((n, id(p)) for n, p in params.items())
    return (id(task), expand, str(spec), tuple(map(_signature, leaves)), tuple(version), selected,
            tuple(watch.trace))


@dataclass(frozen=True)
class ProbeEvidence:
    """What the probe forward showed on one batch: a problem of the whole forward (samples not independent, or
    not told apart), the problem of each covered call (``None``: its input rows are the samples'), by call index,
    whether the probe's logits differed from the batch's rows, and whether the evidence may stand for other batches
    with the same :func:`proof_key` (not when every sample of this one had the same inputs)."""

    forward: str | None
    sites: tuple[str | None, ...]
    logits_differ: bool = False
    conclusive: bool = True


def probe_evidence(watch: Watch, logits: Tensor, probes: Sequence[Probe] | None) -> ProbeEvidence:
    """Compare the probe forwards of some samples (``None`` for a batch of one) with the batch's forward."""
    if not probes:
        return ProbeEvidence(None, (None,) * len(watch.sites))
    b = logits.shape[0]
    differ = any(not _close(p.logits, logits[p.positions]) for p in probes)
    forward = None
    if differ:
        forward = "samples are not independent: the logits of some of the batch's samples alone differ from the batch's"
    elif not probes[0].informative:
        forward = "every sample of this batch has the same inputs, so no probe can tell their rows apart"
    sites = tuple(next((problem for p in probes if (problem := _probe_problem(site, b, p))), None)
                  for site in watch.sites)
    return ProbeEvidence(forward, sites, differ, probes[0].informative)


def prove(watch: Watch, logits: Tensor, params: Mapping[str, Tensor], evidence: ProbeEvidence,
          graph: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """``(covered, reasons)``: the path of each proven parameter (``"fast (op)"`` or ``"unused"``), and why
    each other parameter is not proven, from this batch's forward and the probe's ``evidence`` (taken on this
    batch, or on an earlier one with the same :func:`proof_key`). Sets ``site.wanted`` for the covered calls."""
    b = logits.shape[0]
    counts = consumers(logits, params) if graph else None
    covered: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for name in params:
        uses = watch.uses.get(name, [])
        if getattr(params[name], "_backward_hooks", None):
            reasons[name] = "has a gradient hook (the exact path runs it as autograd does)"
        elif not uses:
            if counts is not None and counts[name] > 0:
                reasons[name] = "consumed by an op the tracer cannot see (TorchScript, C++ extension, ...)"
            else:
                covered[name] = "unused"
        elif len(uses) > 1:
            reasons[name] = f"used {len(uses)} times in one forward: {', '.join(u for u, _ in uses)}"
        elif uses[0][1] is None:
            reasons[name] = f"used by {uses[0][0]}, which has no closed form"
    for site in watch.sites:
        problem = site.problem or evidence.forward or _site_problem(site, b) or evidence.sites[site.index]
        for role, name in site.names.items():
            if name in reasons or name in covered:
                continue
            if counts is not None and counts[name] > 1:
                reasons[name] = f"consumed by {counts[name]} autograd nodes: also by an op the tracer cannot see"
            elif problem:
                reasons[name] = problem
            else:
                covered[name] = f"fast ({site.call.op})"
                site.wanted[role] = name
    return covered, reasons


def _site_problem(site: Site, b: int) -> str | None:
    """What this batch shows wrong with a covered call: its input's dim 0 is not the batch, or it changed in place."""
    a, op = site.call.a, site.call.op
    rows = a.shape[0] if a.ndim else 0
    grouped = site.call.rule.grouped_rows and rows % b == 0 and rows > 0
    if rows != b and not grouped or site.out is None or site.out.ndim == 0 or site.out.shape[0] != rows:
        return f"{op} call {site.index}: dim 0 of its input {tuple(a.shape)} is not the batch of {b}"
    if a._version != site.version:
        return f"{op} call {site.index}: its input was modified in place after the call"
    return None


def _probe_problem(site: Site, b: int, probe: Probe) -> str | None:
    """Whether the probe's twin of a covered call took the same path and saw its samples' input rows."""
    a, op = site.call.a, site.call.op
    twins = probe.watch.sites
    twin = twins[site.index] if site.index < len(twins) else None
    if twin is None or twin.call.op != op or twin.names != site.names:
        return f"{op} call {site.index}: the forward of some of the samples took another path (data-dependent)"
    rows = a.shape[0] if a.ndim else 0
    if rows == 0 or rows % b:
        return None  # _site_problem reports it
    per = rows // b
    expected = a.reshape(b, per, *a.shape[1:])[probe.positions].reshape(-1, *a.shape[1:])
    if not _close(twin.call.a, expected):
        return (f"{op} call {site.index}: dim 0 of its input {tuple(a.shape)} is not the samples (a probe of "
                f"{len(probe.positions)} of them does not reproduce its rows; e.g. a sequence-first layout)")
    return None
