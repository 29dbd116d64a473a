"""The temporary Prefect server of an ``ipet`` command, owned by it.

Prefect's ephemeral mode starts the same uvicorn app, but in the terminal's process group (so a
Ctrl-C kills the server first and the run then retries a dead API for minutes) and with nothing
tying it to its parent (so ``kill -9`` of ``ipet`` leaves it running, adopted by pid 1). Here it
runs in its own session, asked to die with ``ipet`` (``PR_SET_PDEATHSIG``), and is stopped by
``ipet`` itself after the run, after an interrupt too. It starts while the config and data are
checked, so its start-up costs no time of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import httpx

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it (``ipet``'s main) dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerError(RuntimeError):
    """The temporary Prefect server did not start."""


class TemporaryServer:
    """A Prefect API on a free loopback port; ``start`` returns at once, ``ready`` waits for it."""

    ATTEMPTS = 3  # starts of a server that exits while starting

    def __init__(self) -> None:
        with socket.socket() as probe:  # a port free now; uvicorn binds it a moment later
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
               "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, start_new_session=True, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)

    def ready(self, timeout_s: float = 120) -> None:
        """Wait until the API answers. A server that exits while starting is started again on its port,
        up to ``ATTEMPTS`` times: every temporary server uses Prefect's one local SQLite database, and two
        ``ipet`` commands started at the same moment can find it locked by the other's start-up
        (uvicorn's exit code 3). ServerError, with what to do, when it never answers."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(1, self.ATTEMPTS + 1):
            if self._answers(deadline):
                return
            if self.process.poll() is None:
                raise ServerError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s; "
                                  "start one with `prefect server start` and set PREFECT_API_URL to use it")
            if attempt < self.ATTEMPTS:
                time.sleep(random.uniform(0.5, 2.0))  # apart from whoever else was starting
                self.start()
        raise ServerError(f"the temporary Prefect server exited while starting ({self.ATTEMPTS} times, last with "
                          f"code {self.process.returncode}); start one with `prefect server start` and set "
                          "PREFECT_API_URL to use it")

    def _answers(self, deadline: float) -> bool:
        """Whether the API answers before ``deadline``; False as soon as the process has exited."""
        with httpx.Client() as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                        return True
                time.sleep(0.1)
        return False

    def stop(self, timeout_s: float = 3) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def prefect_api() -> Iterator[TemporaryServer | None]:
    """The configured Prefect API (``PREFECT_API_URL``), else a temporary server for the block.
    Yields the server (None when one is configured) started, not yet ready: call ``ready()``
    before the first flow."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield None
        return
    server = TemporaryServer()
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
            _drain()
    finally:
        server.stop()


def _drain(timeout_s: float = 10) -> None:
    """Send the logs and events still queued while the server is up (they are sent at exit otherwise,
    to a server gone by then: "Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s, at_exit=False)
