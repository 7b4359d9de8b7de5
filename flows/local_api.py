"""Prefect's temporary local API, started while the process loads the libraries its tasks need.

Without PREFECT_API_URL, the first flow run of a process starts a temporary server (a uvicorn subprocess: ~10 s
here, most of it the server's own imports and migrations) and waits for it before anything else happens. Started
on a thread first, the same server (Prefect keeps one per process) comes up while this process imports the data
libraries (~10 s more), so the two waits overlap instead of adding up.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

# What the lifecycle tasks import anyway (the domain rooms import these lazily).
TASK_LIBRARIES = ("great_expectations", "feast", "feast.infra.offline_stores.duckdb", "mlflow", "lightgbm")


def start_temporary_api() -> Callable[[], None]:
    """Start the temporary server in the background unless an API URL is set; returns a wait that re-raises a
    failed start."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # handed to the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=start, name="prefect-temporary-api", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


def warm_start(libraries: tuple[str, ...] = TASK_LIBRARIES) -> None:
    """Start the temporary API and import the task libraries while it comes up; return once it is up."""
    wait = start_temporary_api()
    for name in libraries:
        importlib.import_module(name)
    wait()
