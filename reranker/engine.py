"""The engine the offline work runs on: `local` (this process: DuckDB for Feast's point-in-time joins, LightGBM's
own threads) or `ray` (Feast's Ray offline store and materialization engine, Ray Train for LightGBM), chosen by
`RERANKER_ENGINE`. Ray is started capped (by default it takes every CPU and all memory), or joined at
`RERANKER_RAY_ADDRESS`."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Engine = Literal["local", "ray"]
# Every Ray worker installs our fix of Feast's Ray point-in-time join before it runs a task (feature_repo.ray_join),
# and runs optimized: Feast's typeguard instrumentation otherwise re-parses its sources in every worker (seconds
# each, for each of the many short-lived workers; see reranker.launch).
RUNTIME_ENV: dict[str, Any] = {"worker_process_setup_hook": "feature_repo.ray_join.install",
                               "env_vars": {"PYTHONOPTIMIZE": "1"}}  # fmt: skip


@dataclass(frozen=True)
class RayCluster:
    address: str | None = None  # None: a local cluster this process starts
    num_cpus: int = 2  # of a local cluster
    object_store_mb: int = 1024  # of a local cluster: Ray's shared memory for datasets in flight
    workers: int = 2  # Ray Train workers (LightGBM machines), one CPU each
    storage: Path | None = None  # Ray Train's run directory (checkpoints: the model at the end)

    def start(self) -> None:
        """Start (or join) the cluster once per process."""
        prepare_ray_process()
        import ray

        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                                   "configure_logging": True, "runtime_env": RUNTIME_ENV}  # fmt: skip
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=self.num_cpus, object_store_memory=self.object_store_mb * 2**20, **options)

    def cpu_per_worker(self) -> float:
        """Ray Train's CPU request per worker: on a local cluster the workers together leave one CPU free for the
        Ray Data tasks that feed them (taking every CPU, they would wait for their data forever); each LightGBM
        machine runs one thread either way."""
        if self.address:
            return 1.0
        return max(0.25, min(1.0, (self.num_cpus - 1) / self.workers))

    def feast_options(self) -> dict[str, Any]:
        """What Feast's `ray` offline store and `ray.engine` batch engine are configured with."""
        if self.address:
            return {"ray_address": self.address, "ray_conf": {"runtime_env": RUNTIME_ENV}}
        return {"ray_conf": {"num_cpus": self.num_cpus, "object_store_memory": self.object_store_mb * 2**20,
                             "include_dashboard": False, "runtime_env": RUNTIME_ENV}}  # fmt: skip


def prepare_ray_process() -> None:
    """Before Ray is first imported in a process: Ray re-runs a driver started by `uv run` through `uv run` in each
    worker, which resolves the project afresh (without the extras) and the workers die; they run this interpreter."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    # Feast's Ray store calls a Ray Data API Ray deprecates, once per view read: not the user's to act on
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"feast\.infra\.ray_initializer")


def stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
