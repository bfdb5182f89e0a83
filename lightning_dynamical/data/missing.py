"""A data set that is not where ``root`` says: one message with the path, the expected layout and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_dynamical.errors import ConfigError


@contextmanager
def dataset_files(name: str, root: str | Path, layout: str) -> Iterator[None]:
    """Turn torchvision's "Dataset not found" for ``name`` under ``root`` into a :class:`ConfigError` naming the path.

    ``layout`` is where the files are expected, relative to ``root`` (e.g. ``"MNIST/raw/"``).
    """
    try:
        yield
    except RuntimeError as err:
        if "not found" not in str(err):
            raise
        where = Path(root)
        state = "does not exist" if not where.exists() else f"has no {name} files at {where / layout}"
        raise ConfigError(f"{name} not found: data root {str(root)!r} ({where.resolve()}) {state}; set root to the "
                          f"folder that holds {layout}, or download: true where the internet is reachable") from err
