"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and threads stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server, started once per test session (see ``tests/label_studio_server.py``)."""
    from tests.helpers import label_studio_server

    server = label_studio_server.start(tmp_path_factory.mktemp("label-studio"))
    _timings["Label Studio server start (s)"] = round(server.start_seconds, 1)
    yield server
    label_studio_server.stop(server)


_timings: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    for what, seconds in _timings.items():
        terminalreporter.write_line(f"{what}: {seconds}")
