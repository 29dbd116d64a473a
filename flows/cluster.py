"""Whether ``runner.kind: ray`` can start, found before the run in seconds: Ray importable, and a cluster
answering where ``runner.address`` points.

Without these checks ``ipet validate`` said ok, and ``ipet run`` failed inside the flow with Prefect's
traceback and exit 1: at once where Ray could not be imported, after Ray Client's 30 s of retries (two
minutes in all) where nothing answered at a ``ray://`` address; and ``auto`` with no cluster on this node
started a local Ray instead of joining one (prefect-ray passes ``auto`` as no address at all). Here no
Prefect is imported (``ipet validate`` does not start it).
"""

from __future__ import annotations

import importlib.util
import socket
from urllib.parse import urlsplit

from .config import RunnerConfig

CLIENT_PORT = 10001  # Ray Client's port when a ray:// address names none
PROBE_SECONDS = 5  # a host that drops packets answers nothing: Ray would retry for minutes


def ray_problem(runner: RunnerConfig) -> str | None:
    """Why a run on Ray could not start, naming the setting; None when it can (or with the local runner)."""
    if runner.kind != "ray":
        return None
    if importlib.util.find_spec("prefect_ray") is None:
        return "runner.kind: ray needs prefect-ray, which is not installed: pip install -e '.[ray]'"
    try:  # prefect-ray imports ray only when the run starts it: a missing or broken ray failed there
        import ray
    except ImportError as err:
        return f"runner.kind: ray needs Ray, which cannot be imported here ({err}): pip install -e '.[ray]'"
    # a Ray this process joined already is the one prefect-ray runs on, whatever the address says
    return None if ray.is_initialized() else _unreachable(runner.address)


def _unreachable(address: str | None) -> str | None:
    """Why nothing answers at the cluster ``address`` names (``RAY_ADDRESS`` or this node's ``ray start``
    for ``auto`` and null, as Ray reads them); None when something does, or when Ray starts its own."""
    from ray._private.services import canonicalize_bootstrap_address

    setting = f"runner.address: {address or 'null'}"
    if address and address.startswith("ray://"):
        parts = urlsplit(address)
        if not parts.hostname:
            return f"{setting}: no host in it; write ray://HOST:PORT (Ray Client's port, {CLIENT_PORT} by default)"
        host, port = parts.hostname, parts.port or CLIENT_PORT
    else:
        try:
            found = canonicalize_bootstrap_address(address)
        except ConnectionError:  # auto, and no cluster on this node nor RAY_ADDRESS
            return f"{setting}: no Ray cluster runs on this node (no `ray start` here, no RAY_ADDRESS); start " \
                   "one with `ray start --head`, or set runner.address: null to start a local Ray for the run"
        except ValueError as err:
            return f"{setting}: {err}; write auto, HOST:PORT, or ray://HOST:PORT"
        if found is None:  # null (or local), and nothing to join: Ray starts one for the run
            return None
        host, port = found.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        fix = ("start it, or set runner.address: null to start a local Ray for the run" if address else
               "Ray joins it as RAY_ADDRESS or an earlier `ray start` on this node names it; unset RAY_ADDRESS, "
               "or `ray stop`, to start a local Ray for the run")
        return f"{setting}: no Ray cluster answers at {host}:{port} ({err.strerror or err}); {fix}"
    return None
