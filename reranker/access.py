"""Who may call the stage: API keys with scopes and per-model access, kept hashed at rest.

A key is shown once, when it is created: `rrk_<key id>_<secret>` (the secret 32 random bytes, URL-safe). The key
file (`<data_dir>/keys.json`, written atomically, mode 600) keeps the id, a name, the scopes, the models it may use
(`*`: all), an optional rate limit and the SHA-256 of the secret (a secret of 256 random bits needs no slow hash);
revoking keeps the entry with its revocation time. The stage re-reads the file when it changes, so a created or
revoked key takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

PREFIX = "rrk_"


class Scope(StrEnum):
    rerank = "rerank"  # POST /rerank
    interactions = "interactions"  # POST /interactions
    metrics = "metrics"  # GET /metrics
    admin = "admin"  # everything, every other route included


class ApiKey(BaseModel):
    key_id: str
    name: str
    scopes: list[Scope]
    models: list[str] = Field(default_factory=lambda: ["*"])
    rate_per_second: float | None = Field(
        default=None, gt=0, description="Requests a second; None: the setting."
    )
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes

    def allows_model(self, model_id: str) -> bool:
        return "*" in self.models or model_id in self.models


class KeyFile(BaseModel):
    keys: list[ApiKey] = Field(default_factory=list)


class AccessError(ValueError):
    """A key operation the user asked for cannot be done (unknown id, bad scope): the CLI prints it."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a presented token, or None when it does not have the shape of one."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


class KeyStore:
    """The key file: read, verify, create, revoke."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> KeyFile:
        if not self.path.exists():
            return KeyFile()
        return KeyFile.model_validate_json(self.path.read_bytes())

    def _write(self, keys: KeyFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(keys.model_dump_json(indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def create(
        self,
        name: str,
        scopes: list[Scope],
        models: list[str] | None = None,
        rate_per_second: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (shown once; only its hash is kept)."""
        if not scopes:
            raise AccessError("a key needs at least one scope (rerank, interactions, metrics, admin)")
        keys = self.read()
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id=key_id, name=name, scopes=sorted(set(scopes)), models=models or ["*"],
                     rate_per_second=rate_per_second, secret_sha256=_digest(secret),
                     created_at=datetime.now(UTC))  # fmt: skip
        keys.keys.append(key)
        self._write(keys)
        return key, f"{PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        keys = self.read()
        for i, key in enumerate(keys.keys):
            if key.key_id == key_id:
                if key.active:
                    keys.keys[i] = key.model_copy(update={"revoked_at": datetime.now(UTC)})
                    self._write(keys)
                return keys.keys[i]
        raise AccessError(f"no key with id {key_id!r} (see `reranker keys list`)")


class KeyRing:
    """The active keys by id, for verifying tokens on the hot path (the file re-read when it changes)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    def refresh(self) -> None:
        try:
            st = self.store.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._keys = {k.key_id: k for k in self.store.read().keys if k.active}
            self._stamp = stamp

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, token: str) -> ApiKey | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = self._keys.get(parsed[0])
        if key is None or not hmac.compare_digest(key.secret_sha256, _digest(parsed[1])):
            return None
        return key


def describe(key: ApiKey) -> dict[str, str]:
    """One row of `reranker keys list` (never the hash)."""
    return {"key_id": key.key_id, "name": key.name, "scopes": ",".join(key.scopes), "models": ",".join(key.models),
            "rate_per_second": "-" if key.rate_per_second is None else f"{key.rate_per_second:g}",
            "created_at": f"{key.created_at:%Y-%m-%d %H:%M}",
            "revoked_at": "-" if key.revoked_at is None else f"{key.revoked_at:%Y-%m-%d %H:%M}"}  # fmt: skip
