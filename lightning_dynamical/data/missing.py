"""A data set that is not where ``root`` says, or is there but incomplete or corrupt: one message with the path,
the expected layout and the fix."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lightning_dynamical.errors import ConfigError


@contextmanager
def dataset_files(name: str, root: str | Path, layout: str, files: Sequence[str] = ()) -> Iterator[None]:
    """Turn torchvision's "Dataset not found or corrupted" for ``name`` under ``root`` into a :class:`ConfigError`
    naming the path, and saying which of the two it is.

    ``layout`` is where the files are expected, relative to ``root`` (e.g. ``"MNIST/raw/"``); ``files`` the paths
    relative to ``root`` whose presence means the data set is there (default: ``layout`` itself, a folder that
    counts when it holds anything).
    """
    try:
        yield
    except RuntimeError as err:
        if "not found" not in str(err):
            raise
        where = Path(root)
        present = [where / f for f in (files or [layout]) if _present(where / f)]
        if present:
            raise ConfigError(f"{name} under data root {str(root)!r} ({where.resolve()}) is incomplete or corrupt: "
                              f"{', '.join(str(p) for p in present)} exist but were refused ({err}): a file is "
                              f"missing, truncated or altered (torchvision checks CIFAR-10's and SVHN's MD5 sums); "
                              f"copy the original {layout} into {where} again") from err
        state = "does not exist" if not where.exists() else f"has no {name} files at {where / layout}"
        raise ConfigError(f"{name} not found: data root {str(root)!r} ({where.resolve()}) {state}; set root to the "
                          f"folder that holds {layout}, or download: true where the internet is reachable") from err


def _present(path: Path) -> bool:
    """A file, or a folder with anything in it."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))
