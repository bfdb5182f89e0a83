"""Test-only crash injection: the process SIGKILLs itself at a named point of a file write.

``LIGHTNING_DYNAMICAL_KILL_AT=<point>:<n>`` kills the process the ``n``-th time (default 1) it reaches ``<point>``;
unset, :func:`kill_point` only reads the environment. The points are ``record-partial`` (half of a record file
written to its temporary file), ``record-written`` (temporary file complete, not yet renamed), ``record-renamed``,
``checkpoint-start``, ``checkpoint-partial`` (the temporary checkpoint cut to half its size), ``checkpoint-written``
and ``checkpoint-renamed``. The kill -9 test uses them to prove that a crash at any of these moments loses nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

ENV = "LIGHTNING_DYNAMICAL_KILL_AT"
_hits: Counter[str] = Counter()


def kill_point(name: str, before: Callable[[], None] | None = None) -> None:
    """SIGKILL this process here if ``LIGHTNING_DYNAMICAL_KILL_AT`` names this point and hit; ``before`` runs first."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(count or 1):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
