"""The one typed settings object and the on-disk layout it implies.

Read only at entry points (CLI, flows, service constructor); below them plain values are passed in.
Precedence: code defaults -> `.env` -> environment (`RERANKER_*`) -> CLI/flow parameters.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from reranker.engine import Engine

if TYPE_CHECKING:
    from reranker.engine import RayCluster
    from reranker.request_ids import RequestIds

PUBLIC_SALT = "reranker-default-salt"  # the salt of earlier releases, public in their code: refused


class SettingsError(ValueError):
    """A setting that cannot be used as given; entry points print the message and exit non-zero."""


# Every library of the stack phones home by default; users expect it off (and there is no network here).
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "FEAST_USAGE": "False",
    "DO_NOT_TRACK": "1",
    # OpenMP busy-waiting on 2 shared cores makes LightGBM 10-100x slower (STACK-NOTES).
    "OMP_WAIT_POLICY": "PASSIVE",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANKER_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="All state of the embedded default lives here.")
    feature_set: Path | None = Field(
        default=None, description="The feature set declaration (YAML); default <data_dir>/featureset.yaml."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Defaults to MLFLOW_TRACKING_URI, else SQLite under the data dir."
    )
    user_id_salt: str | None = Field(
        default=None,
        description="Salt of the user-id hash (and of served request ids); unset: a random salt kept in the data dir.",
    )
    dev_mode: bool = Field(default=False, description="Allow the public example salt (never in production).")
    auth: bool = Field(
        default=True, description="The stage asks every route but /livez and /readyz for an API key."
    )
    rate_per_key: float = Field(
        default=2_000,
        gt=0,
        description="Requests a second per API key and worker, unless the key sets its own.",
    )
    max_body_bytes: int = Field(
        default=4_000_000, ge=1_000, description="Largest request body the stage reads."
    )
    max_events_per_request: int = Field(
        default=100,
        ge=1,
        description="Interactions one served request id may receive (a replayed id is refused).",
    )
    interactions_max_age_days: float = Field(
        default=30, gt=0, description="Interactions must name a request served at most this long ago."
    )
    hash_user_ids: bool = Field(default=True, description="Store salted hashes of user ids, never raw ids.")
    lgbm_threads: int = Field(
        default=1,
        ge=1,
        description="LightGBM threads when serving (1 is fastest for 10-500 rows on 2 cores).",
    )
    explain_threads: int = Field(
        default=2,
        ge=1,
        description="LightGBM threads for SHAP of models too deep for the per-leaf tables (pred_contrib).",
    )
    train_threads: int = Field(
        default=2, ge=1, description="LightGBM threads when training (2 halve the MovieLens fit on 2 cores)."
    )
    ingest_chunk_rows: int = Field(default=250_000, ge=1_000)
    future_skew_seconds: int = Field(
        default=300, ge=0, description="Allowed clock skew for event timestamps."
    )
    seed: int = 7
    canary_share: float = Field(default=0.2, ge=0, le=1, description="Share of users the canary serves.")
    feast_redis: str | None = Field(
        default=None,
        description="Redis for Feast's online store (host:port[,db=N][,password=...]); unset: SQLite in the data dir.",
    )
    feast_registry: str | None = Field(
        default=None,
        description="SQL database for Feast's registry (SQLAlchemy URL, e.g. postgresql+psycopg://...); unset: a file.",
    )
    engine: Engine = Field(
        default="local",
        description="Where the offline work runs: local (DuckDB joins, LightGBM threads) or ray (Feast's Ray offline "
        "store and materialization engine, Ray Train for LightGBM).",
    )
    ray_address: str | None = Field(
        default=None,
        description="A Ray cluster to join (ray://host:10001 or host:6379); unset: start a local one.",
    )
    ray_num_cpus: int = Field(
        default=2, ge=1, description="CPUs of the local Ray cluster (Ray's default: all)."
    )
    ray_object_store_mb: int = Field(
        default=1024, ge=64, description="Shared memory of the local Ray cluster (Ray's default: 30% of RAM)."
    )
    ray_workers: int = Field(default=2, ge=1, description="Ray Train workers (LightGBM machines) per fit.")
    training_memory_gb: float = Field(
        default=8.0,
        ge=0,
        description="Memory budget of the training-set build: a larger one is refused before any work (0: none).",
    )
    user_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long serving reuses a user's online features (0: read every request).",
    )
    alias_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often serving re-reads MLflow aliases."
    )
    budget_ms: float = Field(default=50.0, gt=0, description="Scoring time budget before answering unranked.")
    store_timeout_ms: float = Field(
        default=20.0,
        gt=0,
        description="How long a user read may wait on the online store before falling back.",
    )
    store_breaker_seconds: float = Field(
        default=1.0,
        ge=0,
        description="After a failed online read, fall back at once this long, then probe again.",
    )
    workers: int = Field(
        default=2,
        ge=1,
        description="Serving worker processes (each loads its own models; one dying leaves the other).",
    )
    preload_models: list[str] = Field(default=["reranker"], description="Models serving loads at start-up.")
    opt_out_file: Path | None = Field(
        default=None, description="User ids (one a line) not to personalize for."
    )
    retrain_cron: str = Field(default="0 3 * * *", description="When the retrain deployment runs.")
    canary_cron: str = Field(default="0 * * * *", description="When the canary analysis deployment runs.")
    drift_cron: str = Field(default="30 2 * * *", description="When the drift check deployment runs.")
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Events, served lists and features older than this are removed (unset: kept).",
    )
    retention_cron: str = Field(default="15 1 * * *", description="When the retention deployment runs.")
    drift_recent_days: float = Field(default=7.0, gt=0, description="The recent window drift checks look at.")
    canary_min_lists: int = Field(
        default=500, ge=1, description="Served lists per variant before a decision."
    )
    canary_max_lists: int = Field(default=50_000, ge=1, description="No proven gain by then: roll back.")
    canary_max_loss: float = Field(
        default=0.0, ge=0, description="Promote when canary - champion click rate stays above -this."
    )
    canary_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Level of the canary - champion interval; for at most K analyses of one canary use 1 - 0.05/K.",
    )

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir.resolve())

    @property
    def feature_set_path(self) -> Path:
        return self.feature_set if self.feature_set is not None else self.layout.feature_set

    def ray_cluster(self) -> RayCluster | None:
        """The Ray cluster the offline work runs on, or None on the local engine."""
        if self.engine != "ray":
            return None
        from reranker.engine import RayCluster

        return RayCluster(self.ray_address, self.ray_num_cpus, self.ray_object_store_mb, self.ray_workers,
                          (self.data_dir / "ray").resolve())  # fmt: skip

    def user_key(self, user_id: str) -> str:
        """The stored form of a user id under these settings (hashed unless hashing is off)."""
        return self.user_hasher()(user_id)

    def user_hasher(self) -> Callable[[str], str]:
        """`user_key` as a plain function of the id, for a hot path (no settings read per call)."""
        from reranker.lake import user_key

        return partial(user_key, salt=self.salt() if self.hash_user_ids else None)

    def salt(self) -> str:
        """The user-id salt: the configured one (the public example salt only in dev mode), else the data dir's own
        random salt, created on first use (mode 600) and kept: changing it would orphan every stored user key."""
        if self.user_id_salt is not None:
            if self.user_id_salt == PUBLIC_SALT and not self.dev_mode:
                raise SettingsError(
                    f"RERANKER_USER_ID_SALT is the public example salt {PUBLIC_SALT!r}: anyone could compute user "
                    "keys. Unset it (a random salt is kept in the data dir) or set RERANKER_DEV_MODE=true for a demo."
                )
            return self.user_id_salt
        path = self.layout.salt
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:  # another process may have created it meanwhile: the first one wins
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def request_ids(self) -> RequestIds:
        from reranker.request_ids import RequestIds

        return RequestIds.from_salt(self.salt(), self.interactions_max_age_days * 86400)

    def opted_out_users(self) -> set[str]:
        """Stored keys of the users who opted out of personalization (the file holds raw ids, one a line)."""
        if self.opt_out_file is None or not self.opt_out_file.exists():
            return set()
        ids = [line.strip() for line in self.opt_out_file.read_text().splitlines() if line.strip()]
        return {self.user_key(u) for u in ids}

    def ingest_options(self) -> dict[str, Any]:
        """The keyword arguments of `expectations.ingest.ingest` these settings fix."""
        return {"salt": self.salt() if self.hash_user_ids else "", "hash_ids": self.hash_user_ids, "chunk_rows": self.ingest_chunk_rows,
                "future_skew_seconds": self.future_skew_seconds}  # fmt: skip

    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or self.layout.mlflow_uri


@dataclass(frozen=True)
class Layout:
    """Where each part of the loop keeps its state under the data directory."""

    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def raw(self) -> Path:
        """Dataset files as loaded (`reranker data load`), before ingestion."""
        return self.root / "raw"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def interactions(self) -> Path:
        return self.lake / "interactions"

    @property
    def documents(self) -> Path:
        return self.lake / "documents.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def ingest_log(self) -> Path:
        return self.lake / "_ingests"

    @property
    def staging(self) -> Path:
        return self.lake / "_staging"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def feature_set(self) -> Path:
        """The active feature set declaration, unless RERANKER_FEATURE_SET names another file."""
        return self.root / "featureset.yaml"

    @property
    def feature_tables(self) -> Path:
        return self.root / "features"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def online_push_lock(self) -> Path:
        """Held by every worker of the stage while a posted interaction updates the online counts."""
        return self.feast / "online-push.lock"

    @property
    def salt(self) -> Path:
        """The data dir's own user-id salt (when RERANKER_USER_ID_SALT is unset)."""
        return self.root / "secrets" / "user_id_salt"

    @property
    def keys(self) -> Path:
        """API keys of the stage (hashed)."""
        return self.root / "secrets" / "keys.json"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def served(self) -> Path:
        """The served-list log of the stage (one JSON line per response)."""
        return self.lake / "served"

    @property
    def landing(self) -> Path:
        """Events the stage landed (impressions of served lists, posted interactions), before ingestion."""
        return self.lake / "incoming"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"


def apply_runtime_env() -> None:
    """Entry points call this once: telemetry off, threads sane. Never at import."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def apply_prefect_env(layout: Layout) -> None:
    """Before Prefect is imported: its home (local API database) and persisted task results under the data dir, so
    flow history and cached results survive a restart. Variables already set (e.g. PREFECT_API_URL of a server, or
    PREFECT_HOME) win."""
    os.environ.setdefault("PREFECT_HOME", str(layout.prefect))
    # Prefect creates only the last level of its home: the temporary API would fail on a new data dir.
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(layout.prefect / "storage"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    # Prefect waits 20 s for its temporary API by default; its first start here (migrations, while this process
    # imports the task libraries on the other core) took 33-52 s on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
