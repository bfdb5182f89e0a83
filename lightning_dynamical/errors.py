"""The plugin's own validation error, and small checks that raise it with the argument named as the user wrote it."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Bad input the plugin refuses: an argument, a file or a data set, named with what was given and what is allowed.

    Raised before anything changed. The ``lightning-dynamical`` CLI prints it as one line (the traceback only with
    ``--debug`` or ``LIGHTNING_DYNAMICAL_DEBUG=1``); it is a ``ValueError``, so existing handlers still catch it.
    """


def check_positive_int(name: str, value: Any) -> None:
    """``value`` must be an int >= 1 (``bool`` is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int (>= 1), got {value!r}")


def check_optional_positive_int(name: str, value: Any) -> None:
    """``value`` must be ``None`` or an int >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be null or a positive int (>= 1), got {value!r}")


def check_positive_number(name: str, value: Any) -> None:
    """``value`` must be a number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


def check_int_between(name: str, value: Any, low: int, high: int, high_name: str) -> None:
    """``low <= value <= high`` for an int ``value``; ``high_name`` says where the upper bound comes from."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int from {low} to {high_name} ({high}), got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """``value`` must be a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """``value`` must be ``None`` or a number in (0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{name} must be null or a number in (0, 1], got {value!r}")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
