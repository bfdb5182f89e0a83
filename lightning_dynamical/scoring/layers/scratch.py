"""Scratch memory the matmul forms reuse from call to call and batch to batch while a pool is scored.

A CPU's default allocator (glibc's) returns large freed blocks to the kernel and takes the page faults again on
their next use. The matmul forms' per-call temporaries (per-sample gradients, Gram matrices, the forward with
``G_S``'s weights) are large, and allocated and freed between the backward's own allocations: a BERT 2x128 pool
pass took 3,000-4,000 page faults per batch of 32, 2,300 of them in these temporaries, and 5-6 ms of system time (a
training step: 0-160 faults).
Inside :func:`reusing`, each temporary a rule takes with :func:`scratch` is a view of one buffer per slot, grown
to the largest request and freed when the block ends; elsewhere (another thread, such as the autograd engine's
device threads, or a rule called directly) :func:`scratch` allocates as usual.

The convolution forms do not use it: with their padded inputs, Gram matrices and output grids on scratch, the
CIFAR CNN scored at 0.60-0.67 of a training step's throughput against 0.70-0.79 without (three alternating runs;
the heap blocks the framework's own kernels then took were faulted in more often).

A slot's view is valid until the next :func:`scratch` of the same slot: each slot belongs to one step of one
function, and no tensor a rule returns is a view of it.

The directions do not change during a pool pass, so what a rule derives from them (cropped, transposed or
concatenated weights) is made once per pass with :func:`derived` instead of once per batch: cropping a 3x3 kernel
to its live taps copies in runs of one or two elements, 1.4 ms per batch for one 256->512 layer of a ResNet18 on a
CPU. A derived tensor is reused only for the same source memory (data pointer, shape, strides, dtype, device; the
cache holds the source, so no other tensor can take its memory) at the same in-place version.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence

import torch
from torch import Tensor


class Scratch:
    """Buffers by ``(slot, dtype, device)``, each as large as the largest request so far."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self._derived: dict[tuple[Hashable, ...], tuple[tuple[Tensor, ...], tuple[int, ...], Tensor]] = {}

    def take(self, slot: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """An uninitialised view of ``shape`` on the slot's buffer (grown first if too small)."""
        size = math.prod(shape)
        key = (slot, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[key] = like.new_empty(size)
        return buffer[:size].view(tuple(shape))

    def derive(self, slot: Hashable, sources: Sequence[Tensor], make: Callable[..., Tensor]) -> Tensor:
        """``make(*sources)``, remembered for ``slot`` and the sources' memory and in-place versions (not for
        inference tensors, which have no version)."""
        if any(t.is_inference() for t in sources):
            return make(*sources)
        key = (slot, *(_memory(t) for t in sources))
        versions = tuple(t._version for t in sources)
        known = self._derived.get(key)
        if known is not None and known[1] == versions:
            return known[2]
        value = make(*sources)
        self._derived[key] = (tuple(sources), versions, value)
        return value

    def nbytes(self) -> int:
        """Bytes held by all buffers and derived tensors."""
        held = [*self._buffers.values(), *(v for _, _, v in self._derived.values())]
        return sum(b.numel() * b.element_size() for b in held)


def _memory(t: Tensor) -> tuple[Hashable, ...]:
    """Where and how a tensor's elements lie: equal for two live tensors only if they read the same elements."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device


_LOCAL = threading.local()


@contextlib.contextmanager
def reusing(space: Scratch | None = None) -> Iterator[Scratch]:
    """Serve this thread's :func:`scratch` requests from ``space`` (a new one by default) inside the block."""
    space = Scratch() if space is None else space
    previous = getattr(_LOCAL, "space", None)
    _LOCAL.space = space
    try:
        yield space
    finally:
        _LOCAL.space = previous


def scratch(slot: str, shape: Sequence[int], like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device: a view of slot ``slot`` of the
    :class:`Scratch` this thread is :func:`reusing`, else a new tensor."""
    space = getattr(_LOCAL, "space", None)
    if space is None:
        return like.new_empty(tuple(shape))
    return space.take(slot, shape, like)


def derived(slot: Hashable, sources: Sequence[Tensor], make: Callable[..., Tensor]) -> Tensor:
    """``make(*sources)`` (computed from the sources only, with ``slot`` naming the computation and any other value
    it depends on), made once per :func:`reusing` block for the same sources, else every call. The sources must be
    the directions or views of them (or what :func:`derived` made of them): a fresh copy per batch would be a new
    entry per batch, kept to the end of the pass."""
    space = getattr(_LOCAL, "space", None)
    if space is None:
        return make(*sources)
    return space.derive(slot, sources, make)
