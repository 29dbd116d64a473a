"""The temporary Prefect server of an ``ipet`` command: started again when its start-up fails (two
commands started at once can find Prefect's one local SQLite database locked), one clear error when
it never starts. Real uvicorn processes; the failure is a real one: the server's port taken."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

from flows.server import ServerError, TemporaryServer


@pytest.fixture
def own_home(tmp_path: Path) -> Iterator[None]:
    """The servers' SQLite database in a folder of the test's own."""
    with temporary_settings(updates={PREFECT_HOME: tmp_path, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield


def taken(port: int) -> socket.socket:
    """A socket listening on ``port``, so a server started there exits at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_server_that_exits_while_starting_is_started_again(own_home):
    server = TemporaryServer()
    blocker = taken(server.port)
    server.start()
    first = server.process

    def free_the_port_once_it_failed() -> None:
        first.wait()
        blocker.close()

    threading.Thread(target=free_the_port_once_it_failed, daemon=True).start()
    try:
        server.ready(timeout_s=60)
        assert first.returncode != 0 and server.process is not first
        assert httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
    finally:
        server.stop()
        blocker.close()


def test_a_server_that_never_starts_is_one_error_saying_what_to_do(own_home):
    server = TemporaryServer()
    blocker = taken(server.port)
    try:
        server.start()
        with pytest.raises(ServerError, match=r"exited while starting \(3 times, last with code \d+\); start one "
                                              r"with `prefect server start` and set PREFECT_API_URL"):
            server.ready(timeout_s=60)
    finally:
        server.stop()
        blocker.close()
