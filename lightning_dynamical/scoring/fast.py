"""Fast exact engine: one forward, one backward to the covered calls' outputs, closed forms on the way.

The forward runs under a :class:`~lightning_dynamical.scoring.trace.Watch`, which keeps the input of every
covered call (``F.linear``, ``conv2d``, ``F.batch_norm``, ...) that consumes a selected parameter and hooks
its output. One backward of the task's pseudo-label loss summed over the batch, restricted to those outputs
(``inputs=`` gradient edges, so no weight gradient is ever formed), hands each hook ``d = dL/d(output)``; the
hook turns ``(input, d)`` into ``||g_i||^2`` and ``g_i . G_S`` with :mod:`~lightning_dynamical.scoring.layers`
and drops ``d``, so peak memory stays close to a training step's.

Before the backward, :func:`~lightning_dynamical.scoring.trace.prove` checks every assumption the closed forms
make (single use by a covered call, batch rows on dim 0, independent samples, no in-place change): on this batch,
except the two-sample probe, whose evidence is remembered per :func:`~lightning_dynamical.scoring.trace.proof_key`
(model version, input shapes, the forward's signature). Parameters it cannot prove, and all parameters of a model
normalising with batch statistics, get their per-sample gradients from
:class:`~lightning_dynamical.scoring.exact.ExactGradients` instead. The proof
covers the model; the loss is covered by the task's own statement
(:attr:`~lightning_dynamical.tasks.base.Task.sums_over_samples`: the batch loss is the sum of per-sample
losses, each reading its own row of the logits); a task that does not state it is scored on the exact path.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamical.scoring.common import alone_pseudo_targets, uses_batch_statistics
from lightning_dynamical.scoring.engine import Engine, ParameterPath, phase, unproven_task
from lightning_dynamical.scoring.exact import ExactGradients, buffers_kept, failure_reason, unscorable
from lightning_dynamical.scoring.layers import Directions, gradient_statistics
from lightning_dynamical.scoring.trace import ProbeEvidence, Site, Watch, probe_evidence, proof_key, prove, run_probe
from lightning_dynamical.tasks.base import Task
from lightning_dynamical.tasks.batches import Inputs, batch_size, forward_logits
from lightning_dynamical.tasks.classification import CLASSIFICATION


class _Sums:
    """The gradient hook: adds each active site's statistics as its output gradient arrives."""

    def __init__(self, directions: Sequence[Mapping[str, Tensor]], chunk_size: int | None, batch: int) -> None:
        self.batch = batch
        self.directions = directions
        self.chunk_size = chunk_size
        self.sq: Tensor | None = None
        self.dots: Tensor | None = None

    def __call__(self, site: Site, d: Tensor) -> None:
        """Add the site's statistics, then drop its input (the backward frees it when no other node needs it)."""
        if not site.active:
            site.call.a = site.call.a.new_empty(0)
            return
        local = site.local(self.directions)
        mixed = torch.is_autocast_enabled(d.device.type)
        with torch.no_grad(), torch.autocast(d.device.type, enabled=False) if mixed else contextlib.nullcontext(), \
                phase(f"statistics/{site.call.op}"):
            s, t = _site_statistics(site, d, local, self.chunk_size, self.batch)
        site.call.a = site.call.a.new_empty(0)
        self.sq = s if self.sq is None else self.sq + s
        self.dots = t if self.dots is None else self.dots + t


def _site_statistics(site: Site, d: Tensor, directions: Directions, chunk_size: int | None,
                     batch: int) -> tuple[Tensor, Tensor]:
    """The rule's statistics, ``chunk_size`` samples at a time (bounds the rule's temporaries). Under mixed precision
    the input and output gradient are taken in the parameters' dtype (autocast runs the layer in a lower one)."""
    call, a = site.call, site.call.a.detach()
    dtype = next(iter(site.call.roles.values())).dtype
    a, d = (t if t.dtype == dtype or not t.is_floating_point() else t.to(dtype) for t in (a, d))
    if a.shape[0] != batch:  # several rows per sample, sample-major (proven by the trace)
        a = a.reshape(batch, -1, *a.shape[1:])
        d = d.reshape(batch, -1, *d.shape[1:])
    b = a.shape[0]
    step = chunk_size or b
    if b <= step:
        return call.rule.statistics(call.spec, a, d, site.wanted, directions)
    parts = [call.rule.statistics(call.spec, a[i: i + step], d[i: i + step], site.wanted, directions)
             for i in range(0, b, step)]
    return torch.cat([s for s, _ in parts]), torch.cat([t for _, t in parts])


#: Probe evidences an engine remembers (one per model version and batch signature in use; the pool's last,
#: smaller batch has its own).
PROOFS_KEPT = 8


class FastEngine(Engine):
    """Exact ``||g_i||^2`` and ``g_i . v`` at about the cost of a training step; see the module docstring.

    Args:
        chunk_size: samples per closed-form computation (bounds temporaries such as unfolded inputs), and
            per ``vmap`` call of the exact fallback.
    """

    name = "fast"

    def __init__(self, chunk_size: int | None = 32) -> None:
        super().__init__()
        self.exact = ExactGradients(chunk_size)
        self.chunk_size = chunk_size
        self._no_expand: set[int] = set()
        self._proofs: OrderedDict[tuple[Any, ...], tuple[weakref.ref[nn.Module], ProbeEvidence]] = OrderedDict()

    def _evidence(self, model: nn.Module, inputs: Inputs, params: Mapping[str, nn.Parameter], task: Task,
                  expand: bool, watch: Watch, logits: Tensor) -> ProbeEvidence:
        """The probe's evidence for this batch: remembered from an earlier batch with the same
        :func:`~lightning_dynamical.scoring.trace.proof_key` on the same model, else probed now."""
        key = proof_key(model, inputs, params, task, expand, watch)
        known = self._proofs.get(key)
        if known is not None and known[0]() is model:
            self._proofs.move_to_end(key)
            return known[1]
        with phase("probe"):
            probe = run_probe(model, inputs, params, expand, task) if batch_size(inputs) > 1 else None
            evidence = probe_evidence(watch, logits, probe)
        for one in probe or ():
            one.watch.release()
        if evidence.conclusive:
            self._proofs[key] = (weakref.ref(model), evidence)
            if len(self._proofs) > PROOFS_KEPT:
                self._proofs.popitem(last=False)
        return evidence

    def batch_statistics(
        self,
        model: nn.Module,
        inputs: Inputs,
        params: Mapping[str, nn.Parameter],
        directions: Sequence[Mapping[str, Tensor]],
        task: Task = CLASSIFICATION,
    ) -> tuple[Tensor, Tensor, Tensor]:
        b = batch_size(inputs)
        coupled = uses_batch_statistics(model)
        why_exact = unproven_task(task) or (
            "a BatchNorm normalises with batch statistics (train mode, or no running statistics)" if coupled else None)
        if why_exact:
            if coupled:
                y = alone_pseudo_targets(model, inputs, task)
            else:
                with torch.no_grad(), buffers_kept(model):
                    y = task.batch_pseudo_targets(forward_logits(model, inputs, task), inputs)
            return self._finish(model, inputs, y, params, directions, None, {}, dict.fromkeys(params, why_exact),
                                task)
        sums = _Sums(directions, self.chunk_size, b)
        expand = id(model) not in self._no_expand
        watch = Watch(params, sums, b, expand)
        try:
            with torch.enable_grad(), phase("forward"), watch:  # the range outside: its ops stay out of the trace
                logits = forward_logits(model, inputs, task)
        except Exception:
            watch.release()
            if not watch.expanded:
                raise
            self._no_expand.add(id(model))  # the model needs broadcast lookups as they were: never expand them
            return self.batch_statistics(model, inputs, params, directions, task)
        evidence = None if watch.unsound_expansion else self._evidence(model, inputs, params, task, expand, watch,
                                                                        logits)
        if evidence is None or evidence.logits_differ and watch.expanded:  # expanded lookups may have changed the
            watch.release()  # logits, or only which row each sample's gradient reaches: score without expanding
            self._no_expand.add(id(model))
            return self.batch_statistics(model, inputs, params, directions, task)
        y = (alone_pseudo_targets(model, inputs, task) if evidence.logits_differ  # samples coupled: each alone
             else task.batch_pseudo_targets(logits, inputs))
        with phase("prove"):
            covered, reasons = prove(watch, logits, params, evidence)
        watch.drop_outputs()
        edges = [s.edge for s in watch.sites if s.active and s.edge is not None]
        loss = task.loss(logits, y)
        if edges and loss.requires_grad:
            try:
                with phase("backward"):
                    torch.autograd.backward(loss, inputs=edges)
            except RuntimeError as err:
                reason = unscorable(err)
                if reason is not None:  # no other path would run this model's backward
                    watch.release()
                    raise reason from err
                why = f"the restricted backward failed: {failure_reason(err)}"
                reasons.update({n: why for n, p in covered.items() if p.startswith("fast")})
                covered = {n: p for n, p in covered.items() if not p.startswith("fast")}
                sums.sq = sums.dots = None
        watch.release()
        del logits, loss, edges, watch  # free the graph and saved activations before the fallback
        return self._finish(model, inputs, y, params, directions, sums, covered, reasons, task)

    def _finish(self, model: nn.Module, inputs: Inputs, y: Tensor, params: Mapping[str, nn.Parameter],
                directions: Sequence[Mapping[str, Tensor]], sums: _Sums | None, covered: Mapping[str, str],
                reasons: Mapping[str, str], task: Task) -> tuple[Tensor, Tensor, Tensor]:
        """Add the exact path's statistics for the unproven parameters and record every parameter's path."""
        b = batch_size(inputs)
        dtype = next(iter(params.values())).dtype
        device = y.device
        sq = sums.sq if sums is not None and sums.sq is not None else torch.zeros(b, dtype=dtype, device=device)
        dots = (sums.dots if sums is not None and sums.dots is not None
                else torch.zeros(b, len(directions), dtype=dtype, device=device))
        paths = {n: ParameterPath(n, p) for n, p in covered.items()}
        rest = {n: params[n] for n in params if n not in covered}
        if rest:
            with phase("exact"):
                grads, path, why = self.exact.gradients(model, inputs, y, rest, task)
            s, t = gradient_statistics(grads, directions)
            sq, dots = sq + s, dots + t
            for n in rest:
                paths[n] = ParameterPath(n, path, "; ".join(r for r in (reasons.get(n, ""), why) if r))
        self.record({n: paths[n] for n in params})
        return sq, dots, y
