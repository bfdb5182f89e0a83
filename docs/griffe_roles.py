"""A griffe extension for the API reference: Sphinx roles in docstrings become code.

The docstrings are Google style but name other objects the Sphinx way (``:class:`~pkg.mod.Name```,
``:mod:`.app```). mkdocstrings renders those literally; this turns each into inline code showing the name as
Sphinx would (the last component after ``~``, the text as written otherwise). Loaded by ``mkdocs.yml``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring as inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_plain, obj.docstring.value)
