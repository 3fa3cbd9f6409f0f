"""Fixtures that start real Gatehouse processes (tests/reliability/harness.py) to break."""

from __future__ import annotations

import pytest

from tests.reliability.harness import Gateway


@pytest.fixture
def make_gateway(tmp_path):
    """Factory: ``make_gateway(workers=1, upstream_timeout=2.0)`` → a started :class:`Gateway`.

    Every gateway started through it is stopped at the end of the test; on failure the
    tail of each process log is printed.
    """
    started: list[Gateway] = []

    def make(workers: int = 1, *, upstream_timeout: float = 2.0, name: str = "gw") -> Gateway:
        gw = Gateway(tmp_path / name, upstream_timeout=upstream_timeout)
        started.append(gw)
        return gw.start(workers)

    yield make
    for gw in started:
        for name, proc in gw.procs.items():
            if "crashed" in proc.log():
                print(f"--- {name} log (tail)\n{proc.log()[-3000:]}")
        gw.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One worker against a private Redis and the fault upstream, shared by a module."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"), upstream_timeout=1.0)
    try:
        gw.start(1)
    except Exception:
        gw.stop()
        raise
    yield gw
    gw.stop()
