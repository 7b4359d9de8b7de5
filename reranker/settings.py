"""The one typed settings object and the on-disk layout it implies.

Read only at entry points (CLI, flows, service constructor); below them plain values are passed in.
Precedence: code defaults -> `.env` -> environment (`RERANKER_*`) -> CLI/flow parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    user_id_salt: str = Field(default="reranker-default-salt", description="Salt of the user-id hash.")
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
    user_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long serving reuses a user's online features (0: read every request).",
    )
    alias_poll_seconds: float = Field(
        default=10.0, gt=0, description="How often serving re-reads MLflow aliases."
    )
    budget_ms: float = Field(default=50.0, gt=0, description="Scoring time budget before answering unranked.")
    workers: int = Field(default=1, ge=1, description="Serving worker processes (each loads its own models).")
    preload_models: list[str] = Field(default=["reranker"], description="Models serving loads at start-up.")
    opt_out_file: Path | None = Field(
        default=None, description="User ids (one a line) not to personalize for."
    )
    retrain_cron: str = Field(default="0 3 * * *", description="When the retrain deployment runs.")
    canary_cron: str = Field(default="0 * * * *", description="When the canary analysis deployment runs.")
    drift_cron: str = Field(default="30 2 * * *", description="When the drift check deployment runs.")
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

    def user_key(self, user_id: str) -> str:
        """The stored form of a user id under these settings (hashed unless hashing is off)."""
        return self.user_hasher()(user_id)

    def user_hasher(self) -> Callable[[str], str]:
        """`user_key` as a plain function of the id, for a hot path (no settings read per call)."""
        from reranker.lake import user_key

        return partial(user_key, salt=self.user_id_salt if self.hash_user_ids else None)

    def opted_out_users(self) -> set[str]:
        """Stored keys of the users who opted out of personalization (the file holds raw ids, one a line)."""
        if self.opt_out_file is None or not self.opt_out_file.exists():
            return set()
        ids = [line.strip() for line in self.opt_out_file.read_text().splitlines() if line.strip()]
        return {self.user_key(u) for u in ids}

    def ingest_options(self) -> dict[str, Any]:
        """The keyword arguments of `expectations.ingest.ingest` these settings fix."""
        return {"salt": self.user_id_salt, "hash_ids": self.hash_user_ids, "chunk_rows": self.ingest_chunk_rows,
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
